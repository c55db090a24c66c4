"""`status --sql`: any read-only query of the user's, with limits, on either database.

Owns running a query typed by a person: read-only (SQLite opened `mode=ro` with ATTACH denied;
Postgres in a READ ONLY transaction), and bounded in time (a progress handler, or SET LOCAL
statement_timeout), rows, bytes and SQLite's heap, so a query that never ends or returns without
end stops with one line naming the limit. Errors are UserErrors (exit 2) starting "status --sql:".
"""

from __future__ import annotations

import os
import sqlite3
import time

from iwo_lite.errors import UserError, first_line
from iwo_lite.store import Store, sqlite_path


# `status --sql` limits: a query that never ends (an endless recursive CTE) or returns without
# end must stop with one clear line, not grow until the machine swaps. Time: a progress handler
# (SQLite) or `SET LOCAL statement_timeout` (Postgres); size: rows and bytes kept, and SQLite's
# own heap for the query. $IWO_SQL_TIMEOUT_S and $IWO_SQL_MAX_ROWS change the first two (0 = none).
SQL_TIMEOUT_S = 10.0
SQL_MAX_ROWS = 10_000
SQL_MAX_BYTES = 64 * 1024 * 1024  # of values kept for printing
SQL_HEAP_LIMIT = 256 * 1024 * 1024  # SQLite's heap (sorts, group_concat, ...), process-wide: `status` runs one query
_PROGRESS_OPS = 10_000  # SQLite VM steps between two looks at the clock (~1 ms)


def _sql_limit(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UserError(f"${name}: expected a number >= 0 (0 = no limit), got {raw!r}")
    return value


class _Stop(Exception):
    """A `status --sql` limit was reached."""


def run_sql(database_url: str, query: str) -> tuple[list[str], list[tuple]]:
    timeout_s = _sql_limit("IWO_SQL_TIMEOUT_S", SQL_TIMEOUT_S)
    max_rows = int(_sql_limit("IWO_SQL_MAX_ROWS", SQL_MAX_ROWS))
    db = Store.open_readonly(database_url)
    if db is None:
        raise UserError(f"status --sql: no database at {sqlite_path(database_url)}")
    conn = db.conn
    deadline = time.monotonic() + timeout_s if timeout_s else None
    timed_out = False
    too_long = (f"status --sql: stopped after {timeout_s:g}s, the time limit ($IWO_SQL_TIMEOUT_S): "
                "the query may never end (an endless WITH RECURSIVE?); narrow it or add a LIMIT")

    def over_time() -> int:
        nonlocal timed_out
        timed_out = deadline is not None and time.monotonic() > deadline
        return 1 if timed_out else 0

    try:
        if db.dialect == "sqlite":
            conn.execute(f"PRAGMA hard_heap_limit={SQL_HEAP_LIMIT}")
            conn.set_authorizer(_deny_attach)  # ATTACH and VACUUM INTO would create files elsewhere
            conn.set_progress_handler(over_time, _PROGRESS_OPS)
            cursor = conn.execute(query)
            columns = [d[0] for d in cursor.description or ()]
            return columns, _capped(iter(cursor), max_rows)
        # Postgres: the raw psycopg connection (read-only session), so that the time limit and
        # the query share one transaction, and rows stream (stopping early cancels the query).
        import psycopg

        raw = conn._conn
        try:
            cursor = raw.cursor()
            if timeout_s:
                cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            stream = cursor.stream(query)
            try:
                rows = _capped(stream, max_rows)
            except psycopg.ProgrammingError as error:
                if "didn't produce a result" not in str(error):
                    raise
                return [], []  # a command, not a query (SET ...): no rows, as on SQLite
            finally:
                stream.close()  # before the rollback: an unfinished stream is cancelled here
            if cursor.description is not None:
                return [d.name for d in cursor.description], rows
            return _pg_columns(raw, query), rows  # no rows: a stream leaves no description
        finally:
            raw.rollback()
    except _Stop as stop:
        raise UserError(f"status --sql: {stop}") from None
    except MemoryError:
        raise UserError(f"status --sql: the query needs more than {SQL_HEAP_LIMIT >> 20} MiB of memory; "
                        "narrow it or add a LIMIT") from None
    except Exception as error:
        if timed_out or type(error).__name__ == "QueryCanceled":  # SQLite's "interrupted"; Postgres's timeout
            raise UserError(too_long) from None
        if not _is_query_error(error):
            raise
        raise UserError(f"status --sql: {first_line(error)}") from None
    finally:
        conn.close()


def _pg_columns(raw, query: str) -> list[str]:
    """The column names of a query that returned no rows: described, not run again."""
    pgconn = raw.pgconn
    encoding = raw.info.encoding
    pgconn.prepare(b"", query.encode(encoding))
    described = pgconn.describe_prepared(b"")
    return [(described.fname(i) or b"").decode(encoding, "replace") for i in range(described.nfields)]


def _capped(rows, max_rows: int) -> list[tuple]:
    """The rows, or _Stop past `max_rows` rows (0 = no limit) or SQL_MAX_BYTES of values."""
    kept: list[tuple] = []
    size = 0
    for row in rows:
        if max_rows and len(kept) >= max_rows:
            raise _Stop(f"stopped after {max_rows} rows, the limit ($IWO_SQL_MAX_ROWS): add a LIMIT to the query")
        row = tuple(row)
        size += sum(len(v) if isinstance(v, (str, bytes)) else 16 for v in row)
        if size > SQL_MAX_BYTES:
            raise _Stop(f"stopped at {SQL_MAX_BYTES >> 20} MiB of results, the limit: select fewer or "
                        "shorter columns, or add a LIMIT")
        kept.append(row)
    return kept


def _is_query_error(error: Exception) -> bool:
    """A mistake in the query (SQLite's or Postgres's), as opposed to a broken connection."""
    if isinstance(error, sqlite3.Error):
        return True
    kind = type(error)
    return kind.__module__.startswith("psycopg") and kind.__name__ not in ("OperationalError", "InterfaceError")


def _deny_attach(action: int, *_: object) -> int:
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK
