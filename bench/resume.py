"""What a resumed session saves: tokens asked of the API to finish a 3-turn Claude Code run that a
reboot killed after its second turn, continued by iwo-lite (`--resume --fork-session`), against
the same run restarted from scratch (the baseline, in the same run: the session's transcript is
removed before the restart, so iwo-lite starts the CLI again with a fresh session and the prompt).

The real daemon and the real `claude` (IWO_TEST_CLAUDE, or the checkout's .ci install) against
tests/fake_anthropic.py. The builder's turns: a Bash tool printing `--output` bytes, a second one,
then its verdict. The kill: the daemon and the agent's whole process tree at once (SIGSTOP, then
SIGKILL) while the third request is in flight, after turn 2's tool result is in the transcript.

Tokens are counted from what the CLI sent: input = the request body's bytes / 4 (the rule of
tests/fake_anthropic.py's count_tokens; the body is the whole conversation, the system prompt
and the tool definitions, as the API bills it), output = the fake's scripted `output_tokens` for
each answered request. The fake's own `usage` numbers are not used: they do not depend on the request.

    python bench/resume.py [--output 20000] [--answer-tokens 400]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import fake_anthropic as fa
from conftest import RealClaudeHome, kill_all_at_once, loop_rules, processes, wait_for
from real_claude import claude_path

SPEC = "# Add a report command\n" + "".join(
    f"- Requirement {n}: the report lists item {n} with its owner, its state and the date it changed.\n"
    for n in range(1, 41))


def builder_rules(output: int, answer_tokens: int) -> list[dict]:
    usage = {"output_tokens": answer_tokens}
    lines = max(1, output // 60)
    listing = f"python3 -c \"[print(f'line {{n:05d}} ' + 'x' * 48) for n in range({lines})]\""
    return [
        {"role": "builder", "turn": 0, "tool_uses": [fa.bash(listing, "list what is there")], "usage": usage},
        {"role": "builder", "turn": 1, "tool_uses": [fa.bash(listing.replace("line", "test"), "run the tests")],
         "usage": usage},
        {"id": "hang", "role": "builder", "turn": 2, "hang": "start", "times": 1},
        {"role": "builder", "min_turn": 2, "usage": usage,
         "tool_uses": [fa.structured_output({"verdict": "done", "summary": "built the report command"})]},
    ]


def tokens(request: dict, answer_tokens: int) -> tuple[int, int]:
    body = len(json.dumps(request["body"], separators=(",", ":")).encode())
    return body // 4, (answer_tokens if request["action"] != "hang" else 0)


def one_run(claude: str, base: Path, *, restart: bool, output: int, answer_tokens: int) -> dict:
    home = RealClaudeHome(base / ("restarted" if restart else "resumed"), claude)
    try:
        home.script(builder_rules(output, answer_tokens) + loop_rules({"builder": []}))
        spec_id = "bench"
        spec = home.root / "spec.md"
        spec.write_text(SPEC)
        home.submit(spec, spec_id)
        daemon = home.start()
        wait_for(lambda: any(r["role"] == "builder" and r["turn"] == 2 for r in home.requests()), 120,
                 "the builder's third request")
        session = home.attempts(spec_id, 2)[0]["session_id"]
        transcript = home.transcript(spec_id, session)
        wait_for(lambda: transcript.exists() and transcript.read_text().count('"tool_result"') >= 2, 30,
                 "turn 2's tool result in the transcript")
        run = home.run_dir(spec_id, 2, "builder", 1)
        tree = processes(env=f"IWO_RUN_DIR={run}")
        kill_all_at_once([daemon.pid] + tree)
        daemon.proc.wait(timeout=10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in tree), 30, "the run's processes reaped")
        killed_at = time.time()
        if restart:  # the baseline: no session to resume, so iwo-lite starts the call again from its prompt
            transcript.unlink()
        home.start()
        home.wait_state(spec_id, "done", "waiting", "failed", timeout=180)
        assert home.state(spec_id) == "done", home.daemon_logs()
        second = home.attempts(spec_id, 2)[1]
        assert bool(second["resumed_from"]) is not restart, second
        finished = next(s for s in home.spec(spec_id)["steps"] if s["step"] == 2)["finished_at"]
        builder = home.requests("builder")
        after = [r for r in builder if r["time"] > killed_at]
        count = lambda requests: [sum(t) for t in zip(*(tokens(r, answer_tokens) for r in requests))] or [0, 0]
        from iwo_lite.times import parse_utc

        return {"requests_after": len(after), "after": count(after), "all": count(builder),
                "requests_all": len(builder), "seconds": parse_utc(finished) - killed_at}
    finally:
        home.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=int, default=20_000, help="bytes each of the two Bash tools prints")
    parser.add_argument("--answer-tokens", type=int, default=400, help="output tokens of each answer")
    args = parser.parse_args()
    claude = claude_path()
    if not claude or not Path(claude).exists():
        raise SystemExit("bench: the real Claude Code CLI is needed: eval \"$(bash .ci/claude.sh)\"")
    base = Path(tempfile.mkdtemp(prefix="iwo-bench-resume-"))
    try:
        resumed = one_run(claude, base, restart=False, output=args.output, answer_tokens=args.answer_tokens)
        restarted = one_run(claude, base, restart=True, output=args.output, answer_tokens=args.answer_tokens)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"a 3-turn builder run (two Bash tools printing {args.output} bytes each, {args.answer_tokens} output "
          f"tokens an answer) killed with the daemon after turn 2, then continued by iwo-lite")
    print("tokens = request body bytes / 4 (input) + scripted output tokens of each answer")
    print(f"  {'after the kill':44s} {'requests':>8s} {'input':>8s} {'output':>7s} {'total':>8s} {'to finish':>9s}")
    rows = (("resumed (--resume --fork-session)", resumed), ("restarted, fresh session (baseline)", restarted))
    for name, row in rows:
        print(f"  {name:44s} {row['requests_after']:8d} {row['after'][0]:8d} {row['after'][1]:7d} "
              f"{sum(row['after']):8d} {row['seconds']:8.1f}s")
    print(f"  {'the whole builder dispatch (before the kill too)':44s}")
    for name, row in rows:
        print(f"  {name:44s} {row['requests_all']:8d} {row['all'][0]:8d} {row['all'][1]:7d} {sum(row['all']):8d}")
    ratio = sum(resumed["after"]) / sum(restarted["after"])
    whole = sum(resumed["all"]) / sum(restarted["all"])
    print(f"  resumed / restarted: x{ratio:.2f} of the tokens after the kill, x{whole:.2f} of the whole dispatch")


if __name__ == "__main__":
    main()
