"""The cost of the unixepoch('subsec') stand-in (store/sqlite_compat.py) on a SQLite < 3.42.

    env -u PYTHONDONTWRITEBYTECODE .venv-3.12/bin/python bench/sqlite_compat.py

Prints, each with its baseline measured in the same run:
- opening a connection to a WAL file the way store.sqlite does, with the stand-in vs without it
  ($IWO_SQLITE_UNIXEPOCH=off);
- one `SELECT CAST(unixepoch('subsec') * 1000 AS BIGINT)` (DBOS's `_now_ms_sql` on Python >= 3.12)
  through the stand-in vs `SELECT CAST(strftime('%s','now') * 1000 AS BIGINT)` (DBOS's on 3.11,
  built in);
- one committed INSERT into a table whose NOT NULL column DEFAULTs to `unixepoch('subsec') * 1000`
  (DBOS's tables on 3.12+) vs the same table DEFAULTing to `strftime('%s','now') * 1000`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iwo_lite.store import sqlite as store_sqlite  # noqa: E402
from iwo_lite.store import sqlite_compat  # noqa: E402


def per_call(fn, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def compare(a, b, n: int, rounds: int = 10) -> tuple[float, float]:
    """The best per-call time of each, measured in alternating rounds (load hits both alike)."""
    best_a = best_b = float("inf")
    for _ in range(rounds):
        best_a = min(best_a, per_call(a, n, 1))
        best_b = min(best_b, per_call(b, n, 1))
    return best_a, best_b


def main() -> None:
    if not sqlite_compat.stand_in_needed():
        raise SystemExit(f"SQLite {sqlite3.sqlite_version} has 'subsec': the stand-in is never installed")
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "iwo.sqlite"
        store_sqlite.create(db)

        def open_close():
            store_sqlite.connect(db).close()

        def open_close_without():
            os.environ[sqlite_compat.KNOB] = "off"
            try:
                open_close()
            finally:
                del os.environ[sqlite_compat.KNOB]

        with_it, without = compare(open_close, open_close_without, 300)
        print(f"open a connection: {with_it * 1e6:.1f} us with the stand-in, {without * 1e6:.1f} us without "
              f"(+{(with_it - without) * 1e6:.1f} us, x{with_it / without:.2f})")

        with contextlib.closing(store_sqlite.connect(db)) as conn:
            sub, base = compare(lambda: conn.execute("SELECT CAST(unixepoch('subsec') * 1000 AS BIGINT)").fetchone(),
                                lambda: conn.execute("SELECT CAST(strftime('%s','now') * 1000 AS BIGINT)").fetchone(),
                                5000)
            print(f"DBOS's now in ms: {sub * 1e6:.2f} us through the stand-in, {base * 1e6:.2f} us built in "
                  f"(strftime, DBOS on 3.11) (+{(sub - base) * 1e6:.2f} us, x{sub / base:.2f})")
            conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, at INTEGER NOT NULL"
                         " DEFAULT (unixepoch('subsec') * 1000))")
            conn.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, at INTEGER NOT NULL"
                         " DEFAULT (strftime('%s','now') * 1000))")
            ins_a, ins_b = compare(lambda: conn.execute("INSERT INTO a (id) VALUES (NULL)"),
                                   lambda: conn.execute("INSERT INTO b (id) VALUES (NULL)"), 300, rounds=20)
            print(f"committed INSERT with the DEFAULT: {ins_a * 1e6:.1f} us (stand-in), {ins_b * 1e6:.1f} us "
                  f"(strftime) (+{(ins_a - ins_b) * 1e6:.1f} us, x{ins_a / ins_b:.2f})")


if __name__ == "__main__":
    main()
