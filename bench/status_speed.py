"""`iwo-lite status` at 10,000 finished specs (and 100 waiting), timed as whole processes.

Baselines in the same run: `python -c pass`, the `sqlite3` CLI counting the specs, and
`python -c 'import dbos'` (what status would pay if it imported DBOS).

    python bench/status_speed.py [--specs 10000] [--waiting 100] [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

from harness import BenchHome
from iwo_lite.times import iso_utc

ROLES = ("planner", "builder", "reviewer", "tester", "deployer", "docs")


def populate(home: BenchHome, finished: int, waiting: int) -> str:
    home.submit("seed")  # creates the database the way a user does
    conn = sqlite3.connect(home.root / "iwo.sqlite")
    base = time.time() - 86400 * 30
    specs, steps, attempts, gates = [], [], [], []
    for index in range(finished + waiting):
        spec_id = f"spec-{index:05d}"
        t = base + index * 60
        is_waiting = index >= finished
        state, role, last = ("waiting", "reviewer", 3) if is_waiting else ("done", "docs", 6)
        question = "Approve the new dependency?" if is_waiting else None
        deadline = iso_utc(time.time() + 3600) if is_waiting else None
        specs.append((spec_id, f"Spec number {index}", state, role, last, question, deadline,
                      f"{spec_id}#03" if is_waiting else None, iso_utc(t), iso_utc(t + 600)))
        for step in range(1, last + 1):
            start = iso_utc(t + step * 60)
            steps.append((spec_id, step, ROLES[step - 1], start, iso_utc(t + step * 60 + 30), "done", "summary",
                          f"/h/specs/{spec_id}/handoffs/{step:02d}-{ROLES[step - 1]}.md"))
            attempts.append((spec_id, step, 1, ROLES[step - 1], f"/h/runs/{spec_id}", 1000 + step, start,
                             iso_utc(t + step * 60 + 30), 0, 0, "done", 0.01))
        if is_waiting:
            gates.append((f"{spec_id}#03", spec_id, 3, "reviewer", "blocker", question, iso_utc(t), deadline))
    conn.executemany("INSERT INTO iwo_specs (id, title, state, role, step, question, deadline, gate_id, created_at,"
                     " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)", specs)
    conn.executemany("INSERT INTO iwo_steps (spec_id, step, role, started_at, finished_at, verdict, summary, handoff)"
                     " VALUES (?,?,?,?,?,?,?,?)", steps)
    conn.executemany("INSERT INTO iwo_attempts (spec_id, step, attempt, role, run_dir, pid, started_at, finished_at,"
                     " exit_code, is_error, verdict, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", attempts)
    conn.executemany("INSERT INTO iwo_gates (id, spec_id, step, role, reason, question, opened_at, deadline)"
                     " VALUES (?,?,?,?,?,?,?,?)", gates)
    conn.commit()
    conn.close()
    return f"spec-{finished + waiting - 1:05d}"


def timed(argv: list[str], env: dict, runs: int) -> float:
    subprocess.run(argv, env=env, capture_output=True, check=True)  # warm the page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    home = BenchHome("status")
    one = populate(home, args.specs, args.waiting)
    iwo = [sys.executable, "-m", "iwo_lite"]
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import dbos'": [sys.executable, "-c", "import dbos"],
        "iwo-lite status": iwo + ["status"],
        "iwo-lite status --json": iwo + ["status", "--json"],
        f"iwo-lite status {one}": iwo + ["status", one],
        f"iwo-lite status {one} --json": iwo + ["status", one, "--json"],
    }
    if shutil.which("sqlite3"):
        cases["sqlite3 count(*)"] = ["sqlite3", str(home.root / "iwo.sqlite"), "SELECT COUNT(*) FROM iwo_specs"]
    results = {name: timed(argv, home.env, args.runs) for name, argv in cases.items()}
    base = results["python -c pass"]
    print(f"{args.specs} finished + {args.waiting} waiting specs; median of {args.runs} runs, whole processes")
    for name, seconds in results.items():
        print(f"  {name:40s} {seconds * 1000:7.1f} ms   x{seconds / base:5.1f} of python -c pass")


if __name__ == "__main__":
    main()
