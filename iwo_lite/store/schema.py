"""iwo-lite's own tables: numbered migrations, applied on SQLite and on Postgres.

Owns the schema of every `iwo_` table (see README "The database" for what each column
holds) and applying it: on SQLite inside BEGIN IMMEDIATE (safe beside a launching daemon),
on Postgres under an advisory lock (store/pg.py). A migration is never edited once released:
a change is a new numbered entry.
"""

from __future__ import annotations

import sqlite3

from iwo_lite.times import utc_now

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
    # 5: notifier messages by notifier name and a text reference (Telegram's "<chat>:<message>"),
    # so any notifier can map a reply or a button back to its gate; Telegram's rows carried over
    """
    CREATE TABLE iwo_messages (
        notifier    TEXT NOT NULL,
        ref         TEXT NOT NULL,
        gate_id     TEXT,
        kind        TEXT NOT NULL,
        sent_at     TEXT NOT NULL,
        PRIMARY KEY (notifier, ref)
    );
    CREATE INDEX iwo_messages_gate ON iwo_messages (gate_id);
    INSERT INTO iwo_messages (notifier, ref, gate_id, kind, sent_at)
        SELECT 'telegram', CAST(chat_id AS TEXT) || ':' || CAST(message_id AS TEXT), gate_id, kind, sent_at
        FROM iwo_gate_messages;
    DROP TABLE iwo_gate_messages;
    """,
    # 6: the real agents' work. Specs: their text (a submit needs no DBOS: the daemon starts the
    # workflow), who started their workflow, the git base and branch, a pause, the budget cap.
    # Dispatches: the commit they started from and made. Attempts: the session continued, the
    # error class, denied tools, live progress (batched), a note. The outbox of notifications
    # and the leases (which worker runs the bot).
    """
    ALTER TABLE iwo_specs ADD COLUMN text TEXT;
    ALTER TABLE iwo_specs ADD COLUMN launched_by TEXT;
    ALTER TABLE iwo_specs ADD COLUMN launched_at TEXT;
    ALTER TABLE iwo_specs ADD COLUMN base_commit TEXT;
    ALTER TABLE iwo_specs ADD COLUMN base_branch TEXT;
    ALTER TABLE iwo_specs ADD COLUMN branch TEXT;
    ALTER TABLE iwo_specs ADD COLUMN head TEXT;
    ALTER TABLE iwo_specs ADD COLUMN paused_until TEXT;
    ALTER TABLE iwo_specs ADD COLUMN pause_reason TEXT;
    ALTER TABLE iwo_specs ADD COLUMN budget_usd REAL;
    ALTER TABLE iwo_specs ADD COLUMN budget_day TEXT;
    CREATE INDEX iwo_specs_unlaunched ON iwo_specs (launched_at, created_at);
    ALTER TABLE iwo_steps ADD COLUMN start_commit TEXT;
    ALTER TABLE iwo_steps ADD COLUMN commit_sha TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN resumed_from TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN error_class TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN denials TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN progress TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN note TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN executor_id TEXT;
    ALTER TABLE iwo_attempts ADD COLUMN pid_start TEXT;
    CREATE INDEX iwo_attempts_started ON iwo_attempts (started_at);
    CREATE TABLE iwo_outbox (
        key         TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        spec_id     TEXT NOT NULL,
        gate_id     TEXT,
        created_at  TEXT NOT NULL,
        sent_at     TEXT,
        outcome     TEXT
    );
    CREATE INDEX iwo_outbox_unsent ON iwo_outbox (sent_at, created_at);
    CREATE TABLE iwo_leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  TEXT NOT NULL
    );
    """,
    # 7: every takeover of a silent worker's specs, kept (iwo_workers.recovered_* is cleared when
    # that worker registers again): "saved by replay" counts them.
    """
    CREATE TABLE iwo_takeovers (
        executor_id  TEXT NOT NULL,
        recovered_by TEXT NOT NULL,
        recovered_at TEXT NOT NULL
    );
    CREATE INDEX iwo_takeovers_executor ON iwo_takeovers (executor_id, recovered_at);
    INSERT INTO iwo_takeovers (executor_id, recovered_by, recovered_at)
        SELECT executor_id, recovered_by, recovered_at FROM iwo_workers WHERE recovered_at IS NOT NULL;
    """,
    # 8: iwo_migrations.needs (see NEEDS below). An agent's reported cost that is not believable (NaN, infinite, negative, absurd, not a
    # number) is recorded as unknown: cost_usd 0 (every sum stays sane) and a note saying what was
    # reported. Rows an older build wrote with such a cost are turned into the same.
    """
    ALTER TABLE iwo_migrations ADD COLUMN needs INTEGER;
    ALTER TABLE iwo_attempts ADD COLUMN cost_note TEXT;
    UPDATE iwo_attempts SET cost_note = 'the agent reported cost ' || CAST(cost_usd AS TEXT)
        || ' (not a finite number between 0 and 1000): recorded as unknown, not counted', cost_usd = 0
        WHERE NOT (cost_usd >= 0 AND cost_usd <= 1000);
    """,
    # 9: the agent kind that ran each attempt ("claude" | "codex" | "json"; NULL: before this
    # migration, when there was one kind for all roles). Additive: an older build never reads it.
    """
    ALTER TABLE iwo_attempts ADD COLUMN agent TEXT;
    """,
]
# Which builds can run on a database after migration N: a build must know at least NEEDS[N]
# migrations (iwo_migrations.needs; 1 when absent here). Additive migrations (new tables and
# columns an older build never reads) keep it at 1, so an older build can still drain a home a
# newer one migrated (README "Upgrades and the replay version"); a migration an older build
# could not run on safely sets it to its own number, and older builds then refuse the database.
NEEDS: dict[int, int] = {}
NEEDS_FROM = 8  # the first migration whose row records `needs` (the column came with it)


def needs_of(version: int) -> int:
    return NEEDS.get(version, 1)


def newer_than_known(rows: list) -> tuple[int, int] | None:
    """(the database's schema version, the migrations a build must know to run on it) from the rows
    of iwo_migrations newer than this build knows (a row without `needs` needs its own number);
    None when there are none."""
    if not rows:
        return None
    version = max(int(row["version"]) for row in rows)
    needs = max(int(row["needs"]) if "needs" in row.keys() and row["needs"] is not None else int(row["version"])
                for row in rows)
    return version, needs


def refuse_newer(rows: list, where: str) -> tuple[int, int] | None:
    """UserError (one line) when a newer build migrated the database in a way this build cannot run
    on safely; else what newer_than_known says (None, or a newer schema this build can run on)."""
    from iwo_lite.errors import UserError

    newer = newer_than_known(rows)
    if newer is not None and newer[1] > len(MIGRATIONS):
        raise UserError(f"{where}: the database's schema is version {newer[0]}, made by a newer iwo-lite than this "
                        f"one (which knows {len(MIGRATIONS)}) and not safe for it: run the newer iwo-lite (or "
                        "restore a backup from before the upgrade)")
    return newer


# Postgres only, after the migration of that number: the short, stable gate number that
# Telegram buttons carry (SQLite has it built in as the table's rowid).
PG_EXTRA: dict[int, str] = {1: "ALTER TABLE iwo_gates ADD COLUMN rowid BIGSERIAL UNIQUE"}


def migrate_sqlite(conn: sqlite3.Connection, where: str = "database") -> int:
    """Apply the numbered migrations not yet applied; returns the schema version. UserError when a
    newer build made the database into something this build cannot run on (refuse_newer)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS iwo_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = conn.execute("SELECT COALESCE(MAX(version), 0) FROM iwo_migrations").fetchone()[0]
        refuse_newer(conn.execute("SELECT * FROM iwo_migrations WHERE version > ?", (len(MIGRATIONS),)).fetchall(),
                     where)
        for version, script in enumerate(MIGRATIONS, start=1):
            if version <= applied:
                continue
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version >= NEEDS_FROM:
                conn.execute("INSERT INTO iwo_migrations (version, applied_at, needs) VALUES (?, ?, ?)",
                             (version, utc_now(), needs_of(version)))
            else:
                conn.execute("INSERT INTO iwo_migrations (version, applied_at) VALUES (?, ?)", (version, utc_now()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
