"""The daemon's writes to iwo-lite's own tables (`iwo_specs`, `iwo_steps`, `iwo_attempts`, `iwo_gates`, ...).

Owns: every INSERT/UPDATE the daemon makes, through one async connection so the event loop
never blocks on the database: aiosqlite on the SQLite file, psycopg's AsyncConnection on
Postgres (pg.py), the same SQL on both. Each method is one idempotent statement (upsert, or
an update keyed by primary key), because steps that write here may run again after a crash.
DBOS's own tables are DBOS's to write; nothing here touches them.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from iwo_lite.db import BUSY_TIMEOUT_MS, is_postgres, sqlite_path, utc_now
from iwo_lite.gates import ANSWER_SQL, ANSWERED_WAITING_SQL, GATE_SQL, SPEC_GATE_SQL, refusal
from iwo_lite.submit import QUEUED_SQL


# The agent slots one executor holds, made free again (parameter: the executor id).
FREE_SLOTS_SQL = ("UPDATE iwo_agent_slots SET executor_id = NULL, spec_id = NULL, step = NULL, acquired_at = NULL"
                  " WHERE executor_id = ?")


class SqliteConnection:
    """The SQLite file through aiosqlite, with the same four methods as pg.AsyncConnection."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection):
        self._conn = conn

    @classmethod
    async def open(cls, db_path: Path) -> "SqliteConnection":
        conn = await aiosqlite.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.row_factory = aiosqlite.Row
        return cls(conn)

    async def write(self, sql: str, params: tuple = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def fetch_one(self, sql: str, params: tuple = ()) -> tuple | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: tuple = ()) -> list[tuple]:
        # One call on aiosqlite's thread: execute, fetch, close. A SELECT left open while another
        # task writes on this connection would hold an old snapshot, and the write would fail at
        # once with "database is locked" (SQLITE_BUSY_SNAPSHOT) instead of waiting.
        return list(await self._conn.execute_fetchall(sql, params))

    async def close(self) -> None:
        await self._conn.close()


class Ledger:
    def __init__(self, conn):
        self._conn = conn
        self.dialect = conn.dialect

    @classmethod
    async def open(cls, database_url: str) -> "Ledger":
        if is_postgres(database_url):
            from iwo_lite import pg

            return cls(await pg.connect_async(database_url))
        return cls(await SqliteConnection.open(sqlite_path(database_url)))

    async def close(self) -> None:
        await self._conn.close()

    async def _write(self, sql: str, params: tuple) -> int:
        return await self._conn.write(sql, params)

    async def fetch_one(self, sql: str, params: tuple = ()) -> tuple | None:
        return await self._conn.fetch_one(sql, params)

    async def fetch_all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return await self._conn.fetch_all(sql, params)

    async def daemon_started(self, pid: int, executor_id: str) -> None:
        await self._write("INSERT INTO iwo_daemon_starts (started_at, pid, executor_id) VALUES (?, ?, ?)",
                          (utc_now(), pid, executor_id))

    # -- specs -------------------------------------------------------------------------

    async def spec_queued(self, spec_id: str, title: str, source: str | None) -> bool:
        """Record a submitted spec; False when the id already existed."""
        now = utc_now()
        return await self._write(QUEUED_SQL, (spec_id, title, source, now, now)) == 1

    async def spec_running(self, spec_id: str, title: str, source: str | None, parent_id: str | None) -> None:
        now = utc_now()
        await self._write(
            "INSERT INTO iwo_specs (id, title, state, source, parent_id, created_at, updated_at)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET state = 'running', updated_at = excluded.updated_at"
            " WHERE iwo_specs.state IN ('queued', 'running')",
            (spec_id, title, source, parent_id, now, now),
        )

    async def spec_at_step(self, spec_id: str, step: int, role: str) -> None:
        await self._write(
            "UPDATE iwo_specs SET state = 'running', step = ?, role = ?, question = NULL,"
            " deadline = NULL, gate_id = NULL, updated_at = ? WHERE id = ?",
            (step, role, utc_now(), spec_id),
        )

    async def spec_waiting(self, spec_id: str, gate_id: str, question: str, deadline: str) -> None:
        await self._write(
            "UPDATE iwo_specs SET state = 'waiting', gate_id = ?, question = ?, deadline = ?,"
            " updated_at = ? WHERE id = ?",
            (gate_id, question, deadline, utc_now(), spec_id),
        )

    async def spec_finished(self, spec_id: str, state: str, error: str | None = None) -> None:
        await self._write(
            "UPDATE iwo_specs SET state = ?, error = ?, question = NULL, deadline = NULL,"
            " gate_id = NULL, updated_at = ? WHERE id = ?",
            (state, error, utc_now(), spec_id),
        )

    # -- dispatches and attempts -------------------------------------------------------

    async def step_started(self, spec_id: str, step: int, role: str) -> None:
        await self._write(
            "INSERT INTO iwo_steps (spec_id, step, role, started_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (spec_id, step, role, utc_now()),
        )

    async def step_finished(
        self, spec_id: str, step: int, *, verdict: str | None, summary: str, question: str,
        handoff: str, handoff_text: str, error: str | None,
    ) -> None:
        await self._write(
            "UPDATE iwo_steps SET finished_at = COALESCE(finished_at, ?), verdict = ?, summary = ?,"
            " question = ?, handoff = ?, handoff_text = ?, error = ? WHERE spec_id = ? AND step = ?",
            (utc_now(), verdict, summary, question or None, handoff, handoff_text, error, spec_id, step),
        )

    async def handoff_texts(self, spec_id: str) -> dict[int, str]:
        """Each finished dispatch's handoff text by step (whichever worker wrote it)."""
        return {row[0]: row[1] for row in await self.fetch_all(
            "SELECT step, handoff_text FROM iwo_steps WHERE spec_id = ? AND handoff_text IS NOT NULL", (spec_id,))}

    async def attempt_started(
        self, spec_id: str, step: int, attempt: int, role: str, run_dir: str, pid: int | None,
        started_at: str, reattached: bool, host: str,
    ) -> None:
        await self._write(
            "INSERT INTO iwo_attempts (spec_id, step, attempt, role, run_dir, pid, started_at, reattached, host)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (spec_id, step, attempt) DO UPDATE SET"
            " pid = COALESCE(excluded.pid, iwo_attempts.pid),"
            " reattached = CASE WHEN excluded.reattached > iwo_attempts.reattached"
            " THEN excluded.reattached ELSE iwo_attempts.reattached END",
            (spec_id, step, attempt, role, run_dir, pid, started_at, int(reattached), host),
        )

    async def attempt_row(self, spec_id: str, step: int, attempt: int) -> dict | None:
        row = await self.fetch_one(
            "SELECT run_dir, host, pid, finished_at, error FROM iwo_attempts WHERE spec_id = ? AND step = ? AND attempt = ?",
            (spec_id, step, attempt))
        return dict(row) if row is not None else None

    async def attempt_finished(
        self, spec_id: str, step: int, attempt: int, *, exit_code: int | None, is_error: bool,
        verdict: str | None, cost_usd: float, session_id: str | None, num_turns: int | None,
        error: str | None,
    ) -> None:
        await self._write(
            "UPDATE iwo_attempts SET finished_at = COALESCE(finished_at, ?), exit_code = ?,"
            " is_error = ?, verdict = ?, cost_usd = ?, session_id = ?, num_turns = ?, error = ?"
            " WHERE spec_id = ? AND step = ? AND attempt = ?",
            (utc_now(), exit_code, int(is_error), verdict, cost_usd, session_id, num_turns, error,
             spec_id, step, attempt),
        )

    # -- gates -------------------------------------------------------------------------

    async def gate_opened(
        self, gate_id: str, spec_id: str, step: int, role: str, reason: str, question: str,
        opened_at: str, deadline: str,
    ) -> None:
        await self._write(
            "INSERT INTO iwo_gates (id, spec_id, step, role, reason, question, opened_at, deadline)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (gate_id, spec_id, step, role, reason, question, opened_at, deadline),
        )

    async def gate_row(self, gate_id: str) -> dict | None:
        """The gate with what a message about it needs (spec title, rowid for button data)."""
        row = await self.fetch_one(
            "SELECT g.rowid AS rowid, g.id AS gate_id, g.spec_id, g.role, g.reason, g.question, g.opened_at,"
            " g.deadline, g.answer, g.note, g.answered_by, g.answered_via, g.answered_at, s.title"
            " FROM iwo_gates g LEFT JOIN iwo_specs s ON s.id = g.spec_id WHERE g.id = ?",
            (gate_id,),
        )
        return dict(row) if row is not None else None

    async def answer_gate(self, gate_id: str, answer: str, note: str, by: str, via: str) -> str | None:
        """Record an answer by the rule in gates.ANSWER_SQL; None if recorded, else why not."""
        now = utc_now()
        if await self._write(ANSWER_SQL, (answer, note or None, by, via, now, gate_id, now)) == 1:
            return None
        gate = await self.fetch_one(GATE_SQL, (gate_id,))
        spec = await self.fetch_one(SPEC_GATE_SQL, (gate["spec_id"],)) if gate else None
        return refusal(dict(gate) if gate else None, dict(spec) if spec else None, now, gate_id)

    async def answered_waiting(self) -> list[tuple[str, str]]:
        return [(row[0], row[1]) for row in await self.fetch_all(ANSWERED_WAITING_SQL)]

    async def gate_message_sent(self, chat_id: int, message_id: int, gate_id: str, kind: str) -> None:
        await self._write(
            "INSERT INTO iwo_gate_messages (chat_id, message_id, gate_id, kind, sent_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (chat_id, message_id, gate_id, kind, utc_now()))

    async def gate_messages(self, gate_id: str) -> list[tuple[int, int, str]]:
        return [(row[0], row[1], row[2]) for row in await self.fetch_all(
            "SELECT chat_id, message_id, kind FROM iwo_gate_messages WHERE gate_id = ? ORDER BY sent_at",
            (gate_id,))]

    async def gate_id_by_rowid(self, rowid: int) -> str | None:
        row = await self.fetch_one("SELECT id FROM iwo_gates WHERE rowid = ?", (rowid,))
        return row[0] if row else None

    async def gate_id_by_message(self, chat_id: int, message_id: int) -> str | None:
        row = await self.fetch_one(
            "SELECT gate_id FROM iwo_gate_messages WHERE chat_id = ? AND message_id = ?", (chat_id, message_id))
        return row[0] if row else None

    async def gate_timed_out(self, gate_id: str, answer: str) -> bool:
        """Record the timeout policy's answer unless a human answered first; True if it won."""
        changed = await self._write(
            "UPDATE iwo_gates SET answer = ?, answered_by = 'timeout', answered_via = 'timeout',"
            " answered_at = ? WHERE id = ? AND answer IS NULL",
            (answer, utc_now(), gate_id),
        )
        return changed == 1

    # -- workers on a shared (Postgres) database ---------------------------------------

    async def worker_row(self, executor_id: str) -> dict | None:
        row = await self.fetch_one(
            "SELECT executor_id, host, pid, home, heartbeat_at, stopped_at FROM iwo_workers WHERE executor_id = ?",
            (executor_id,))
        return dict(row) if row is not None else None

    async def worker_register(self, executor_id: str, host: str, pid: int, home: str) -> None:
        now = utc_now()
        await self._write(
            "INSERT INTO iwo_workers (executor_id, host, pid, home, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (executor_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, home = excluded.home,"
            " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,"
            " recovered_by = NULL, recovered_at = NULL",
            (executor_id, host, pid, home, now, now))

    async def worker_heartbeat(self, executor_id: str, pid: int) -> bool:
        """True while the row is still ours (no other process took the executor id over)."""
        return await self._write("UPDATE iwo_workers SET heartbeat_at = ? WHERE executor_id = ? AND pid = ?",
                                 (utc_now(), executor_id, pid)) == 1

    async def worker_stopped(self, executor_id: str, pid: int) -> None:
        await self._write("UPDATE iwo_workers SET stopped_at = ? WHERE executor_id = ? AND pid = ?",
                          (utc_now(), executor_id, pid))

    async def silent_workers(self, me: str, silent_since: str) -> list[str]:
        """Workers not heard from since `silent_since` whose specs nobody has recovered yet."""
        return [row[0] for row in await self.fetch_all(
            "SELECT executor_id FROM iwo_workers WHERE executor_id <> ? AND heartbeat_at < ?"
            " AND recovered_at IS NULL ORDER BY executor_id", (me, silent_since))]

    async def claim_worker(self, executor_id: str, me: str, silent_since: str) -> bool:
        """Claim the recovery of a silent worker's specs; exactly one claimer wins."""
        return await self._write(
            "UPDATE iwo_workers SET recovered_by = ?, recovered_at = ? WHERE executor_id = ?"
            " AND heartbeat_at < ? AND recovered_at IS NULL", (me, utc_now(), executor_id, silent_since)) == 1

    # -- agent.global_max_concurrent: slots shared by every worker (Postgres) -----------

    async def slots_ensure(self, count: int) -> None:
        for slot in range(1, count + 1):
            await self._write("INSERT INTO iwo_agent_slots (slot) VALUES (?) ON CONFLICT DO NOTHING", (slot,))

    async def slot_acquire(self, count: int, executor_id: str, spec_id: str, step: int) -> int | None:
        """Take a free slot numbered 1..count (None when all are taken): one statement, row-locked."""
        row = await self.fetch_one(
            "UPDATE iwo_agent_slots SET executor_id = ?, spec_id = ?, step = ?, acquired_at = ?"
            " WHERE executor_id IS NULL AND slot = (SELECT slot FROM iwo_agent_slots WHERE executor_id IS NULL"
            " AND slot <= ? ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slot",
            (executor_id, spec_id, step, utc_now(), count))
        return row[0] if row is not None else None

    async def slot_release(self, slot: int, executor_id: str) -> None:
        await self._write(FREE_SLOTS_SQL + " AND slot = ?", (executor_id, slot))

    async def slots_release_all(self, executor_id: str) -> int:
        """Free every slot `executor_id` holds (it restarted, or it is gone and was recovered)."""
        return await self._write(FREE_SLOTS_SQL, (executor_id,))
