"""The Codex agent kind, measured with the real `codex` (IWO_TEST_CODEX, or the checkout's .ci
install) against tests/fake_openai.py:

1. requests and seconds per failure kind, with Codex's default retries (the binary run
   directly, as the dispatcher runs it);
2. what resuming a thread saves: tokens asked of the API to finish a 3-turn builder run that a
   reboot killed during its third request (daemon and the agent's whole process tree at once),
   continued by iwo-lite with `codex exec ... resume <thread>`, against the same run restarted
   from scratch (the baseline, same run: the thread's rollout file is removed before the
   restart, so iwo-lite starts Codex afresh with the prompt).

Tokens: input = the request body's bytes / 4 (the whole conversation, instructions and tools,
as the API bills it), output = the fake's scripted output_tokens per answered request.

    python bench/codex.py [--output 20000] [--answer-tokens 400] [--skip-failures]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import fake_openai as fo  # noqa: E402
from conftest import kill_all_at_once, processes, wait_for  # noqa: E402
from real_codex import codex_path, new_codex_home, offline_env, remove_codex_home, run_codex  # noqa: E402
from test_codex_agent_real import CodexHome, codex_loop, verdict  # noqa: E402

from iwo_lite.agents.codex import SCHEMA_FILE, CodexAgent  # noqa: E402

FAILURES = {
    "429 without retry-after": fo.error(429),
    "429 with retry-after: 1": fo.error(429, headers={"retry-after": "1"}),
    "usage limit": fo.usage_limit(3600),
    "500": fo.error(500),
    "401": fo.error(401),
}


def failures(codex: str, scratch: Path) -> None:
    print("| failure | requests | exit | seconds | class |\n|---|---|---|---|---|")
    repo = scratch / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    agent = CodexAgent(command=(codex,))
    run_dir = scratch / "run"
    run_dir.mkdir()
    run_dir.joinpath(SCHEMA_FILE).write_text(agent.files("builder")[SCHEMA_FILE])
    argv = agent.argv("builder", run_dir=run_dir)
    for name, action in FAILURES.items():
        with fo.FakeOpenAI({"default": action}) as fake:
            home = new_codex_home(fake.url)
            try:
                env = offline_env(home)
                run = run_codex(argv[0], argv[1:], env=env, cwd=repo, timeout=300)
                kind = agent.parse("builder", run.stdout, run.code, run.stderr, env=env).error_class
                print(f"| {name} | {len(fake.responses_requests())} | {run.code} | {run.seconds:.1f} | `{kind}` |")
            finally:
                remove_codex_home(home)


def builder_rules(output: int, answer_tokens: int) -> list[dict]:
    usage = {"output_tokens": answer_tokens}
    lines = max(1, output // 60)
    listing = f"python3 -c \"[print(f'line {{n:05d}} ' + 'x' * 48) for n in range({lines})]\""
    return [
        {"role": "builder", "turn": 0, "calls": [fo.shell(listing)], "usage": usage},
        {"role": "builder", "turn": 1, "calls": [fo.shell(listing.replace("line", "test"))], "usage": usage},
        {"id": "hang", "role": "builder", "turn": 2, "hang": "start", "times": 1},
        {"role": "builder", "min_turn": 2, "usage": usage, "text": json.dumps(verdict("builder", "built it"))},
    ]


def tokens(request: dict, answer_tokens: int) -> int:
    body = len(json.dumps(request["body"], separators=(",", ":")).encode()) // 4
    return body + (answer_tokens if request["action"] != "hang" else 0)


def one(codex: str, scratch: Path, *, resume: bool, output: int, answer_tokens: int) -> dict:
    home = CodexHome(scratch / ("resumed" if resume else "restarted"), "claude", codex)
    try:
        home.codex_script(codex_loop({"builder": builder_rules(output, answer_tokens)}))
        spec_id = home.submit(spec_id="bench")
        daemon = home.start()
        wait_for(lambda: any(r["role"] == "builder" and r["turn"] == 2 for r in home.codex_requests()), 120,
                 "the builder's third request")
        run = home.run_dir(spec_id, 2, "builder", 1)
        thread = json.loads(run.joinpath("stdout").read_text().splitlines()[0])["thread_id"]
        tree = processes(env=f"IWO_RUN_DIR={run}")
        kill_all_at_once([daemon.pid] + tree)
        daemon.proc.wait(timeout=10)
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in tree), 30, "the tree gone")
        killed_at = time.time()
        if not resume:
            for rollout in (home.codex_home / "sessions").glob(f"*/*/*/rollout-*-{thread}.jsonl"):
                rollout.unlink()
        home.start()
        home.wait_state(spec_id, "done", "waiting", "failed", timeout=180)
        assert home.spec(spec_id)["state"] == "done", home.daemon_logs()
        builder = home.codex_requests("builder")
        after = [r for r in builder if r["time"] > killed_at]
        return {"after": (len(after), sum(tokens(r, answer_tokens) for r in after)),
                "whole": sum(tokens(r, answer_tokens) for r in builder),
                "resumed_from": home.attempts(spec_id, 2)[-1]["resumed_from"]}
    finally:
        home.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=int, default=20000, help="bytes each of the two commands prints")
    parser.add_argument("--answer-tokens", type=int, default=400)
    parser.add_argument("--skip-failures", action="store_true")
    args = parser.parse_args()
    codex = codex_path()
    if not codex:
        print("no codex: run `eval \"$(bash .ci/codex.sh)\"`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="iwo-bench-codex-") as scratch:
        scratch = Path(scratch)
        if not args.skip_failures:
            failures(codex, scratch)
        restarted = one(codex, scratch, resume=False, output=args.output, answer_tokens=args.answer_tokens)
        resumed = one(codex, scratch, resume=True, output=args.output, answer_tokens=args.answer_tokens)
    assert restarted["resumed_from"] is None and resumed["resumed_from"], (restarted, resumed)
    base = restarted["after"][1]
    print("\n| after the kill | requests | tokens | ratio |\n|---|---|---|---|")
    print(f"| restarted from scratch (baseline) | {restarted['after'][0]} | {base:,} | x1.00 |")
    print(f"| **resumed** (`codex exec resume`) | {resumed['after'][0]} | {resumed['after'][1]:,} | "
          f"**x{resumed['after'][1] / base:.2f}** |")
    print(f"| whole dispatch, resumed vs restarted | | {resumed['whole']:,} vs {restarted['whole']:,} | "
          f"x{resumed['whole'] / restarted['whole']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
