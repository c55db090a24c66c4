"""The store: every statement on iwo-lite's own tables, on SQLite or Postgres, from the shell or the daemon.

Owns how iwo-lite reads and writes its database. Each operation (in store/specs.py,
gates.py, runs.py, workers.py, checkpoints.py) is written once, as a generator that yields
statements (`Write`, `One`, `All`) and receives their results, so the same operation runs on
either face:

    Store        sync: sqlite3 or psycopg, for the shell commands and `status`
    AsyncStore   async: aiosqlite or psycopg's async connection, for the daemon's event loop

    with Store.open(config.database_url) as store:
        store.run(specs.queued(spec_id, title, source))
    await daemon_store.run(gates.answer(gate_id, "approve", "", "me", "cli"))

The SQL is written SQLite's way (`?` and `:name` parameters, ON CONFLICT); store/pg.py
rewrites it for psycopg. Rows come back as dicts. Nothing here imports DBOS or any command
module; psycopg and aiosqlite are imported only by the face that needs them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator
from urllib.parse import quote, unquote

Op = Generator[Any, Any, Any]


@dataclass(frozen=True)
class Write:
    """A statement that changes rows; its result is the number of rows changed."""

    sql: str
    params: tuple | dict = ()


@dataclass(frozen=True)
class One:
    """A query; its result is the first row as a dict, or None."""

    sql: str
    params: tuple | dict = ()


@dataclass(frozen=True)
class All:
    """A query; its result is every row, as dicts."""

    sql: str
    params: tuple | dict = ()


class Dialect:
    """Yielded to learn the database's dialect: "sqlite" or "postgresql"."""


DIALECT = Dialect()


def is_postgres(database_url: str) -> bool:
    return database_url.partition("://")[0].lower().startswith("postgres")


def sqlite_url(path: Path | str) -> str:
    """The ``sqlite:///`` URL of a file, its path percent-encoded as SQLAlchemy (and so DBOS) reads it.

    SQLAlchemy ends the path at the first ``?`` and percent-decodes it, so a path holding
    ``?``, ``%`` (or ``#``, a space) must be encoded or DBOS opens another file.
    """
    return "sqlite:///" + quote(str(path), safe="/")


def sqlite_path(database_url: str) -> Path:
    """The file of a ``sqlite:///`` URL, read as SQLAlchemy reads it: up to the first ``?``, percent-decoded."""
    return Path(unquote(database_url[len("sqlite:///"):].partition("?")[0]))


def prepare(database_url: str) -> None:
    """Our tables on the database (SQLite: the file too, 0600, WAL). DBOS's are durable.py's to make."""
    if not is_postgres(database_url):
        from iwo_lite.store import sqlite

        sqlite.create(sqlite_path(database_url))
        return
    from iwo_lite.store import pg
    from iwo_lite.store.schema import MIGRATIONS, PG_EXTRA
    from iwo_lite.times import utc_now

    conn = pg.connect(database_url)
    try:
        pg.migrate(conn, MIGRATIONS, PG_EXTRA, utc_now())
    finally:
        conn.close()


def _as_dict(row) -> dict | None:
    return None if row is None else dict(row)


class Store:
    """The sync face: one connection, autocommit (or read-only), each operation run to its end."""

    def __init__(self, conn, dialect: str):
        self.conn = conn
        self.dialect = dialect

    @classmethod
    def open(cls, database_url: str) -> "Store":
        """Read-write. (The database must exist: see `prepare`.) Its schema checked as open_readonly's."""
        return cls._schema_checked(database_url, cls._open(database_url), cls._open)

    @classmethod
    def _open(cls, database_url: str) -> "Store":
        if is_postgres(database_url):
            from iwo_lite.store import pg

            return cls(pg.connect(database_url), "postgresql")
        from iwo_lite.store import sqlite

        return cls(sqlite.connect(sqlite_path(database_url)), "sqlite")

    @classmethod
    def open_readonly(cls, database_url: str) -> "Store | None":
        """Read-only, or None when the database does not exist yet. A schema older than this build's
        is upgraded first (the migrations are additive: safe beside a running daemon of either
        build), or UserError says in one line what to run; one a newer build made unsafe for this
        one is refused (schema.refuse_newer)."""
        return cls._schema_checked(database_url, cls._open_readonly(database_url), cls._open_readonly)

    @classmethod
    def _schema_checked(cls, database_url: str, store: "Store | None", reopen) -> "Store | None":
        if store is None or not store.has_table("iwo_migrations"):
            return store
        from iwo_lite.store import schema

        where = "database" if is_postgres(database_url) else str(sqlite_path(database_url))
        try:
            applied = store.conn.execute("SELECT COALESCE(MAX(version), 0) FROM iwo_migrations").fetchone()[0]
            schema.refuse_newer(store.conn.execute("SELECT * FROM iwo_migrations WHERE version > ?",
                                                   (len(schema.MIGRATIONS),)).fetchall(), where)
        except BaseException:
            store.close()
            raise
        if applied >= len(schema.MIGRATIONS):
            return store
        store.close()
        from iwo_lite.errors import UserError, first_line

        try:
            prepare(database_url)
        except UserError:
            raise
        except Exception as error:  # a file or a role that may not write: say what to run
            raise UserError(f"{where}: the database's schema is version {applied}, older than this iwo-lite's "
                            f"({len(schema.MIGRATIONS)}), and it could not be upgraded here ({first_line(error)}): "
                            "run `iwo-lite run` once as the database's owner") from None
        return reopen(database_url)

    @classmethod
    def _open_readonly(cls, database_url: str) -> "Store | None":
        if is_postgres(database_url):
            from iwo_lite.store import pg

            conn = pg.connect_readonly(database_url)
            return None if conn is None else cls(conn, "postgresql")
        from iwo_lite.store import sqlite

        path = sqlite_path(database_url)
        return cls(sqlite.connect_readonly(path), "sqlite") if path.exists() else None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def run(self, op: Op) -> Any:
        result = None
        while True:
            try:
                request = op.send(result)
            except StopIteration as done:
                return done.value
            result = self._execute(request)

    def _execute(self, request) -> Any:
        if request is DIALECT:
            return self.dialect
        cursor = self.conn.execute(request.sql, request.params)
        if isinstance(request, Write):
            return cursor.rowcount
        if isinstance(request, One):
            return _as_dict(cursor.fetchone())
        return [dict(row) for row in cursor.fetchall()]

    def has_table(self, name: str) -> bool:
        if self.dialect == "postgresql":
            from iwo_lite.store import pg

            return pg.has_table(self.conn, name)
        from iwo_lite.store import sqlite

        return sqlite.has_table(self.conn, name)


class AsyncStore:
    """The async face, for the daemon: one connection shared by the event loop's tasks."""

    def __init__(self, conn):
        self.conn = conn
        self.dialect = conn.dialect

    @classmethod
    async def open(cls, database_url: str) -> "AsyncStore":
        if is_postgres(database_url):
            from iwo_lite.store import pg

            return cls(await pg.connect_async(database_url))
        from iwo_lite.store import sqlite

        return cls(await sqlite.AsyncConnection.open(sqlite_path(database_url)))

    async def close(self) -> None:
        await self.conn.close()

    async def run(self, op: Op) -> Any:
        result = None
        while True:
            try:
                request = op.send(result)
            except StopIteration as done:
                return done.value
            result = await self._execute(request)

    async def _execute(self, request) -> Any:
        if request is DIALECT:
            return self.dialect
        if isinstance(request, Write):
            return await self.conn.write(request.sql, request.params)
        rows = await self.conn.fetch_all(request.sql, request.params)
        if isinstance(request, One):
            return _as_dict(rows[0]) if rows else None
        return [dict(row) for row in rows]


@contextlib.contextmanager
def readonly(database_url: str):
    """A read-only Store, or None when there is no database (or no iwo_ tables) yet."""
    store = Store.open_readonly(database_url)
    if store is None:
        yield None
        return
    try:
        yield store if store.has_table("iwo_specs") else None
    finally:
        store.close()
