"""Postgres: the connections iwo-lite's own SQL runs on when `database_url` is postgresql://.

Owns the Postgres side of the database layer: psycopg connections (plain, read-only, async)
that accept the same SQL the SQLite side runs (`?` and `:name` parameters are rewritten to
psycopg's), rows that read like `sqlite3.Row` (by index, by name, `dict(row)`), the search
path (iwo-lite's tables in schema `iwo`, DBOS's in `dbos`, so one query text works on both
databases), and migrations under an advisory lock. psycopg is imported here only, so the
SQLite commands never pay for it.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import psycopg

from iwo_lite.store import schema

SCHEMA = "iwo"
SEARCH_PATH = f"{SCHEMA},dbos"
MIGRATION_LOCK = 0x1_0E0_11E  # pg_advisory_xact_lock key: one migrator at a time
CONNECT_TIMEOUT_S = 10
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|\?|:[A-Za-z_]\w*|%")


def _connect_args(url: str, *, read_only: bool = False) -> dict[str, Any]:
    """What every connection of ours passes to psycopg: libpq's URL, a timeout, our search path."""
    options = f"-c search_path={SEARCH_PATH}" + (" -c default_transaction_read_only=on" if read_only else "")
    return {"conninfo": libpq_url(url), "connect_timeout": CONNECT_TIMEOUT_S, "options": options}


def _is_missing_database(error: psycopg.OperationalError) -> bool:
    """The server answered that the database does not exist (DBOS.migrate creates it)."""
    return "does not exist" in str(error) and "database" in str(error)


def libpq_url(url: str) -> str:
    """`postgresql+psycopg://...` (SQLAlchemy's form) as libpq's `postgresql://...`."""
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.lower().startswith("postgres") else url


def translate(sql: str) -> str:
    """SQLite-style parameters (`?`, `:name`) as psycopg's (`%s`, `%(name)s`), `%` as `%%`; quoted `?` kept."""

    def swap(match: re.Match) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if token.startswith(":") and token != "::":
            return f"%({token[1:]})s"
        return token.replace("%", "%%")  # psycopg reads % even inside quotes

    return _TOKENS.sub(swap, sql)


class Row(tuple):
    """A result row readable like sqlite3.Row: row[0], row["name"], dict(row)."""

    _names: tuple[str, ...] = ()

    def __new__(cls, values: Sequence[Any], names: tuple[str, ...]) -> "Row":
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor) -> Any:
    names = tuple(column.name for column in cursor.description or ())
    return lambda values: Row(values, names)


def _prepared(sql: str, params: Sequence[Any] | dict | None) -> tuple[str, Any]:
    """(query, params) for psycopg: without parameters the text goes as written (no % escaping)."""
    if params is None or len(params) == 0:
        return sql, None
    return translate(sql), params


class Connection:
    """A psycopg connection in autocommit mode, with the SQLite connection's `execute`."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> psycopg.Cursor:
        cursor = self._conn.cursor(row_factory=_row_factory)
        return cursor.execute(*_prepared(sql, params))

    def close(self) -> None:
        self._conn.close()


def check_reachable(url: str) -> None:
    """Raise psycopg.OperationalError when the server cannot be reached (a missing database is fine:
    DBOS.migrate creates it)."""
    try:
        psycopg.connect(**_connect_args(url)).close()
    except psycopg.OperationalError as error:
        if not _is_missing_database(error):
            raise


def connect(url: str) -> Connection:
    return Connection(psycopg.connect(autocommit=True, **_connect_args(url)))


class ReadOnlyConnection:
    """For `status`: every query runs alone (one statement, no `;` chains) in a READ ONLY
    transaction that is rolled back afterwards; the session default is read-only too."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> psycopg.Cursor:
        cursor = self._conn.cursor(row_factory=_row_factory)
        try:
            cursor.execute(*_prepared(sql, params), prepare=True)
            rows = cursor.fetchall() if cursor.description else []
        finally:
            self._conn.rollback()
        return _Fetched(cursor.description, rows)

    def close(self) -> None:
        self._conn.close()


class _Fetched:
    """A finished read-only query's rows (the transaction is already rolled back)."""

    def __init__(self, description, rows: list):
        self.description = description
        self._rows = rows

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return list(self._rows)

    def __iter__(self):
        return iter(self._rows)


def connect_readonly(url: str) -> ReadOnlyConnection | None:
    """None when the database does not exist yet (nothing submitted: an empty status)."""
    try:
        conn = psycopg.connect(autocommit=False, **_connect_args(url, read_only=True))
    except psycopg.OperationalError as error:
        if _is_missing_database(error):
            return None
        raise
    conn.read_only = True
    return ReadOnlyConnection(conn)


class AsyncConnection:
    """The daemon's connection (ledger): one psycopg AsyncConnection in autocommit mode."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.AsyncConnection):
        self._conn = conn

    async def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._conn.execute(*_prepared(sql, params))
        return cursor.rowcount

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        cursor = self._conn.cursor(row_factory=_row_factory)
        await cursor.execute(*_prepared(sql, params))
        return await cursor.fetchone()

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._conn.cursor(row_factory=_row_factory)
        await cursor.execute(*_prepared(sql, params))
        return list(await cursor.fetchall())

    async def close(self) -> None:
        await self._conn.close()


async def connect_async(url: str) -> AsyncConnection:
    return AsyncConnection(await psycopg.AsyncConnection.connect(autocommit=True, **_connect_args(url)))


async def listen_forever(url: str, channel: str, on_notify, what: str, retry_s: float) -> None:
    """Call `on_notify()` at every NOTIFY on `channel`, for ever: when the connection fails (the
    server restarted), one warning naming `what` and a new LISTEN after `retry_s` (the caller's
    sweep covers the gap)."""
    import asyncio
    import logging

    while True:
        try:
            async for _ in listen(url, channel):
                on_notify()
        except Exception as error:
            logging.getLogger("iwo_lite").warning("listening for %s failed: %s", what, error)
        await asyncio.sleep(retry_s)


async def listen(url: str, channel: str):
    """An async iterator of the payloads NOTIFY'd on `channel` (a connection of its own)."""
    conn = await psycopg.AsyncConnection.connect(autocommit=True, **_connect_args(url))
    try:
        await conn.execute(f"LISTEN {channel}")
        async for notice in conn.notifies():
            yield notice.payload
    finally:
        await conn.close()


def pg_schema_sql(script: str) -> str:
    """A migration written for SQLite, in Postgres's types: 64-bit integers, double-precision reals."""
    script = re.sub(r"\bINTEGER\b", "BIGINT", script)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)


def migrate(conn: Connection, migrations: Iterable[str], extra: dict[int, str], now: str) -> int:
    """Apply the numbered migrations not yet applied, in one transaction, one migrator at a time."""
    raw = conn._conn
    migrations = list(migrations)
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        raw.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        raw.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.iwo_migrations"
                    " (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
        applied = raw.execute(f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA}.iwo_migrations").fetchone()[0]
        newer = raw.execute(f"SELECT * FROM {SCHEMA}.iwo_migrations WHERE version > %s", (len(migrations),))
        names = [d.name for d in newer.description or ()]
        schema.refuse_newer([Row(row, tuple(names)) for row in newer.fetchall()], "database")
        for version, script in enumerate(migrations, start=1):
            if version <= applied:
                continue
            for statement in (pg_schema_sql(script) + ";" + extra.get(version, "")).split(";"):
                if statement.strip():
                    raw.execute(statement)
            if version >= schema.NEEDS_FROM:
                raw.execute(f"INSERT INTO {SCHEMA}.iwo_migrations (version, applied_at, needs) VALUES (%s, %s, %s)",
                            (version, now, schema.needs_of(version)))
            else:
                raw.execute(f"INSERT INTO {SCHEMA}.iwo_migrations (version, applied_at) VALUES (%s, %s)",
                            (version, now))
    return len(migrations)


def has_table(conn, name: str) -> bool:
    """Whether iwo-lite's (schema iwo) or DBOS's (schema dbos) table `name` exists."""
    row = conn.execute("SELECT to_regclass(?) IS NOT NULL OR to_regclass(?) IS NOT NULL",
                       (f"{SCHEMA}.{name}", f"dbos.{name}")).fetchone()
    return bool(row[0])
