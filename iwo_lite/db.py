"""The home directory and the database file: layout, creation, and iwo-lite's own tables.

Owns: where every file lives inside the home, creating the home and `iwo.sqlite` safely
(mode 0600, WAL, numbered migrations of the `iwo_` tables), and opening the file either
read-write (writers) or read-only (`status`). Standard library only, so `status` and the
answer commands stay fast: nothing here imports DBOS.

DBOS's own tables live in the same file and are created by DBOS's migrations; the `iwo_`
tables below are ours. See README "The database" for what each column holds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "iwo-lite"
# DBOS `application_version`: the replay contract of the loop workflow. Bump it only when a
# code change would make an unfinished spec replay differently (see README "Upgrades").
REPLAY_VERSION = "iwo-replay-1"
QUEUE_NAME = "iwo_specs"
WORKFLOW_NAME = "iwo_spec"
BUSY_TIMEOUT_MS = 10_000

STATES = ("queued", "running", "waiting", "done", "rejected", "failed", "cancelled")
FINAL_STATES = ("done", "rejected", "failed", "cancelled")

MIGRATIONS: list[str] = [
    # 1: specs, dispatches (steps), agent processes (attempts), human gates
    """
    CREATE TABLE iwo_specs (
        id          TEXT PRIMARY KEY,
        title       TEXT NOT NULL,
        state       TEXT NOT NULL,
        role        TEXT,
        step        INTEGER NOT NULL DEFAULT 0,
        question    TEXT,
        deadline    TEXT,
        gate_id     TEXT,
        error       TEXT,
        source      TEXT,
        parent_id   TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX iwo_specs_updated ON iwo_specs (updated_at);
    CREATE INDEX iwo_specs_state ON iwo_specs (state);
    CREATE TABLE iwo_steps (
        spec_id     TEXT NOT NULL,
        step        INTEGER NOT NULL,
        role        TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        verdict     TEXT,
        summary     TEXT,
        question    TEXT,
        handoff     TEXT,
        error       TEXT,
        PRIMARY KEY (spec_id, step)
    );
    CREATE TABLE iwo_attempts (
        spec_id     TEXT NOT NULL,
        step        INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        role        TEXT NOT NULL,
        run_dir     TEXT NOT NULL,
        pid         INTEGER,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        exit_code   INTEGER,
        is_error    INTEGER,
        verdict     TEXT,
        cost_usd    REAL NOT NULL DEFAULT 0,
        session_id  TEXT,
        num_turns   INTEGER,
        error       TEXT,
        reattached  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (spec_id, step, attempt)
    );
    CREATE TABLE iwo_gates (
        id           TEXT PRIMARY KEY,
        spec_id      TEXT NOT NULL,
        step         INTEGER NOT NULL,
        role         TEXT NOT NULL,
        reason       TEXT NOT NULL,
        question     TEXT NOT NULL,
        opened_at    TEXT NOT NULL,
        deadline     TEXT NOT NULL,
        answer       TEXT,
        note         TEXT,
        answered_by  TEXT,
        answered_via TEXT,
        answered_at  TEXT
    );
    CREATE INDEX iwo_gates_spec ON iwo_gates (spec_id);
    """,
    # 2: the Telegram messages that carry each gate (so presses and replies map back after a restart)
    """
    CREATE TABLE iwo_gate_messages (
        chat_id     INTEGER NOT NULL,
        message_id  INTEGER NOT NULL,
        gate_id     TEXT NOT NULL,
        kind        TEXT NOT NULL,
        sent_at     TEXT NOT NULL,
        PRIMARY KEY (chat_id, message_id)
    );
    CREATE INDEX iwo_gate_messages_gate ON iwo_gate_messages (gate_id);
    """,
    # 3: daemon starts (each one recovers the unfinished specs: the basis of "saved by replay")
    """
    CREATE TABLE iwo_daemon_starts (
        started_at  TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        executor_id TEXT NOT NULL
    );
    CREATE INDEX iwo_attempts_finished ON iwo_attempts (finished_at);
    """,
    # 4: several workers on one database: each handoff's text (read by whichever worker runs
    # the next role), the host of each agent run (a pid means something only there), the
    # workers' heartbeats (a silent worker's specs are recovered by another), and the slots
    # of agent.global_max_concurrent
    """
    ALTER TABLE iwo_steps ADD COLUMN handoff_text TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN host TEXT;
    CREATE TABLE iwo_workers (
        executor_id  TEXT PRIMARY KEY,
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        home         TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        stopped_at   TEXT,
        recovered_by TEXT,
        recovered_at TEXT
    );
    CREATE TABLE iwo_agent_slots (
        slot        INTEGER PRIMARY KEY,
        executor_id TEXT,
        spec_id     TEXT,
        step        INTEGER,
        acquired_at TEXT
    );
    """,
]
# Postgres only, after the migration of that number: the short, stable gate number that
# Telegram buttons carry (SQLite has it built in as the table's rowid).
PG_EXTRA: dict[int, str] = {1: "ALTER TABLE iwo_gates ADD COLUMN rowid BIGSERIAL UNIQUE"}


def is_postgres(database_url: str) -> bool:
    return database_url.split("://", 1)[0].lower().startswith("postgres")


def utc_now() -> str:
    """Now as ISO 8601 UTC with milliseconds, e.g. 2026-11-21T23:50:01.123Z (sorts as text)."""
    return iso_utc(_dt.datetime.now(_dt.timezone.utc).timestamp())


def iso_utc(epoch_seconds: float) -> str:
    moment = _dt.datetime.fromtimestamp(epoch_seconds, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> float:
    """The epoch seconds of a timestamp written by utc_now/iso_utc."""
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=_dt.timezone.utc
    ).timestamp()


@dataclass(frozen=True)
class Home:
    """Every path inside an iwo-lite home."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "iwo.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def spec_dir(self, spec_id: str) -> Path:
        return self.specs / spec_id

    def handoff_dir(self, spec_id: str) -> Path:
        return self.spec_dir(spec_id) / "handoffs"

    def run_dir(self, spec_id: str, step: int, role: str, attempt: int) -> Path:
        return self.runs / spec_id / f"{step:02d}-{role}" / f"attempt-{attempt}"


def daemon_pid(lock_path: Path) -> int | None:
    """The pid of the daemon holding `lock_path`, or None when no daemon holds it.

    Takes a shared flock for a moment: it fails only while a daemon holds the exclusive one,
    so the pid written in the file is then the live daemon's (never a stale, reused pid).
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def prepare_home(home: Home, db_path: Path | None) -> None:
    """Create the home and (for SQLite) the database: 0600, WAL, our migrations applied.

    Safe to call from several processes at once: creation is O_EXCL-free but idempotent,
    and migrations run inside BEGIN IMMEDIATE.
    """
    for folder in (home.root, home.inbox, home.specs, home.runs):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if db_path is None:
        return
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(db_path, 0o600)
    with contextlib.closing(connect(db_path)) as conn:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
    for suffix in ("-wal", "-shm"):
        side_file = db_path.with_name(db_path.name + suffix)
        if side_file.exists():
            os.chmod(side_file, 0o600)


def prepare_postgres(database_url: str) -> None:
    """Our tables on a Postgres database (schema `iwo`); DBOS's are created by DBOS.migrate."""
    from iwo_lite import pg

    conn = pg.connect(database_url)
    try:
        pg.migrate(conn, MIGRATIONS, PG_EXTRA, utc_now())
    finally:
        conn.close()


def open_db(database_url: str):
    """A read-write connection (autocommit) to the SQLite file or the Postgres database."""
    if is_postgres(database_url):
        from iwo_lite import pg

        return pg.connect(database_url)
    return connect(sqlite_path(database_url))


def open_db_readonly(database_url: str):
    """A read-only connection, or None when the SQLite file does not exist yet."""
    if is_postgres(database_url):
        from iwo_lite import pg

        return pg.connect_readonly(database_url)
    path = sqlite_path(database_url)
    return connect_readonly(path) if path.exists() else None


def sqlite_path(database_url: str) -> Path:
    return Path(database_url[len("sqlite:///"):].split("?", 1)[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the numbered migrations not yet applied; returns the schema version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS iwo_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = conn.execute("SELECT COALESCE(MAX(version), 0) FROM iwo_migrations").fetchone()[0]
        for version, script in enumerate(MIGRATIONS, start=1):
            if version <= applied:
                continue
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO iwo_migrations (version, applied_at) VALUES (?, ?)",
                (version, utc_now()),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def connect(db_path: Path) -> sqlite3.Connection:
    """A read-write connection in autocommit mode with a busy timeout."""
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.row_factory = sqlite3.Row
    return conn


def connect_readonly(db_path: Path) -> sqlite3.Connection:
    """A read-only connection (`mode=ro`): any write through it fails."""
    conn = sqlite3.connect(
        f"file:{db_path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=1")
    conn.row_factory = sqlite3.Row
    return conn


def has_table(conn, name: str) -> bool:
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        from iwo_lite import pg

        return pg.has_table(conn, name)
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
    return row is not None
