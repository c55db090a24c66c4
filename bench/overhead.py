"""Orchestration overhead per dispatch: what iwo-lite adds around each agent call.

Specs run one at a time through the whole loop with an instant agent (a shell script; see
throughput.py). For each spec:

    overhead per dispatch = (spec wall time - agent time) / dispatches

spec wall time: DBOS's own record of the workflow's steps (`operation_outputs`, ms), from the
start of its first step (`admit`) to the end of its last (`finish`). agent time: one detached
run of the agent as the daemon starts it (the reaper wrapper, iwo_lite/runs/reaper.py, its
run directory, the agent, the exit status written and renamed), measured in the same run by a
shell loop that does nothing else (file timestamps are too coarse, ~4 ms, to time one run).
The rest is iwo-lite: the prompt, DBOS step checkpoints, our ledger rows, starting the process
from asyncio, noticing its exit, reading the result, the handoff file.

Baseline in the same run: one raw SQLite commit (`BEGIN IMMEDIATE; INSERT; COMMIT`) on a file in
WAL mode with the settings DBOS's SQLite engine uses (synchronous left at its default, FULL;
busy_timeout 30 s; IMMEDIATE transactions), in the same temporary directory.

    python bench/overhead.py [--specs 30]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import instant_home, submit_many, write_instant_agent  # noqa: E402


def raw_commit_seconds(samples: int = 2000) -> tuple[float, str]:
    """Median seconds of one INSERT + COMMIT in WAL mode (DBOS's SQLite settings); and the sync mode."""
    folder = Path(tempfile.mkdtemp(prefix="iwo-bench-commit-"))
    conn = sqlite3.connect(folder / "raw.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, wf TEXT, fn INTEGER, output TEXT)")
    times = []
    for index in range(samples):
        begin = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (wf, fn, output) VALUES (?, ?, ?)", ("spec-x", index, '{"verdict": "done"}'))
        conn.execute("COMMIT")
        times.append(time.perf_counter() - begin)
    conn.close()
    return statistics.median(times), sync


def agent_run_seconds(runs: int = 300) -> float:
    """Seconds per detached run of the instant agent (the reaper wrapper + agent + exit file), from a shell loop."""
    import shlex

    from iwo_lite.runs.reaper import wrapper_argv

    root = Path(tempfile.mkdtemp(prefix="iwo-bench-agent-"))
    agent = write_instant_agent(root)
    wrapper = shlex.join(wrapper_argv([str(agent)]))
    loop = (f'i=0; while [ $i -lt {runs} ]; do d="{root}/run-$i"; mkdir "$d"; echo prompt > "$d/prompt.md"; '
            f'IWO_RUN_DIR="$d" IWO_ROLE=reviewer {wrapper}; i=$((i+1)); done')
    empty = f'i=0; while [ $i -lt {runs} ]; do d="{root}/empty-$i"; mkdir "$d"; echo prompt > "$d/prompt.md"; i=$((i+1)); done'
    timings = []
    for script in (loop, empty):
        begin = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", script], check=True, env=dict(os.environ))
        timings.append(time.perf_counter() - begin)
    if not (root / f"run-{runs - 1}" / "exit").exists():
        raise SystemExit("bench: the wrapper wrote no exit status")
    return (timings[0] - timings[1]) / runs  # minus making the run directories, which the daemon does too


def spec_figures(root: Path, spec_id: str) -> dict:
    conn = sqlite3.connect(f"file:{root / 'iwo.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        # DBOS keeps workflow_status times in whole seconds on Python 3.11 but step times in ms:
        # the spec runs from the start of its first step (admit) to the end of its last (finish).
        wait_until = time.time() + 5
        while True:
            started_ms, completed_ms, finished = conn.execute(
                "SELECT MIN(started_at_epoch_ms), MAX(completed_at_epoch_ms), SUM(function_name = 'finish')"
                " FROM operation_outputs WHERE workflow_uuid = ? AND function_name IN ('admit', 'finish')",
                (spec_id,)).fetchone()
            if finished or time.time() > wait_until:
                break
            time.sleep(0.01)
        dispatches = conn.execute("SELECT COUNT(*) FROM iwo_attempts WHERE spec_id = ?", (spec_id,)).fetchone()[0]
        in_steps = conn.execute(
            "SELECT SUM(completed_at_epoch_ms - started_at_epoch_ms) FROM operation_outputs"
            " WHERE workflow_uuid = ? AND function_name = 'dispatch'", (spec_id,)).fetchone()[0]
    finally:
        conn.close()
    return {"wall": (completed_ms - started_ms) / 1000, "dispatches": dispatches, "in_steps": (in_steps or 0) / 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=int, default=30, help="specs, run one after another")
    args = parser.parse_args()
    commit, sync = raw_commit_seconds()
    agent = agent_run_seconds()
    home, _ = instant_home("overhead", max_concurrent=1)
    home.start()
    figures = []
    try:
        home.wait(lambda: (home.root / "iwo.sqlite").exists(), what="database")
        time.sleep(2.0)  # let start-up and recovery settle
        for index in range(args.specs + 2):
            spec_id = submit_many(home, 1, prefix=f"o{index:03d}")[0]
            home.wait(lambda: home.states().get(spec_id) == "done", timeout=120, what=f"{spec_id} done")
            if index >= 2:  # the first two warm up caches and code paths
                figures.append(spec_figures(home.root, spec_id))
    finally:
        home.stop()
    if any(f["dispatches"] != 6 for f in figures):
        raise SystemExit("bench: a spec did not take exactly 6 dispatches")
    per_dispatch = sorted(f["wall"] / 6 - agent for f in figures)
    overhead = statistics.median(per_dispatch)
    p90 = per_dispatch[int(len(per_dispatch) * 0.9) - 1]
    wall = statistics.median(f["wall"] for f in figures)
    in_step = statistics.median(f["in_steps"] / 6 - agent for f in figures)
    print(f"overhead: {len(figures)} specs x 6 dispatches, one spec at a time, instant shell agent")
    print(f"baseline: one raw SQLite commit (WAL, synchronous={sync}, BEGIN IMMEDIATE): {commit * 1000:.3f} ms")
    print()
    print("| figure (median) | value | x raw commit |")
    print("|---|---|---|")
    print(f"| spec wall time, 6 dispatches (admit start to finish end) | {wall * 1000:.1f} ms | |")
    print(f"| agent time per dispatch (wrapper + instant agent, from a shell loop) | {agent * 1000:.2f} ms | "
          f"x{agent / commit:.0f} |")
    print(f"| **overhead per dispatch** (wall - agent time) / dispatches | **{overhead * 1000:.1f} ms** (p90 "
          f"{p90 * 1000:.1f}) | x{overhead / commit:.0f} |")
    print(f"| of which inside the dispatch step | {in_step * 1000:.1f} ms | x{in_step / commit:.0f} |")
    print(f"| of which between steps (workflow body, admit, finish) | {(overhead - in_step) * 1000:.1f} ms | "
          f"x{(overhead - in_step) / commit:.0f} |")
    print(f"\ngoal <= 10 ms per dispatch: {'met' if overhead <= 0.010 else 'NOT met'} ({overhead * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
