"""Throughput: dispatches per second through the whole loop with an instant agent, at
agent.max_concurrent 1, 4 and 16 (200 specs = 1,200 dispatches each).

The agent is a shell script that prints a fixed valid result for its role ($IWO_ROLE) — about
1-2 ms of work — so the figure is about iwo-lite, not the agent. The baseline, measured in the
same run at the same concurrency: the same agent started the way the daemon starts it (the
detached reaper wrapper (iwo_lite/runs/reaper.py), a run directory with prompt.md, stdout,
stderr, exit) by a bare thread pool — what launching the processes alone costs.

    python bench/throughput.py [--specs 200] [--levels 1,4,16]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BenchHome, cpu_seconds  # noqa: E402

# Prints Claude Code's JSON result with the role's passing verdict (no log, no extra process).
INSTANT_AGENT = r"""#!/bin/sh
case "$IWO_ROLE" in reviewer) v=approve ;; tester) v=pass ;; *) v=done ;; esac
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"session_id":"instant","total_cost_usd":0.001,"result":"```json\\n{\\"verdict\\": \\"%s\\", \\"summary\\": \\"instant\\"}\\n```"}\n' "$v"
"""


def write_instant_agent(folder: Path) -> Path:
    path = folder / "instant-agent.sh"
    path.write_text(INSTANT_AGENT)
    path.chmod(0o755)
    return path


def instant_home(label: str, max_concurrent: int, env: dict | None = None) -> tuple[BenchHome, Path]:
    """A bench home whose agent is the instant shell script."""
    home = BenchHome(label, env=env)
    agent = write_instant_agent(home.root)
    (home.root / "config.toml").write_text(
        f'workdir = "{home.root / "work"}"\n[agent]\ncommand = {json.dumps([str(agent)])}\n'
        f'max_concurrent = {max_concurrent}\ntimeout = "10m"\nsandbox = "off"\n[approvals]\nremind_every = ""\n')
    return home, agent


def submit_many(home: BenchHome, count: int, prefix: str = "s") -> list[str]:
    """Queue `count` specs through the real `submit` command, in this process (no interpreter per spec)."""
    from iwo_lite.cli import main as iwo_main

    ids = []
    for index in range(count):
        path = home.root / f"{prefix}-{index:04d}.md"
        path.write_text(f"# {prefix} {index}\nspec number {index}\n")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = iwo_main(["--home", str(home.root), "submit", str(path), "--id", f"{prefix}-{index:04d}"])
        if code != 0:
            raise SystemExit(f"bench: submit {path} exited {code}")
        ids.append(out.getvalue().strip().splitlines()[-1])
    return ids


def attempt_span(db: Path) -> tuple[int, float]:
    """(attempts, seconds from the first agent launched to the last one collected)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        count, first, last = conn.execute(
            "SELECT COUNT(*), MIN(started_at), MAX(finished_at) FROM iwo_attempts").fetchone()
    finally:
        conn.close()
    from iwo_lite.times import parse_utc

    return count, parse_utc(last) - parse_utc(first)


def measure_iwo(specs: int, max_concurrent: int) -> dict:
    home, _ = instant_home(f"throughput-{max_concurrent}", max_concurrent)
    ids = submit_many(home, specs)
    started = time.time()
    daemon = home.start()
    try:
        home.wait(lambda: any((home.root / "runs").iterdir()),
                  what="the first dispatch")
        cpu_before = cpu_seconds(daemon.pid)
        home.wait(lambda: sum(state == "done" for state in home.states().values()) == len(ids), timeout=1800,
                  what=f"{specs} specs done")
        wall = time.time() - started
        cpu = cpu_seconds(daemon.pid) - cpu_before
    finally:
        home.stop()
    attempts, span = attempt_span(home.root / "iwo.sqlite")
    if attempts != specs * 6:
        raise SystemExit(f"bench: expected {specs * 6} attempts, found {attempts}")
    return {"dispatches": attempts, "span": span, "rate": attempts / span, "wall": wall,
            "wall_rate": attempts / wall, "cpu_ms": cpu * 1000 / attempts}


def measure_raw(dispatches: int, concurrency: int) -> float:
    """Agent processes per second when only launched and waited for, the daemon's way."""
    from iwo_lite.runs.reaper import wrapper_argv

    root = Path(tempfile.mkdtemp(prefix="iwo-bench-raw-"))
    agent = write_instant_agent(root)
    roles = ("planner", "builder", "reviewer", "tester", "deployer", "docs")

    def one(index: int) -> None:
        run = root / f"run-{index:05d}"
        run.mkdir()
        (run / "prompt.md").write_text("prompt\n")
        env = dict(os.environ, IWO_ROLE=roles[index % 6], IWO_RUN_DIR=str(run), IWO_ATTEMPT="1")
        subprocess.run(wrapper_argv([str(agent)]), env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, check=True)
        if not (run / "exit").exists():
            raise SystemExit("bench: the raw run wrote no exit status")

    started = time.time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(dispatches)))
    return dispatches / (time.time() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=int, default=200)
    parser.add_argument("--levels", default="1,4,16", help="agent.max_concurrent values")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    print(f"throughput: {args.specs} specs ({args.specs * 6} dispatches) per level, instant shell agent")
    rows = []
    for level in levels:
        iwo = measure_iwo(args.specs, level)
        raw = measure_raw(args.specs * 6, level)
        rows.append((level, iwo, raw))
        print(f"max_concurrent {level:2d}: {iwo['rate']:6.1f} dispatches/s (first launch to last collect, "
              f"{iwo['span']:.1f}s; {iwo['wall_rate']:.1f}/s incl. daemon start; daemon CPU {iwo['cpu_ms']:.1f} ms "
              f"per dispatch) | baseline: the agent alone "
              f"{raw:6.1f} runs/s | x{iwo['rate'] / raw:.3f}", flush=True)
    print()
    print("| agent.max_concurrent | iwo-lite dispatches/s | incl. daemon start | daemon CPU per dispatch "
          "| baseline: agent runs alone/s | ratio |")
    print("|---|---|---|---|---|---|")
    for level, iwo, raw in rows:
        print(f"| {level} | {iwo['rate']:.1f} | {iwo['wall_rate']:.1f} | {iwo['cpu_ms']:.1f} ms | {raw:.1f} "
              f"| x{iwo['rate'] / raw:.3f} |")
    goal = next((iwo["rate"] for level, iwo, _ in rows if level == 4), None)
    if goal is not None:
        print(f"\ngoal >= 25 dispatches/s at max_concurrent 4: {'met' if goal >= 25 else 'NOT met'} ({goal:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
