"""What DBOS expects of the SQLite library Python links, and `unixepoch(..., 'subsec')` where it lacks it.

Python links whatever SQLite the system has (3.40 on Debian 12 and Ubuntu 22.04, whatever the
Python version). DBOS 3.4 on Python >= 3.12 writes its SQLite timestamps as
`unixepoch('subsec') * 1000` (its table DEFAULTs, and every `updated_at`, `started_at_epoch_ms`,
... it sets): the 'subsec' modifier came with SQLite 3.42, and an older SQLite returns NULL
(`NOT NULL constraint failed: application_versions.version_timestamp`). On Python 3.11 DBOS uses
`strftime('%s','now') * 1000` instead, which every SQLite has.

So on SQLite < 3.42 every connection iwo-lite or DBOS opens to the database gets an
application-defined `unixepoch` (SQLite lets one replace a built-in function per connection,
also inside a table's DEFAULT while `trusted_schema` is on) that gives exactly what SQLite 3.42+
gives: with 'subsec' the milliseconds of the clock over 1000.0 (a REAL), without it whole
seconds (an INTEGER); any other time value or modifier is worked out by SQLite's own
`julianday` on a private in-memory connection. `durable` installs it on DBOS's connections,
store.sqlite on ours.

`problem()` is the one answer to "can DBOS work here": the SQLite floor DBOS needs at all
(RETURNING, 3.35), and on Python >= 3.12 with SQLite < 3.42 whether the stand-in works, tried
on a table DEFAULT as DBOS writes them. `IWO_SQLITE_UNIXEPOCH=off` leaves the stand-in out (to
see the failure it prevents; tests use it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time

# DBOS 3.4's SQLite system database uses INSERT/UPDATE ... RETURNING (SQLite 3.35) throughout
# (dequeue, workflow status, the migrations' bookkeeping), and upserts (3.24) and window
# functions (3.25): older than this, nothing works.
DBOS_MIN_SQLITE = (3, 35, 0)
SUBSEC_SQLITE = (3, 42, 0)  # unixepoch('subsec') / 'subsecond'
KNOB = "IWO_SQLITE_UNIXEPOCH"
_SUBSEC = ("subsec", "subsecond")
_UNIX_EPOCH_JD_MS = 210_866_760_000_000  # the Julian day of 1970-01-01 00:00 UTC, in ms (SQLite's iJD)
_reference = threading.local()


def sqlite_version() -> str:
    return sqlite3.sqlite_version


def dbos_writes_subsec() -> bool:
    """DBOS 3.4 writes `unixepoch('subsec')` on Python >= 3.12 (`_sys_db._now_ms_sql`, `_migration`)."""
    return sys.version_info >= (3, 12)


def stand_in_needed() -> bool:
    return sqlite3.sqlite_version_info < SUBSEC_SQLITE


def stand_in_enabled() -> bool:
    return stand_in_needed() and os.environ.get(KNOB, "").strip().lower() not in ("off", "0", "no")


def unixepoch(*args):
    """SQLite 3.42's unixepoch(time-value, modifier, ...), with 'subsec'."""
    subsec = False
    rest = []
    for index, arg in enumerate(args):
        if isinstance(arg, str) and arg.strip().lower() in _SUBSEC:
            subsec = True
            if index == 0:
                rest.append("now")  # unixepoch('subsec'): 'subsec' stands for the time value 'now'
        else:
            rest.append(arg)
    if not rest or (len(rest) == 1 and isinstance(rest[0], str) and rest[0].strip().lower() == "now"):
        ms = time.time_ns() // 1_000_000  # what SQLite's 'now' reads: the clock in whole ms
    else:
        julian = _julianday(rest)
        if julian is None:
            return None
        ms = round(julian * 86_400_000) - _UNIX_EPOCH_JD_MS
    if subsec:
        return ms / 1000.0
    return (ms + _UNIX_EPOCH_JD_MS) // 1000 - _UNIX_EPOCH_JD_MS // 1000  # SQLite: iJD/1000 - 21086676*10000


def _julianday(args: list):
    conn = getattr(_reference, "conn", None)
    if conn is None:
        conn = _reference.conn = sqlite3.connect(":memory:", check_same_thread=False)
    placeholders = ", ".join("?" * len(args))
    try:
        return conn.execute(f"SELECT julianday({placeholders})", args).fetchone()[0]
    except sqlite3.Error:
        return None


def install(conn: sqlite3.Connection) -> bool:
    """Give this connection the stand-in `unixepoch` when the library lacks 'subsec' (and the knob
    does not turn it off); True when it was installed."""
    if not stand_in_enabled():
        return False
    conn.create_function("unixepoch", -1, unixepoch)  # fails while a statement of conn is open
    _trust_schema(conn)
    return True


async def install_async(conn) -> bool:
    """The same on an aiosqlite connection (the daemon's)."""
    if not stand_in_enabled():
        return False
    await conn.create_function("unixepoch", -1, unixepoch)
    async with conn.execute("PRAGMA trusted_schema") as cursor:
        if (await cursor.fetchone())[0] == 0:
            await conn.execute("PRAGMA trusted_schema=ON")
    return True


def _trust_schema(conn: sqlite3.Connection) -> None:
    """An application-defined function may run in a table's DEFAULT only while trusted_schema is on
    (SQLite's default; some builds turn it off). The database is our own 0600 file."""
    if conn.execute("PRAGMA trusted_schema").fetchone()[0] == 0:
        conn.execute("PRAGMA trusted_schema=ON")


def problem() -> tuple[str, str] | None:
    """(what, remedy) when DBOS cannot work on this Python with this SQLite library; None when it can."""
    python = ".".join(map(str, sys.version_info[:3]))
    have = f"Python {python} with SQLite {sqlite_version()}"
    elsewhere = "or use Postgres (database_url; README: More than one machine)"
    if sqlite3.sqlite_version_info < DBOS_MIN_SQLITE:
        return (f"{have}: DBOS needs SQLite {'.'.join(map(str, DBOS_MIN_SQLITE))} or newer (RETURNING)",
                f"use a Python linked against a newer SQLite, {elsewhere}")
    if not (dbos_writes_subsec() and stand_in_needed()):
        return None
    why = stand_in_failure()
    if why is None:
        return None
    return (f"{have}: DBOS writes unixepoch('subsec') timestamps on Python >= 3.12, which SQLite < 3.42 "
            f"lacks, and iwo-lite's stand-in is not in place ({why})",
            (f"unset {KNOB}, " if not stand_in_enabled() else "")
            + f"use Python 3.11, or a Python linked against SQLite >= 3.42, {elsewhere}")


def refusal() -> str | None:
    """`problem()` as the one line a command that would write DBOS's tables refuses with."""
    found = problem()
    return f"{found[0]}; {found[1]}" if found else None


def stand_in_failure() -> str | None:
    """Try the stand-in as DBOS uses it (a table DEFAULT and a CAST of a value); None when it works."""
    if not stand_in_enabled():
        return f"{KNOB}={os.environ.get(KNOB)}"
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            install(conn)
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL"
                         " DEFAULT (unixepoch('subsec') * 1000))")
            conn.execute("INSERT INTO t (id) VALUES (1)")
            default, value = conn.execute("SELECT at, CAST(unixepoch('subsec') * 1000 AS BIGINT) FROM t").fetchone()
    except sqlite3.Error as error:
        return str(error)
    now_ms = time.time() * 1000
    if not all(isinstance(v, (int, float)) and abs(v - now_ms) < 60_000 for v in (default, value)):
        return f"it gave {default!r} and {value!r}"
    return None


def describe() -> str:
    """One line for doctor: the versions, and what iwo-lite does about 'subsec'."""
    python = ".".join(map(str, sys.version_info[:3]))
    if not stand_in_needed():
        how = "has unixepoch('subsec')"
    elif stand_in_enabled():
        how = "no unixepoch('subsec') of its own: iwo-lite supplies it on every connection"
    else:
        how = f"no unixepoch('subsec'), and {KNOB} leaves iwo-lite's stand-in out"
    if stand_in_needed() and not dbos_writes_subsec():
        how += "; DBOS needs it only on Python >= 3.12"
    return f"python {python}, sqlite {sqlite_version()} ({how})"
