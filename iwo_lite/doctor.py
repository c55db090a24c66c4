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
from iwo_lite.db import MIGRATIONS, REPLAY_VERSION, Home, connect_readonly, daemon_pid, has_table
from iwo_lite.errors import EXIT_FAILURE, EXIT_OK


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


def _inspect_database(config: Config) -> list[tuple[bool, str, str]]:
    db_path = config.db_path
    if db_path is None:
        return [(True, f"database: {config.database_url_redacted}", "")]
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
        " AND application_version IS NOT ? GROUP BY 1 ORDER BY 1", (REPLAY_VERSION,)).fetchall()
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
