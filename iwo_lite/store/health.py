"""What `doctor` reads of the database itself: integrity, journal mode, schema version, DBOS's tables.

Owns these few statements so that no command module holds SQL of its own.
"""

from __future__ import annotations

from iwo_lite.store import One, Op


def quick_check() -> Op:
    """SQLite: "ok", or the first problem PRAGMA quick_check found."""
    return (yield One("PRAGMA quick_check"))["quick_check"]


def journal_mode() -> Op:
    """SQLite: the file's journal mode ("wal" once the daemon has run)."""
    return (yield One("PRAGMA journal_mode"))["journal_mode"]


def schema_version() -> Op:
    """The newest iwo_ migration applied (0 before any)."""
    row = yield One("SELECT MAX(version) AS v FROM iwo_migrations")
    return (row or {}).get("v") or 0


def dbos_tables_on_postgres() -> Op:
    """Postgres: whether DBOS has made its tables (schema `dbos`) yet."""
    return bool((yield One("SELECT to_regclass('dbos.workflow_status') IS NOT NULL AS found"))["found"])
