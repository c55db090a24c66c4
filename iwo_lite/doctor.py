"""`iwo-lite doctor`: check the setup and say what is wrong and how to fix it.

Owns the checks: config (already loaded by the time we run), agent command on PATH, workdir,
database (integrity, WAL, mode 0600, migrations, unfinished specs of another replay version),
who holds the daemon lock, tmux (when agent.dispatch = "tmux"), and Telegram settings (the
token's presence, never its value).
No DBOS import. Exit 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat

from iwo_lite.config import Config
from iwo_lite.db import MIGRATIONS, REPLAY_VERSION, Home, connect_readonly, daemon_pid, has_table, open_db_readonly
from iwo_lite.errors import EXIT_FAILURE, EXIT_OK, first_line


def checks(config: Config) -> list[tuple[bool, str, str]]:
    """(ok, what, how to fix) for each check."""
    results: list[tuple[bool, str, str]] = []
    source = config.config_path or "built-in defaults (no config file)"
    results.append((True, f"config: {source}", ""))
    agent = config.agent.command[0]
    found = shutil.which(agent)
    results.append((bool(found), f"agent command: {agent}" + (f" -> {found}" if found else " not found"),
                    "install Claude Code, or set agent.command in the config"))
    results.append((config.workdir.is_dir(), f"workdir: {config.workdir}",
                    "create it, or set workdir to your repository"))
    results += _database_checks(config)
    results.append(_lock_check(Home(config.home)))
    if config.agent.dispatch == "tmux":
        results.append((bool(shutil.which("tmux")), "tmux: " + (shutil.which("tmux") or "not found"),
                        "install tmux, or set agent.dispatch = \"subprocess\""))
    telegram = config.telegram
    has_token = bool(telegram.token())
    if has_token or telegram.allowed_chat_ids:
        results.append((has_token, f"telegram token: ${telegram.token_env} is " + ("set" if has_token else "not set"),
                        f"export {telegram.token_env}=<your bot token>"))
        results.append((bool(telegram.allowed_chat_ids), f"telegram chats allowed: {len(telegram.allowed_chat_ids)}",
                        "set telegram.allowed_chat_ids"))
    else:
        results.append((True, "telegram: not configured (answers from the shell only)", ""))
    return results


def _database_checks(config: Config) -> list[tuple[bool, str, str]]:
    try:
        return _inspect_database(config)
    except sqlite3.DatabaseError as error:  # not a database, malformed, locked for too long
        return [(False, f"database: {config.db_path}: {error}", "restore it from a backup (see README: Backups)")]


def _postgres_checks(config: Config) -> list[tuple[bool, str, str]]:
    """Reach the server, the schema version, replay versions, and the workers that share the database."""
    shown = config.database_url_redacted
    try:
        conn = open_db_readonly(config.database_url)
    except Exception as error:  # server down, wrong URL, bad password
        return [(False, f"database: {shown}: {first_line(error)}", "check database_url and that the server runs")]
    if conn is None:
        return [(True, f"database: {shown} not created yet (the first run or submit creates it)", "")]
    with contextlib.closing(conn):
        results = [(True, f"database: {shown} (Postgres)", "")]
        version = conn.execute("SELECT MAX(version) FROM iwo_migrations").fetchone()[0] if has_table(
            conn, "iwo_migrations") else 0
        results.append((version == len(MIGRATIONS), f"iwo_ schema version: {version} of {len(MIGRATIONS)}",
                        "run `iwo-lite run` to migrate"))
        if conn.execute("SELECT to_regclass('dbos.workflow_status') IS NOT NULL").fetchone()[0]:
            results.append(_replay_check(conn))
        if has_table(conn, "iwo_workers"):
            results.append(_executor_check(conn, config.executor_id))
    results.append(_unfinished_sqlite_check(config))
    return results


def _executor_check(conn, executor_id: str) -> tuple[bool, str, str]:
    rows = conn.execute("SELECT executor_id, host, stopped_at FROM iwo_workers ORDER BY executor_id").fetchall()
    others = ", ".join(f"{row[0]} on {row[1]}" + (" (stopped)" if row[2] else "") for row in rows) or "none yet"
    return True, f"executor_id: {executor_id}; workers on this database: {others}", ""


def _unfinished_sqlite_check(config: Config) -> tuple[bool, str, str]:
    """The home's own SQLite file, left behind by a switch to Postgres with specs unfinished."""
    path = Home(config.home).db
    if not path.exists():
        return True, "no SQLite file in this home", ""
    with contextlib.closing(connect_readonly(path)) as conn:
        unfinished = conn.execute(
            "SELECT COUNT(*) FROM iwo_specs WHERE state NOT IN ('done', 'rejected', 'failed', 'cancelled')"
        ).fetchone()[0] if has_table(conn, "iwo_specs") else 0
    return (unfinished == 0, f"SQLite file {path}: {unfinished} unfinished spec(s) not on Postgres",
            "drain them first: run with database_url = \"\" until `status` shows none unfinished (README: "
            "More than one machine)")


def _inspect_database(config: Config) -> list[tuple[bool, str, str]]:
    db_path = config.db_path
    if db_path is None:
        return _postgres_checks(config)
    if not db_path.exists():
        return [(True, f"database: {db_path} not created yet (the first run or submit creates it)", "")]
    mode = stat.S_IMODE(os.stat(db_path).st_mode)
    results = [(mode == 0o600, f"database mode: {oct(mode)}", f"chmod 600 {db_path}")]
    with contextlib.closing(connect_readonly(db_path)) as conn:
        integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
        results.append((integrity == "ok", f"database integrity: {integrity}",
                        "restore from a backup (see README: Backups)"))
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        results.append((journal == "wal", f"database journal: {journal}", "run `iwo-lite run` once to set WAL"))
        version = conn.execute("SELECT MAX(version) FROM iwo_migrations").fetchone()[0] if has_table(
            conn, "iwo_migrations") else 0
        results.append((version == len(MIGRATIONS), f"iwo_ schema version: {version} of {len(MIGRATIONS)}",
                        "run `iwo-lite run` to migrate"))
        if has_table(conn, "workflow_status"):
            results.append(_replay_check(conn))
    return results


def _replay_check(conn) -> tuple[bool, str, str]:
    """Unfinished workflows of another replay version: this build's DBOS never recovers them."""
    rows = conn.execute(
        "SELECT application_version, COUNT(*) FROM workflow_status WHERE status IN ('PENDING', 'ENQUEUED')"
        " AND COALESCE(application_version, '') <> ? GROUP BY 1 ORDER BY 1", (REPLAY_VERSION,)).fetchall()
    if not rows:
        return True, f"replay version: {REPLAY_VERSION} (no unfinished specs of another version)", ""
    count = sum(row[1] for row in rows)
    versions = ", ".join(f"{row[0]}: {row[1]}" for row in rows)
    return (False, f"replay version: {count} unfinished spec(s) of another version ({versions}); "
            f"this build ({REPLAY_VERSION}) will not recover them",
            "stop this daemon and run the build that started them (`iwo-lite run`, same home) until they "
            "are done (doctor passes), then start this build again")


def _lock_check(home: Home) -> tuple[bool, str, str]:
    pid = daemon_pid(home.lock)
    return True, f"daemon: running (pid {pid})" if pid else "daemon: not running", ""


def run_doctor(config: Config) -> int:
    from rich.console import Console

    console = Console()
    failed = 0
    for ok, what, fix in checks(config):
        console.print(f"[green]✓[/] {what}" if ok else f"[red]✗[/] {what} — fix: {fix}")
        failed += not ok
    return EXIT_OK if not failed else EXIT_FAILURE
