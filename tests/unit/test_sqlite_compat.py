"""unixepoch(..., 'subsec') where the SQLite library lacks it (store/sqlite_compat.py), checked
against a real SQLite >= 3.42 (the pysqlite3-binary wheel, a test dependency), and the rule for a
Python + SQLite on which DBOS cannot work."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import sys
import time

import pytest

from iwo_lite.store import sqlite_compat

OLD_SQLITE = sqlite3.sqlite_version_info < (3, 42)
needs_old_sqlite = pytest.mark.skipif(not OLD_SQLITE, reason=f"SQLite {sqlite3.sqlite_version} has 'subsec' itself")


def _reference():
    """A real SQLite >= 3.42 (fails, not skips, under CI=true when the wheel is missing)."""
    try:
        import pysqlite3
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("pysqlite3-binary (a test dependency) is not installed")
    assert pysqlite3.sqlite_version_info >= (3, 42)
    return pysqlite3.connect(":memory:")


def _ours():
    conn = sqlite3.connect(":memory:")
    conn.create_function("unixepoch", -1, sqlite_compat.unixepoch)  # installed whatever the library
    return conn


def test_the_stand_in_gives_what_sqlite_3_42_gives_for_times_and_modifiers():
    real, ours = _reference(), _ours()
    rng = random.Random(5)
    cases = [("2020-01-01 00:00:00.5", "subsec"), ("2020-01-01 00:00:00.5",), ("1969-12-31 23:59:59.5",),
             ("1969-12-31 23:59:59.5", "subsec"), (1.5, "unixepoch", "subsec"), (1.5, "unixepoch"), ("x",),
             (None,), ("2026-12-05 01:02:03.999", "+1 day", "SUBSECOND"), ("2026-12-05", "start of month"),
             (2461000.25, "subsec"), ("2026-12-05T01:02:03.004Z", "subsec")]
    for _ in range(500):  # every millisecond fraction: the REAL must be the same double
        ms = rng.randrange(0, 4_102_444_800_000)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"
        cases.append((stamp, "subsec"))
    for args in cases:
        sql = f"SELECT unixepoch({', '.join('?' * len(args))}) * 1000, typeof(unixepoch({', '.join('?' * len(args))}))"
        assert ours.execute(sql, args * 2).fetchone() == real.execute(sql, args * 2).fetchone(), args


def test_now_with_subsec_has_the_same_form_as_sqlite_3_42():
    """Milliseconds over 1000.0, so `* 1000` lands as an INTEGER in DBOS's INTEGER columns, as on 3.42."""
    real, ours = _reference(), _ours()
    table = "CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL DEFAULT (unixepoch('subsec') * 1000))"
    for conn in (real, ours):
        conn.execute(table)
        conn.executemany("INSERT INTO t (id) VALUES (?)", [(i,) for i in range(2000)])
    for conn in (real, ours):
        assert conn.execute("SELECT typeof(at), COUNT(*) FROM t GROUP BY 1").fetchall() == [("integer", 2000)]
        at = conn.execute("SELECT MAX(at) FROM t").fetchone()[0]
        assert abs(at - time.time() * 1000) < 5_000
    (value,) = ours.execute("SELECT unixepoch('subsec')").fetchone()
    assert round(value * 1000) / 1000 == value
    assert isinstance(ours.execute("SELECT unixepoch()").fetchone()[0], int)


@needs_old_sqlite
def test_a_table_default_uses_the_stand_in_and_without_it_is_null(monkeypatch):
    """What failed: DBOS's `DEFAULT (unixepoch('subsec') * 1000)` on SQLite 3.40."""
    table = "CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL DEFAULT (unixepoch('subsec') * 1000))"
    with contextlib.closing(sqlite3.connect(":memory:")) as plain:
        plain.execute(table)
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            plain.execute("INSERT INTO t (id) VALUES (1)")
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        assert sqlite_compat.install(conn)
        conn.execute("PRAGMA trusted_schema=OFF")  # a build that turns it off: installing turns it on again
        sqlite_compat.install(conn)
        conn.execute(table)
        conn.execute("INSERT INTO t (id) VALUES (1)")
        assert abs(conn.execute("SELECT at FROM t").fetchone()[0] - time.time() * 1000) < 5_000
    monkeypatch.setenv(sqlite_compat.KNOB, "off")
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        assert not sqlite_compat.install(conn)
        assert conn.execute("SELECT unixepoch('subsec')").fetchone()[0] is None


@needs_old_sqlite
def test_every_connection_iwo_lite_and_dbos_open_has_subsec(tmp_path):
    """Ours (store.sqlite, read-write and read-only) and DBOS's (its engine, through durable)."""
    import sqlalchemy

    from iwo_lite import durable  # noqa: F401  (installs the engine listener)
    from iwo_lite.store import sqlite as ours

    db = tmp_path / "iwo.sqlite"
    ours.create(db)
    for conn in (ours.connect(db), ours.connect_readonly(db)):
        with contextlib.closing(conn):
            assert conn.execute("SELECT unixepoch('subsec')").fetchone()[0] is not None
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT unixepoch('subsec')")).scalar() is not None
    engine.dispose()
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=f"sqlite:///{db}")
    try:  # DBOS's own system-database engine, as the shell's commands and the daemon get it
        with client._sys_db.engine.connect() as conn:
            value = conn.execute(sqlalchemy.text("SELECT CAST(unixepoch('subsec') * 1000 AS BIGINT)")).scalar()
        assert abs(value - time.time() * 1000) < 5_000
    finally:
        client.destroy()


def test_the_combinations_that_cannot_work_are_named(monkeypatch):
    monkeypatch.delenv(sqlite_compat.KNOB, raising=False)
    assert sqlite_compat.problem() is None  # this machine's Python and SQLite work (with the stand-in)
    assert sqlite3.sqlite_version in sqlite_compat.describe()
    assert ".".join(map(str, sys.version_info[:3])) in sqlite_compat.describe()
    monkeypatch.setenv(sqlite_compat.KNOB, "off")
    found = sqlite_compat.problem()
    if sys.version_info >= (3, 12) and OLD_SQLITE:
        what, remedy = found
        assert f"SQLite {sqlite3.sqlite_version}" in what and "unixepoch('subsec')" in what
        assert "use Python 3.11" in remedy and sqlite_compat.KNOB in remedy
        assert "\n" not in sqlite_compat.refusal()
    else:  # Python 3.11 never writes 'subsec'; a SQLite >= 3.42 has it
        assert found is None
