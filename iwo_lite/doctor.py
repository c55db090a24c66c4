"""`iwo-lite doctor`: check the setup and say what is wrong and how to fix it.

Owns the checks: config (already loaded by the time we run), the Python and SQLite versions (and
whether DBOS can work with them: store/sqlite_compat.py), agent command on PATH, workdir,
the workspace (git installed, the workdir a repository, a worktree can be made: a throwaway one is
made and removed under <home>/worktrees),
database (integrity, WAL, mode 0600, migrations, unfinished specs of another replay version),
the OS sandbox (agent.sandbox: bubblewrap here or not), who holds the daemon lock, tmux (when agent.dispatch = "tmux"), and Telegram settings (the
token's presence, never its value).
No DBOS import. Exit 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat

from iwo_lite.config import Config, unreadable_prompt_files, workdir_problem
from iwo_lite.errors import EXIT_FAILURE, EXIT_OK, UserError, first_line
from iwo_lite.home import Home
from iwo_lite.store import Store, checkpoints, health
from iwo_lite.store import specs as spec_rows
from iwo_lite.store import sqlite_compat
from iwo_lite.store import workers as worker_rows
from iwo_lite.store.schema import MIGRATIONS


def checks(config: Config) -> list[tuple[bool, str, str]]:
    """(ok, what, how to fix) for each check."""
    results: list[tuple[bool, str, str]] = []
    source = config.config_path or "built-in defaults (no config file)"
    results.append((True, f"config: {source}", ""))
    results.append(_sqlite_check(config))
    results += _agent_checks(config)
    results += [(False, unreadable, "create it, or remove the key") for unreadable in unreadable_prompt_files(config)]
    results.append(_sandbox_check(config))
    workdir = workdir_problem(config)
    results.append((workdir is None, workdir or f"workdir: {config.workdir}",
                    "create it, or set workdir to your repository"))
    results += _git_checks(config)
    results += _database_checks(config)
    results.append(_lock_check(config, Home(config.home)))
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


def _sqlite_check(config: Config) -> tuple[bool, str, str]:
    """The Python and SQLite versions, and whether DBOS can write its tables with them."""
    found = sqlite_compat.problem() if config.db_path is not None else None
    if found is None:
        return True, sqlite_compat.describe(), ""
    what, remedy = found
    return False, what, remedy


def _git_checks(config: Config) -> list[tuple[bool, str, str]]:
    """The workspace: git installed, the workdir a repository with a commit, and a worktree can be
    made under <home>/worktrees (tried: a throwaway detached worktree, removed at once). With
    `workspace` unset, a workdir that is not a repository just means "shared"."""
    from iwo_lite import workspace

    mode = config.workspace
    if mode == "shared":
        return [(True, 'workspace: "shared" (the agents work in the workdir itself; git not needed)', "")]
    if not config.workdir.is_dir():
        return []  # the workdir check above says so
    version = workspace.git_version()
    if version is None:
        if mode is None and not _looks_like_repository(config.workdir):
            return [(True, "workspace: shared (git is not installed and the workdir is not a git repository)", "")]
        return [(False, "git: not installed (no `git` on PATH)",
                 "install git (each spec works on its own branch iwo/<id> in its own worktree), "
                 'or set workspace = "shared"')]
    results = [(True, f"git: {version}", "")]
    repo = workspace.describe_repo(str(config.workdir))
    if not repo["repository"] or not repo["head"]:
        what = "is not a git repository" if not repo["repository"] else "is a git repository without a commit yet"
        if mode == "worktree":
            results.append((False, f'workspace = "worktree", but workdir {config.workdir} {what}',
                            "set workdir to your repository, or `git init` and make a first commit there, "
                            'or set workspace = "shared"'))
        else:
            results.append((True, f"workspace: shared (workdir {config.workdir} {what}; the agents work in it)", ""))
        return results
    on = f"on {repo['branch']}" if repo["branch"] else "on a detached HEAD"
    results.append((True, f"workspace: worktree (workdir {repo['toplevel']} is a git repository, {on})", ""))
    worktrees = Home(config.home).worktrees
    cause = workspace.probe_worktree(repo["toplevel"], str(worktrees))
    results.append((cause is None, f"worktrees: {worktrees}" + (" (a test worktree was made and removed)"
                                                                if cause is None else f": cannot make one: {cause}"),
                    "use a home outside the repository (--home or $IWO_HOME) or ignore it in .gitignore, and make "
                    f"sure {worktrees} is a directory you can write"))
    return results


def _looks_like_repository(path) -> bool:
    """A `.git` in the directory or a parent (for when git itself is missing)."""
    return any((folder / ".git").exists() for folder in (path, *path.parents))


def _sandbox_check(config: Config) -> tuple[bool, str, str]:
    """agent.sandbox here: bubblewrap (tried once), or unconfined and the command that installs it.
    Only "bwrap" without a working bubblewrap fails; "auto" without it runs (and says so)."""
    from iwo_lite import sandbox

    choice = sandbox.choose(config.agent.sandbox)
    return (not choice.error, f"sandbox: {choice.why}",
            f'{sandbox.INSTALL}, or set agent.sandbox = "auto"' if choice.error else "")


def _agent_checks(config: Config) -> list[tuple[bool, str, str]]:
    """Each agent kind in use, for the roles it runs: its own checks (the command on PATH, its
    permission profiles, what it would refuse)."""
    from iwo_lite import agents

    results: list[tuple[bool, str, str]] = []
    for kind, roles in agents.kinds_in_use(config).items():
        results += agents.build(config, kind, roles).checks(config, roles)
    return results


def _database_checks(config: Config) -> list[tuple[bool, str, str]]:
    try:
        return _inspect_database(config)
    except sqlite3.DatabaseError as error:  # not a database, malformed, locked for too long
        return [(False, f"database: {config.db_path}: {error}", "restore it from a backup (see README: Backups)")]
    except UserError as error:  # the path is there, but no file (store/sqlite.refuse_non_file)
        return [(False, f"database: {error}", "move it aside; the first run or submit creates the database")]


def _postgres_checks(config: Config) -> list[tuple[bool, str, str]]:
    """Reach the server, the schema version, replay versions, and the workers that share the database."""
    shown = config.database_url_redacted
    try:
        db = Store.open_readonly(config.database_url)
    except Exception as error:  # server down, wrong URL, bad password
        return [(False, f"database: {shown}: {first_line(error)}", "check database_url and that the server runs")]
    if db is None:
        return [(True, f"database: {shown} not created yet (the first run or submit creates it)", "")]
    with db:
        results = [(True, f"database: {shown} (Postgres)", ""), _schema_check(db)]
        if db.run(health.dbos_tables_on_postgres()):
            results.append(_replay_check(db))
        if db.has_table("iwo_workers"):
            results.append(_executor_check(db, config.executor_id))
    results.append(_unfinished_sqlite_check(config))
    return results


def _schema_check(db: Store) -> tuple[bool, str, str]:
    version = db.run(health.schema_version()) if db.has_table("iwo_migrations") else 0
    if version > len(MIGRATIONS):  # a newer build's additive migrations (else opening it was refused)
        return (True, f"iwo_ schema version: {version}, newer than this iwo-lite's {len(MIGRATIONS)}; its newer "
                "migrations are additive, so this build runs on it (e.g. to drain specs: README Upgrades)", "")
    return (version == len(MIGRATIONS), f"iwo_ schema version: {version} of {len(MIGRATIONS)}",
            "run `iwo-lite run` to migrate")


def _executor_check(db: Store, executor_id: str) -> tuple[bool, str, str]:
    rows = db.run(worker_rows.listed())
    others = ", ".join(f"{row['executor_id']} on {row['host']}" + (" (stopped)" if row["stopped_at"] else "")
                       for row in rows) or "none yet"
    return True, f"executor_id: {executor_id}; workers on this database: {others}", ""


def _unfinished_sqlite_check(config: Config) -> tuple[bool, str, str]:
    """The home's own SQLite file, left behind by a switch to Postgres with specs unfinished."""
    path = Home(config.home).db
    if not path.exists():
        return True, "no SQLite file in this home", ""
    with Store.open_readonly(f"sqlite:///{path}") as db:
        unfinished = db.run(spec_rows.unfinished_count()) if db.has_table("iwo_specs") else 0
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
    with Store.open_readonly(config.database_url) as db:
        integrity = db.run(health.quick_check())
        results.append((integrity == "ok", f"database integrity: {integrity}",
                        "restore from a backup (see README: Backups)"))
        journal = db.run(health.journal_mode())
        results.append((journal == "wal", f"database journal: {journal}", "run `iwo-lite run` once to set WAL"))
        results.append(_schema_check(db))
        if db.has_table("workflow_status"):
            results.append(_replay_check(db))
            results.append(_other_executors_check(db, config.executor_id))
    return results


def _other_executors_check(db: Store, executor_id: str) -> tuple[bool, str, str]:
    """SQLite: unfinished specs started under another executor id (the hostname changed): not a
    fault, the next `run` recovers them (the daemon holding the file's lock owns them all)."""
    others = db.run(checkpoints.pending_executors(executor_id))
    if not others:
        return True, f"unfinished specs: none under an executor id other than {executor_id}", ""
    return (True, f"unfinished specs under executor id(s) {', '.join(others)} (this machine's is {executor_id}): "
            "the next `iwo-lite run` recovers them", "")


def _replay_check(db: Store) -> tuple[bool, str, str]:
    """Unfinished workflows of another replay version: this build's DBOS never recovers them."""
    rows = db.run(checkpoints.other_versions())
    if not rows:
        return True, f"replay version: {checkpoints.REPLAY_VERSION} (no unfinished specs of another version)", ""
    count = sum(row[1] for row in rows)
    versions = ", ".join(f"{row[0]}: {row[1]}" for row in rows)
    return (False, f"replay version: {count} unfinished spec(s) of another version ({versions}); "
            f"this build ({checkpoints.REPLAY_VERSION}) will not recover them",
            "stop this daemon and run the build that started them (`iwo-lite run`, same home) until they "
            "are done (doctor passes), then start this build again")


def _lock_check(config: Config, home: Home) -> tuple[bool, str, str]:
    """✗ when the daemon is not running and unfinished specs wait for it (status says the same)."""
    from iwo_lite.status import daemon_line

    line, ok = daemon_line(config.database_url, home.lock)
    return ok, line, "start the daemon: `iwo-lite run` (or `iwo-lite service install` to run it at login)"


def run_doctor(config: Config) -> int:
    from iwo_lite.output import console as output_console
    from iwo_lite.output import safe_markup

    console = output_console()
    failed = 0
    for ok, what, fix in checks(config):
        what, fix = safe_markup(what), safe_markup(fix)
        console.print(f"[green]✓[/] {what}" if ok else f"[red]✗[/] {what} — fix: {fix}")
        failed += not ok
    return EXIT_OK if not failed else EXIT_FAILURE
