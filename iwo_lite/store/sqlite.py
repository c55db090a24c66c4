"""SQLite: the connections iwo-lite's own SQL runs on when the database is the home's file.

Owns opening the file read-write (autocommit, busy timeout), read-only (`mode=ro`, for
`status`), and asynchronously (aiosqlite, for the daemon, so its event loop never blocks on
SQLite), and creating it (mode 0600, WAL). Each connection gets SQLite 3.42's
`unixepoch(..., 'subsec')` where the library lacks it (store/sqlite_compat.py), as DBOS's do, so
SQL reads and writes the same on every SQLite. Postgres has the same faces in store/pg.py.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from iwo_lite.errors import UserError
from iwo_lite.store import sqlite_compat
from iwo_lite.store.schema import migrate_sqlite

BUSY_TIMEOUT_MS = 10_000


def refuse_non_file(db_path: Path) -> None:
    """UserError (exit 2, the path named) when the database's path is there but is no file: SQLite
    would say only "unable to open database file" or "disk I/O error"."""
    if db_path.exists() and not db_path.is_file():
        what = "a directory" if db_path.is_dir() else "not a regular file"
        raise UserError(f"{db_path}: {what}, not a database file (the home's iwo.sqlite, or database_url)")


def connect(db_path: Path) -> sqlite3.Connection:
    """A read-write connection in autocommit mode with a busy timeout."""
    refuse_non_file(db_path)
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    sqlite_compat.install(conn)  # before any statement: a function cannot be replaced while one is open
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.row_factory = sqlite3.Row
    return conn


def connect_readonly(db_path: Path) -> sqlite3.Connection:
    """A read-only connection (`mode=ro`): any write through it fails."""
    refuse_non_file(db_path)
    conn = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                           isolation_level=None)
    sqlite_compat.install(conn)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=1")
    conn.row_factory = sqlite3.Row
    return conn


def create(db_path: Path) -> None:
    """The file (0600), in WAL mode, with our migrations applied. Safe from several processes at once."""
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    refuse_non_file(db_path)
    if not db_path.exists():
        # made here, 0600 from the start. Never opened raw when it exists: closing a descriptor of the
        # file drops every POSIX lock this process holds on it (SQLite's own connections' included), so
        # a daemon that queued a spec (the inbox, the web) went on without its locks and stopped seeing
        # new rows
        fd = os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    os.chmod(db_path, 0o600)
    with contextlib.closing(connect(db_path)) as conn:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        migrate_sqlite(conn, str(db_path))
    for suffix in ("-wal", "-shm"):
        side_file = db_path.with_name(db_path.name + suffix)
        if side_file.exists():
            os.chmod(side_file, 0o600)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


class AsyncConnection:
    """The file through aiosqlite, with the same methods as pg.AsyncConnection."""

    dialect = "sqlite"

    def __init__(self, conn):
        self._conn = conn

    @classmethod
    async def open(cls, db_path: Path) -> "AsyncConnection":
        import aiosqlite

        conn = await aiosqlite.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        await sqlite_compat.install_async(conn)  # before any statement (see connect)
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.row_factory = sqlite3.Row
        return cls(conn)

    async def write(self, sql: str, params: tuple = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def fetch_all(self, sql: str, params: tuple = ()) -> list:
        # One call on aiosqlite's thread: execute, fetch, close. A SELECT left open while another
        # task writes on this connection would hold an old snapshot, and the write would fail at
        # once with "database is locked" (SQLITE_BUSY_SNAPSHOT) instead of waiting.
        return list(await self._conn.execute_fetchall(sql, params))

    async def close(self) -> None:
        await self._conn.close()
