"""Dispatches and agent processes: the iwo_steps and iwo_attempts rows, and the global agent slots.

A dispatch (one role's turn, numbered NN) is a row of iwo_steps; each agent process started
inside it (an attempt) is a row of iwo_attempts, written before the process starts (where
its run directory is, on which host) and finished with what the run printed. The slots of
`agent.global_max_concurrent` (iwo_agent_slots, Postgres) are taken one row at a time.
"""

from __future__ import annotations

import json

from iwo_lite.numbers import checked_cost, json_text
from iwo_lite.store import All, One, Op, Write
from iwo_lite.times import utc_now

# The agent slots one executor holds, made free again (parameter: the executor id).
FREE_SLOTS_SQL = ("UPDATE iwo_agent_slots SET executor_id = NULL, spec_id = NULL, step = NULL, acquired_at = NULL"
                  " WHERE executor_id = ?")


def step_started(spec_id: str, step: int, role: str) -> Op:
    yield Write("INSERT INTO iwo_steps (spec_id, step, role, started_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (spec_id, step, role, utc_now()))


def step_finished(spec_id: str, step: int, *, verdict: str | None, summary: str, question: str, handoff: str,
                  handoff_text: str, error: str | None) -> Op:
    yield Write("UPDATE iwo_steps SET finished_at = COALESCE(finished_at, ?), verdict = ?, summary = ?,"
                " question = ?, handoff = ?, handoff_text = ?, error = ? WHERE spec_id = ? AND step = ?",
                (utc_now(), verdict, summary, question or None, handoff, handoff_text, error, spec_id, step))


def handoff_texts(spec_id: str) -> Op:
    """Each finished dispatch's handoff text by step (whichever worker wrote it)."""
    rows = yield All("SELECT step, handoff_text FROM iwo_steps WHERE spec_id = ? AND handoff_text IS NOT NULL",
                     (spec_id,))
    return {r["step"]: r["handoff_text"] for r in rows}


def attempt_started(spec_id: str, step: int, attempt: int, role: str, run_dir: str, pid: int | None,
                    started_at: str, reattached: bool, host: str, *, session_id: str | None = None,
                    resumed_from: str | None = None, executor_id: str | None = None, note: str | None = None,
                    pid_start: str | None = None, agent: str | None = None) -> Op:
    """The attempt's row, written before its process starts (where, on which host, which session),
    then with its pid and the pid's start time (which tell it from a later process of that pid)."""
    yield Write("INSERT INTO iwo_attempts (spec_id, step, attempt, role, run_dir, pid, started_at, reattached, host,"
                " session_id, resumed_from, executor_id, note, pid_start, agent)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (spec_id, step, attempt) DO UPDATE SET"
                " pid = COALESCE(excluded.pid, iwo_attempts.pid),"
                " pid_start = COALESCE(excluded.pid_start, iwo_attempts.pid_start),"
                " session_id = COALESCE(iwo_attempts.session_id, excluded.session_id),"
                " resumed_from = COALESCE(iwo_attempts.resumed_from, excluded.resumed_from),"
                " note = COALESCE(iwo_attempts.note, excluded.note),"
                " agent = COALESCE(iwo_attempts.agent, excluded.agent),"
                " reattached = CASE WHEN excluded.reattached > iwo_attempts.reattached"
                " THEN excluded.reattached ELSE iwo_attempts.reattached END",
                (spec_id, step, attempt, role, run_dir, pid, started_at, int(reattached), host, session_id,
                 resumed_from, executor_id, note, pid_start, agent))


def attempt(spec_id: str, step: int, attempt: int) -> Op:
    """{run_dir, host, pid, pid_start, finished_at, error, error_class, session_id} of one attempt, or None."""
    return (yield One("SELECT run_dir, host, pid, pid_start, finished_at, error, error_class, session_id FROM iwo_attempts"
                      " WHERE spec_id = ? AND step = ? AND attempt = ?", (spec_id, step, attempt)))


def attempt_finished(spec_id: str, step: int, attempt: int, *, exit_code: int | None, is_error: bool,
                     verdict: str | None, cost_usd: float, session_id: str | None, num_turns: int | None,
                     error: str | None, error_class: str | None = None, denials: list | None = None,
                     progress: dict | None = None, cost_note: str | None = None) -> Op:
    """An attempt's outcome. `cost_usd` is believed only when finite, >= 0 and at most MAX_CALL_USD
    (else it is recorded as unknown: 0, with `cost_note`)."""
    cost, note = checked_cost(cost_usd)
    if cost is None:
        cost, cost_note = 0.0, cost_note or note
    yield Write("UPDATE iwo_attempts SET finished_at = COALESCE(finished_at, ?), exit_code = ?, is_error = ?,"
                " verdict = ?, cost_usd = ?, session_id = COALESCE(?, session_id), num_turns = ?, error = ?,"
                " error_class = ?, denials = ?, progress = COALESCE(?, progress), cost_note = ?"
                " WHERE spec_id = ? AND step = ? AND attempt = ?",
                (utc_now(), exit_code, int(is_error), verdict, cost, session_id, num_turns, error, error_class,
                 json_text(denials) if denials else None, json_text(progress) if progress else None, cost_note,
                 spec_id, step, attempt))


def attempt_progress(spec_id: str, step: int, attempt: int, progress: dict) -> Op:
    """A running attempt's progress (turns, tool, tokens, cost_usd, last_event_at), written in batches."""
    yield Write("UPDATE iwo_attempts SET progress = ? WHERE spec_id = ? AND step = ? AND attempt = ?"
                " AND finished_at IS NULL", (json_text(progress), spec_id, step, attempt))


def attempt_session(spec_id: str, step: int, attempt: int, session_id: str) -> Op:
    """The session a running attempt's CLI named once it started (Codex's thread), kept at once:
    a later attempt resumes it even if the run's own files are lost."""
    yield Write("UPDATE iwo_attempts SET session_id = COALESCE(session_id, ?) WHERE spec_id = ? AND step = ?"
                " AND attempt = ?", (session_id, spec_id, step, attempt))


def step_commits(spec_id: str, step: int, start_commit: str | None, commit_sha: str | None) -> Op:
    yield Write("UPDATE iwo_steps SET start_commit = COALESCE(?, start_commit), commit_sha = COALESCE(?, commit_sha)"
                " WHERE spec_id = ? AND step = ?", (start_commit, commit_sha, spec_id, step))


# Sums of float costs fall short by rounding (ten calls of $0.01 add up to $0.0999...): a spend
# within this much of a cap has reached it.
REACHED_USD = 1e-9


def reached(spent_usd: float, cap_usd: float) -> bool:
    return spent_usd >= cap_usd - REACHED_USD


def spent(spec_id: str) -> Op:
    """{role: usd} this spec spent, and the total."""
    rows = yield All("SELECT role, COALESCE(SUM(cost_usd), 0) AS usd FROM iwo_attempts WHERE spec_id = ?"
                     " GROUP BY role ORDER BY role", (spec_id,))
    by_role = {r["role"]: r["usd"] for r in rows}
    return by_role, sum(by_role.values())


def spent_since(since: str) -> Op:
    """{spec id: usd} spent by attempts started since `since` (ISO), and the total."""
    rows = yield All("SELECT spec_id, COALESCE(SUM(cost_usd), 0) AS usd FROM iwo_attempts WHERE started_at >= ?"
                     " GROUP BY spec_id ORDER BY usd DESC", (since,))
    by_spec = {r["spec_id"]: r["usd"] for r in rows}
    return by_spec, sum(by_spec.values())


def unfinished_run_dirs(spec_id: str) -> Op:
    rows = yield All("SELECT run_dir FROM iwo_attempts WHERE spec_id = ? AND finished_at IS NULL", (spec_id,))
    return [r["run_dir"] for r in rows]


def steps_of(spec_id: str) -> Op:
    return (yield All("SELECT step, role, started_at, finished_at, verdict, summary, question, handoff, error,"
                      " start_commit, commit_sha FROM iwo_steps WHERE spec_id = ? ORDER BY step", (spec_id,)))


def attempts_of(spec_id: str) -> Op:
    rows = yield All("SELECT step, attempt, pid, started_at, finished_at, exit_code, is_error, verdict, cost_usd,"
                     " session_id, num_turns, error, reattached, run_dir, resumed_from, error_class, denials,"
                     " progress, note, cost_note, agent FROM iwo_attempts WHERE spec_id = ? ORDER BY step, attempt", (spec_id,))
    for row in rows:
        row["denials"] = json.loads(row["denials"]) if row["denials"] else []
        row["progress"] = json.loads(row["progress"]) if row["progress"] else None
    return rows


# -- agent.global_max_concurrent: slots shared by every worker (Postgres) ----------------------


def slots_ensure(count: int) -> Op:
    for slot in range(1, count + 1):
        yield Write("INSERT INTO iwo_agent_slots (slot) VALUES (?) ON CONFLICT DO NOTHING", (slot,))


def slot_acquire(count: int, executor_id: str, spec_id: str, step: int) -> Op:
    """Take a free slot numbered 1..count (None when all are taken): one statement, row-locked."""
    found = yield One("UPDATE iwo_agent_slots SET executor_id = ?, spec_id = ?, step = ?, acquired_at = ?"
                      " WHERE executor_id IS NULL AND slot = (SELECT slot FROM iwo_agent_slots WHERE executor_id IS NULL"
                      " AND slot <= ? ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slot",
                      (executor_id, spec_id, step, utc_now(), count))
    return found["slot"] if found else None


def slot_release(slot: int, executor_id: str) -> Op:
    yield Write(FREE_SLOTS_SQL + " AND slot = ?", (executor_id, slot))


def slots_release_all(executor_id: str) -> Op:
    """Free every slot `executor_id` holds (it restarted, or it is gone and was recovered)."""
    return (yield Write(FREE_SLOTS_SQL, (executor_id,)))
