"""Recovery time: from restarting the daemon after a kill -9 in the middle of a spec to the first
resumed dispatch.

Each round: a fresh home, one spec; the planner's agent runs 1 s; while it runs the daemon is
stopped (SIGSTOP) so it never sees the agent finish, then killed -9 once the agent's exit status
is on disk. The clock starts when the new `iwo-lite run` process is spawned (interpreter start
included) and stops at the next agent start: DBOS relaunched, the workflow recovered, the
planner's finished run collected (not re-run), the builder launched. Two stops are reported:
the daemon launching the builder (`iwo_attempts.started_at`) and the fake agent's own "start"
line (that adds the fake agent's ~40-50 ms Python start-up).

Baselines in the same run: `python -c 'import dbos'` and `python -c pass`, whole processes.

    python bench/recovery.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BenchHome, summary  # noqa: E402  (puts tests/ on sys.path)
import fake_claude  # noqa: E402


def process_seconds(code: str, env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def builder_launched(home: BenchHome, spec: str) -> float | None:
    from iwo_lite.times import parse_utc

    conn = sqlite3.connect(f"file:{home.root / 'iwo.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT started_at FROM iwo_attempts WHERE spec_id = ? AND role = 'builder'",
                           (spec,)).fetchone()
    finally:
        conn.close()
    return parse_utc(row[0]) if row else None


def one_round(index: int) -> tuple[float, float, int]:
    home = BenchHome(f"recovery-{index}")
    home.scenario({"roles": {"planner": [{"sleep": 1.0}]}})
    spec = home.submit("rec")
    daemon = home.start()
    try:
        home.wait(lambda: home.first_start(spec, "planner"), what="planner started")
        os.kill(daemon.pid, signal.SIGSTOP)  # it must not see the agent finish
        exit_file = home.root / "runs" / spec / "01-planner" / "attempt-1" / "exit"
        home.wait(exit_file.exists, what="planner exit status")
        daemon.kill()
        daemon.wait()
        restarted = time.time()
        home.start()
        agent_start = home.wait(lambda: home.first_start(spec, "builder"), timeout=60, what="builder started")
        launched = home.wait(lambda: builder_launched(home, spec), timeout=30, what="builder recorded")
        planners = sum(1 for line in fake_claude.read_log(home.log)
                       if line["event"] == "start" and line["role"] == "planner")
        return launched - restarted, agent_start - restarted, planners
    finally:
        home.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    process_seconds("import dbos", env, 2)  # warm the page cache
    import_dbos = process_seconds("import dbos", env, 10)
    bare = process_seconds("pass", env, 10)
    launched, agent = [], []
    for index in range(args.rounds):
        to_launch, to_agent, planners = one_round(index)
        if planners != 1:
            raise SystemExit(f"bench: round {index}: the planner ran {planners} times after the restart")
        launched.append(to_launch)
        agent.append(to_agent)
        print(f"round {index + 1:2d}: builder launched {to_launch * 1000:.0f} ms, fake agent started "
              f"{to_agent * 1000:.0f} ms after the restart", flush=True)
    lf, af = summary(launched), summary(agent)
    print()
    print(f"recovery: {args.rounds} rounds, kill -9 mid-spec, restart to the first resumed dispatch")
    print("| measure | median | p90 | max | x `import dbos` |")
    print("|---|---|---|---|---|")
    print(f"| `python -c pass` (baseline) | {bare * 1000:.0f} ms | | | x{bare / import_dbos:.2f} |")
    print(f"| `python -c 'import dbos'` (baseline) | {import_dbos * 1000:.0f} ms | | | x1.00 |")
    print(f"| restart -> builder launched by the daemon | **{lf['median'] * 1000:.0f} ms** | {lf['p90'] * 1000:.0f} ms "
          f"| {lf['max'] * 1000:.0f} ms | x{lf['median'] / import_dbos:.2f} |")
    print(f"| restart -> fake agent's start line | {af['median'] * 1000:.0f} ms | {af['p90'] * 1000:.0f} ms "
          f"| {af['max'] * 1000:.0f} ms | x{af['median'] / import_dbos:.2f} |")
    print(f"\ngoal <= 2 s incl. interpreter start: {'met' if af['median'] <= 2.0 else 'NOT met'} "
          f"({af['median']:.2f} s to the agent's start line)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
