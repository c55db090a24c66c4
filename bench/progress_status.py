"""`iwo-lite status` (the table and --json) with live progress: 10,000 finished specs (and 100
waiting, as bench/status_speed.py builds them) plus 4 running specs whose running attempts have a
progress row (turns, the tool in use, tokens, cost, last event), timed as whole processes.

Baseline in the same run: the same database with those 4 attempts' progress NULL (the same specs,
states and rows; only the progress is missing). Also `python -c pass`.

    python bench/progress_status.py [--specs 10000] [--waiting 100] [--running 4] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import time

from harness import BenchHome
from status_speed import populate, timed

from iwo_lite.times import iso_utc

ROLES = ("planner", "builder", "reviewer", "tester", "deployer", "docs")


def add_running(home: BenchHome, count: int) -> list[str]:
    """`count` specs running their builder (step 2), attempt 1 unfinished, no progress yet."""
    conn = sqlite3.connect(home.root / "iwo.sqlite")
    now = time.time()
    ids = []
    for index in range(count):
        spec_id = f"running-{index}"
        ids.append(spec_id)
        t = now - 300 + index
        conn.execute("INSERT INTO iwo_specs (id, title, state, role, step, created_at, updated_at)"
                     " VALUES (?,?,?,?,?,?,?)", (spec_id, f"Running spec {index}", "running", "builder", 2,
                                                  iso_utc(t), iso_utc(t + 60)))
        conn.execute("INSERT INTO iwo_steps (spec_id, step, role, started_at, finished_at, verdict, summary, handoff)"
                     " VALUES (?,?,?,?,?,?,?,?)", (spec_id, 1, "planner", iso_utc(t), iso_utc(t + 30), "done",
                                                   "planned", f"/h/specs/{spec_id}/handoffs/01-planner.md"))
        conn.execute("INSERT INTO iwo_steps (spec_id, step, role, started_at) VALUES (?,?,?,?)",
                     (spec_id, 2, "builder", iso_utc(t + 60)))
        conn.execute("INSERT INTO iwo_attempts (spec_id, step, attempt, role, run_dir, pid, started_at, finished_at,"
                     " exit_code, is_error, verdict, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                     (spec_id, 1, 1, "planner", f"/h/runs/{spec_id}", 2000, iso_utc(t), iso_utc(t + 30), 0, 0,
                      "done", 0.02))
        conn.execute("INSERT INTO iwo_attempts (spec_id, step, attempt, role, run_dir, pid, started_at)"
                     " VALUES (?,?,?,?,?,?,?)", (spec_id, 2, 1, "builder", f"/h/runs/{spec_id}/2", 2001,
                                                  iso_utc(t + 60)))
    conn.commit()
    conn.close()
    return ids


def set_progress(home: BenchHome, ids: list[str], on: bool) -> None:
    conn = sqlite3.connect(home.root / "iwo.sqlite")
    for index, spec_id in enumerate(ids):
        progress = {"turns": 7 + index, "tool": f"Bash: python3 -m pytest -q tests/test_{index}.py",
                    "tokens": 41_000 + 1000 * index, "cost_usd": 0.32 + index / 100,
                    "last_event_at": iso_utc(time.time() - 3)} if on else None
        conn.execute("UPDATE iwo_attempts SET progress = ? WHERE spec_id = ? AND step = 2 AND attempt = 1",
                     (json.dumps(progress) if progress else None, spec_id))
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=100)
    parser.add_argument("--running", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    home = BenchHome("progress", env={"COLUMNS": "200"})  # one line per spec in the table
    populate(home, args.specs, args.waiting)
    ids = add_running(home, args.running)
    iwo = [sys.executable, "-m", "iwo_lite"]
    cases = {"iwo-lite status": iwo + ["status"], "iwo-lite status --json": iwo + ["status", "--json"],
             f"iwo-lite status {ids[0]}": iwo + ["status", ids[0]]}
    base = timed([sys.executable, "-c", "pass"], home.env, args.runs)
    labels = (("no progress (baseline)", False), ("with progress", True))
    for label, on in labels:
        set_progress(home, ids, on)
        shown = json.loads(home.cli("status", "--json").stdout)
        assert sum(1 for spec in shown if spec["progress"]) == (len(ids) if on else 0), label
        assert ("turns ·" in home.cli("status").stdout) is on, label
    # interleaved (baseline, then with progress, each round), so drift on the machine hits both alike
    samples: dict[str, dict[str, list[float]]] = {label: {name: [] for name in cases} for label, _ in labels}
    for _ in range(args.runs):
        for label, on in labels:
            set_progress(home, ids, on)
            for name, argv in cases.items():
                samples[label][name].append(timed(argv, home.env, 1))
    results = {label: {name: statistics.median(values) for name, values in by_case.items()}
               for label, by_case in samples.items()}
    shutil.rmtree(home.root, ignore_errors=True)
    print(f"{args.specs} finished + {args.waiting} waiting + {args.running} running specs; median of {args.runs} "
          f"runs, whole processes (python -c pass: {base * 1000:.1f} ms)")
    print(f"  {'':34s} {'no progress (baseline)':>22s} {'with progress':>14s} {'ratio':>6s}")
    for name in cases:
        without, with_ = results["no progress (baseline)"][name], results["with progress"][name]
        print(f"  {name:34s} {without * 1000:19.1f} ms {with_ * 1000:11.1f} ms {with_ / without:6.2f}")


if __name__ == "__main__":
    main()
