"""The floor under the overhead per dispatch: what one DBOS step costs on SQLite, with nothing in it.

A dispatch is at least two DBOS steps (`prepare`, `dispatch`; a third, `commit`, in worktree
mode), each a checkpoint written to the same SQLite file before the workflow goes on. This
measures, in one process on a temporary file with the settings iwo-lite uses (DBOS's SQLite
engine, WAL): a workflow of N empty async steps (ms per step), and the same steps each also
writing one row of ours through aiosqlite (what our ledger adds per step).

Baseline in the same run: one raw SQLite commit (`BEGIN IMMEDIATE; INSERT; COMMIT`) in WAL on
the same directory — the cost of a durable write on this disk.

    python bench/step_floor.py [--steps 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path


def raw_commit_ms(folder: Path, rounds: int = 300) -> float:
    conn = sqlite3.connect(folder / "raw.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (i INTEGER)")
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(samples) * 1000


async def run(folder: Path, steps: int) -> tuple[float, float]:
    import aiosqlite
    from dbos import DBOS

    db = folder / "floor.sqlite"
    DBOS(config={"name": "step-floor", "system_database_url": f"sqlite:///{db}", "log_level": "WARNING"})
    ours = await aiosqlite.connect(folder / "ours.sqlite", isolation_level=None)
    await ours.execute("PRAGMA journal_mode=WAL")
    await ours.execute("CREATE TABLE rows (i INTEGER)")

    @DBOS.step()
    async def empty(i: int) -> int:
        return i

    @DBOS.step()
    async def with_row(i: int) -> int:
        await ours.execute("INSERT INTO rows VALUES (?)", (i,))
        return i

    @DBOS.workflow()
    async def flow(n: int, kind: str) -> int:
        step = empty if kind == "empty" else with_row
        for i in range(n):
            await step(i)
        return n

    DBOS.launch()
    try:
        await flow(20, "empty")  # warm up
        results = []
        for kind in ("empty", "row"):
            start = time.perf_counter()
            await flow(steps, kind)
            results.append((time.perf_counter() - start) / steps * 1000)
        return results[0], results[1]
    finally:
        await ours.close()
        DBOS.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iwo-step-floor-") as tmp:
        folder = Path(tmp)
        raw = raw_commit_ms(folder)
        empty, row = asyncio.run(run(folder, args.steps))
    print(f"one raw SQLite commit in WAL (baseline)   {raw:6.3f} ms")
    print(f"one empty DBOS step                       {empty:6.3f} ms   x{empty / raw:5.1f}")
    print(f"one DBOS step writing one row of ours     {row:6.3f} ms   x{row / raw:5.1f}")
    print(f"so two steps per dispatch cost at least   {2 * empty:6.3f} ms (three in worktree mode: {3 * empty:.3f} ms)")


if __name__ == "__main__":
    main()
