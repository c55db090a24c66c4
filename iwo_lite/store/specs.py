"""Specs: the iwo_specs rows and the state machine they follow.

    queued -> running <-> waiting -> done | rejected | failed
    (any unfinished state) -> cancelled;  cancelled | failed -> queued | waiting (resume)

Every change of state is one guarded UPDATE (the states it may come from are in its WHERE),
so a step still in flight cannot undo a `cancel`, and a finished spec stays finished. Also
the reads behind `status`: the spec table and the "saved by replay" figures.
"""

from __future__ import annotations

import json

from iwo_lite.store import DIALECT, All, One, Op, Write
from iwo_lite.times import utc_now

STATES = ("queued", "running", "waiting", "done", "rejected", "failed", "cancelled")
FINAL_STATES = ("done", "rejected", "failed", "cancelled")
_LIVE = "('queued', 'running', 'waiting')"


def queued(spec_id: str, title: str, source: str | None, text: str | None = None,
           base_commit: str | None = None, base_branch: str | None = None) -> Op:
    """A submitted spec's row, with its text and the workdir's git HEAD (for its branch); False when
    the id already existed (it is kept as it is). The daemon starts its workflow (`unlaunched`)."""
    now = utc_now()
    return (yield Write("INSERT INTO iwo_specs (id, title, state, source, text, base_commit, base_branch,"
                        " created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (spec_id, title, source, text, base_commit, base_branch, now, now))) == 1


SPEC_CHANNEL = "iwo_specs"  # Postgres: NOTIFY'd after a submit; every worker listens


def announce_queued() -> Op:
    """Postgres: tell every worker (on any machine) that a spec was queued. SQLite: nothing."""
    if (yield DIALECT) == "postgresql":
        yield One("SELECT pg_notify(?, '')", (SPEC_CHANNEL,))


def unlaunched(limit: int) -> Op:
    """Queued specs whose workflow nobody has started yet, oldest first."""
    return (yield All("SELECT id, title, text, source, parent_id FROM iwo_specs WHERE launched_at IS NULL"
                      " AND state = 'queued' AND text IS NOT NULL ORDER BY created_at, id LIMIT ?", (limit,)))


def launched(spec_id: str, executor_id: str) -> Op:
    """Claim the start of a spec's workflow; exactly one claimer (worker) wins."""
    return (yield Write("UPDATE iwo_specs SET launched_by = ?, launched_at = ? WHERE id = ? AND launched_at IS NULL",
                        (executor_id, utc_now(), spec_id))) == 1


def active_count(executor_id: str) -> Op:
    """Specs this worker started that want an agent now (queued or running, not paused)."""
    return (yield One("SELECT COUNT(*) AS n FROM iwo_specs WHERE launched_by = ? AND state IN ('queued', 'running')"
                      " AND paused_until IS NULL", (executor_id,)))["n"]


def forked(parent_id: str, from_role: str, budget_usd: float | None = None) -> Op:
    """A fork's row under the first free `<parent>-forkN` id; returns that id (None when the parent
    is unknown). The id is claimed by the INSERT itself: when another fork took the same N at the
    same instant, the insert changes nothing and the next N is tried, so two forks never share an
    id. `budget_usd` is its cap (a fork replays its parent's admit step, so it is set here): a new
    spec's, since what the fork spends is counted from nothing."""
    parent = yield One("SELECT title, source FROM iwo_specs WHERE id = ?", (parent_id,))
    if parent is None:
        return None
    stem = parent_id[:54]
    taken = {row["id"] for row in (yield All("SELECT id FROM iwo_specs WHERE id LIKE ?", (stem + "-fork%",)))}
    number = 1
    while True:
        while f"{stem}-fork{number}" in taken:
            number += 1
        new_id = f"{stem}-fork{number}"
        now = utc_now()
        inserted = yield Write(
            "INSERT INTO iwo_specs (id, title, state, role, source, parent_id, budget_usd, created_at, updated_at)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (new_id, parent["title"], from_role, parent["source"], parent_id, budget_usd, now, now))
        if inserted == 1:
            return new_id
        taken.add(new_id)


def unforked(spec_id: str) -> Op:
    """Drop the row of a fork whose workflow could not be made (nothing ran under it)."""
    yield Write("DELETE FROM iwo_specs WHERE id = ? AND parent_id IS NOT NULL AND launched_at IS NULL"
                " AND state = 'queued'", (spec_id,))


def unresumed(spec_id: str, previous: str) -> Op:
    """Put back the state of a spec whose resume could not be done."""
    yield Write("UPDATE iwo_specs SET state = ?, updated_at = ? WHERE id = ? AND state IN ('queued', 'waiting')",
                (previous, utc_now(), spec_id))


def admitted(spec_id: str, title: str, source: str | None, parent_id: str | None,
             budget_usd: float | None = None) -> Op:
    """The workflow started (the row is made if the spec was queued by DBOS alone, e.g. a fork);
    it stays `queued` until its first agent starts. Its budget cap is set once."""
    now = utc_now()
    yield Write("INSERT INTO iwo_specs (id, title, state, source, parent_id, budget_usd, created_at, updated_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET budget_usd = COALESCE(iwo_specs.budget_usd, excluded.budget_usd),"
                " updated_at = excluded.updated_at WHERE iwo_specs.state IN ('queued', 'running')",
                (spec_id, title, source, parent_id, budget_usd, now, now))


def at_step(spec_id: str, step: int, role: str) -> Op:
    """A dispatch begins: its role and number; running again after a gate or a pause (a spec
    whose first agent has not started yet stays queued)."""
    yield Write("UPDATE iwo_specs SET state = CASE WHEN state = 'queued' THEN 'queued' ELSE 'running' END,"
                " step = ?, role = ?, question = NULL, deadline = NULL, gate_id = NULL, paused_until = NULL,"
                f" pause_reason = NULL, updated_at = ? WHERE id = ? AND state IN {_LIVE}",
                (step, role, utc_now(), spec_id))


def running(spec_id: str) -> Op:
    """Its first agent process started."""
    yield Write("UPDATE iwo_specs SET state = 'running', updated_at = ? WHERE id = ? AND state = 'queued'",
                (utc_now(), spec_id))


def paused(spec_id: str, until: str, reason: str) -> Op:
    """Backing off (overload, rate limit) or waiting for a usage limit's reset: still running."""
    yield Write("UPDATE iwo_specs SET state = 'running', paused_until = ?, pause_reason = ?, updated_at = ?"
                f" WHERE id = ? AND state IN {_LIVE}", (until, reason, utc_now(), spec_id))


def on_branch(spec_id: str, branch: str | None, head: str | None) -> Op:
    """The spec's git branch and its tip (worktree mode)."""
    yield Write("UPDATE iwo_specs SET branch = COALESCE(?, branch), head = COALESCE(?, head) WHERE id = ?",
                (branch, head, spec_id))


def base(spec_id: str) -> Op:
    """{base_commit, base_branch, branch, head, budget_usd, budget_day, title} of a spec, or None."""
    return (yield One("SELECT base_commit, base_branch, branch, head, budget_usd, budget_day, title FROM iwo_specs"
                      " WHERE id = ?", (spec_id,)))


def budget_raised(spec_id: str, by_usd: float) -> Op:
    yield Write("UPDATE iwo_specs SET budget_usd = COALESCE(budget_usd, 0) + ? WHERE id = ?", (by_usd, spec_id))


def budget_day_allowed(spec_id: str, day: str) -> Op:
    """The human let this spec go past the daily cap for `day` (YYYY-MM-DD, UTC)."""
    yield Write("UPDATE iwo_specs SET budget_day = ? WHERE id = ?", (day, spec_id))


def waiting(spec_id: str, gate_id: str, question: str, deadline: str) -> Op:
    yield Write("UPDATE iwo_specs SET state = 'waiting', gate_id = ?, question = ?, deadline = ?, updated_at = ?"
                f" WHERE id = ? AND state IN {_LIVE}",
                (gate_id, question, deadline, utc_now(), spec_id))


def finished(spec_id: str, state: str, error: str | None = None) -> Op:
    yield Write("UPDATE iwo_specs SET state = ?, error = ?, question = NULL, deadline = NULL, gate_id = NULL,"
                f" updated_at = ? WHERE id = ? AND state IN {_LIVE}",
                (state, error, utc_now(), spec_id))


def cancelled(spec_id: str) -> Op:
    """True when the spec was unfinished and is now cancelled."""
    return (yield Write(f"UPDATE iwo_specs SET state = 'cancelled', updated_at = ? WHERE id = ? AND state IN {_LIVE}",
                        (utc_now(), spec_id))) == 1


def resumed(spec_id: str) -> Op:
    """A cancelled or failed spec back to work: waiting when its gate is still open, else queued."""
    return (yield Write(
        "UPDATE iwo_specs SET state = CASE WHEN EXISTS (SELECT 1 FROM iwo_gates g WHERE g.id = iwo_specs.gate_id"
        " AND g.answer IS NULL) THEN 'waiting' ELSE 'queued' END, updated_at = ?"
        " WHERE id = ? AND state IN ('cancelled', 'failed')", (utc_now(), spec_id))) == 1


def workspace_of(spec_id: str) -> Op:
    """The spec's branch (None in shared mode, or before its first dispatch), recorded head, base
    commit and base branch (the workdir's at submit)."""
    return (yield One("SELECT branch, head, base_commit, base_branch FROM iwo_specs WHERE id = ?", (spec_id,)))


def state(spec_id: str) -> Op:
    """The spec's state, or None when there is no such spec."""
    row = yield One("SELECT state FROM iwo_specs WHERE id = ?", (spec_id,))
    return None if row is None else row["state"]


def unfinished_count() -> Op:
    return (yield One(f"SELECT COUNT(*) AS n FROM iwo_specs WHERE state IN {_LIVE}"))["n"]


def current_gate(spec_id: str) -> Op:
    """{"state", "gate_id"} of the spec, or None."""
    return (yield One("SELECT state, gate_id FROM iwo_specs WHERE id = ?", (spec_id,)))


# -- status ----------------------------------------------------------------------------------

SPEC_FIELDS = ("id", "title", "state", "role", "step", "question", "deadline", "updated_at",
               "dispatches", "cost_usd", "error", "created_at", "parent_id", "paused_until", "pause_reason",
               "gate_reason", "progress", "branch", "head", "budget_usd", "agent")
# progress: the running attempt's, batched by the daemon (iwo_attempts.progress, JSON);
# agent: the kind that ran (or runs) the spec's latest dispatch
SPEC_QUERY = """
SELECT s.id, s.title, s.state, s.role, s.step, s.question, s.deadline, s.updated_at,
       (SELECT COUNT(*) FROM iwo_attempts a WHERE a.spec_id = s.id) AS dispatches,
       (SELECT COALESCE(SUM(a.cost_usd), 0) FROM iwo_attempts a WHERE a.spec_id = s.id) AS cost_usd,
       s.error, s.created_at, s.parent_id, s.paused_until, s.pause_reason,
       CASE WHEN s.state = 'waiting' THEN (SELECT g.reason FROM iwo_gates g WHERE g.id = s.gate_id) END
         AS gate_reason,
       CASE WHEN s.state = 'running' THEN (SELECT a.progress FROM iwo_attempts a WHERE a.spec_id = s.id
         AND a.finished_at IS NULL ORDER BY a.step DESC, a.attempt DESC LIMIT 1) END AS progress,
       s.branch, s.head, s.budget_usd,
       (SELECT a.agent FROM iwo_attempts a WHERE a.spec_id = s.id ORDER BY a.step DESC, a.attempt DESC LIMIT 1)
         AS agent
FROM iwo_specs s
{where}
ORDER BY s.updated_at DESC, s.id
{limit}
"""


def listed(limit: int | None = None, spec_id: str | None = None) -> Op:
    """(specs newest first, how many more there are beyond `limit`)."""
    where, params = ("WHERE s.id = ?", (spec_id,)) if spec_id else ("", ())
    limit_sql = f"LIMIT {int(limit)}" if limit else ""
    specs = _spec_dicts((yield All(SPEC_QUERY.format(where=where, limit=limit_sql), params)))
    if spec_id or not limit:
        return specs, 0
    total = (yield One("SELECT COUNT(*) AS n FROM iwo_specs"))["n"]
    return specs, max(0, total - len(specs))


def changed_since(since: str) -> Op:
    """The specs a board showing every spec up to `since` must draw again: every unfinished one (its
    progress moves without its row changing) and every one updated at or after `since`."""
    return _spec_dicts((yield All(SPEC_QUERY.format(where=f"WHERE s.state IN {_LIVE} OR s.updated_at >= ?",
                                                    limit=""), (since,))))


def _spec_dicts(rows: list[dict]) -> list[dict]:
    specs = [{field: row[field] for field in SPEC_FIELDS} for row in rows]
    for spec in specs:
        spec["cost_usd"] = round(spec["cost_usd"] or 0.0, 6)
        spec["progress"] = json.loads(spec["progress"]) if spec["progress"] else None
    return specs


# "Saved by replay": what a daemon without checkpoints would have paid again. A recovery of a
# spec is an event that made a worker replay it from its checkpoints, returning every dispatch
# it had finished (finished_at before the event) instead of running it again:
#   - a start of the daemon that held the spec (iwo_daemon_starts): on SQLite every start (one
#     daemon owns the file and recovers every unfinished spec); on Postgres only a start of the
#     worker holding it, not any other worker's start;
#   - a takeover (iwo_takeovers): the silent worker that held it was recovered by another.
# The holder at a moment is the executor of the spec's latest attempt started before it
# (iwo_attempts.executor_id), or the worker that took that executor over since (recovered_by).
# A run collected or re-attached after a restart (reattached = 1) was not started again either.
SAVED_SQL = """
WITH events AS (
  SELECT started_at AS at, executor_id AS executor FROM iwo_daemon_starts
  UNION ALL
  SELECT recovered_at, executor_id FROM iwo_takeovers
), recoveries AS (
  SELECT e.at FROM events e JOIN iwo_specs s ON s.id = :id
  WHERE NOT (s.state IN ('done', 'rejected', 'failed', 'cancelled') AND s.updated_at < e.at)
    AND EXISTS (SELECT 1 FROM iwo_attempts a WHERE a.spec_id = s.id AND a.finished_at < e.at)
    AND (NOT EXISTS (SELECT 1 FROM iwo_workers)
         OR e.executor = (SELECT COALESCE((SELECT w.recovered_by FROM iwo_takeovers w
                                            WHERE w.executor_id = l.executor_id AND w.recovered_at > l.started_at
                                              AND w.recovered_at < e.at ORDER BY w.recovered_at LIMIT 1),
                                           l.executor_id, e.executor)
                          FROM iwo_attempts l WHERE l.spec_id = s.id AND l.started_at < e.at
                          ORDER BY l.started_at DESC, l.step DESC, l.attempt DESC LIMIT 1))
)
SELECT
  (SELECT COALESCE(SUM(a.cost_usd), 0) FROM recoveries r JOIN iwo_attempts a ON a.spec_id = :id
     AND a.finished_at < r.at)
  + (SELECT COALESCE(SUM(cost_usd), 0) FROM iwo_attempts WHERE spec_id = :id AND reattached = 1) AS saved,
  (SELECT COUNT(*) FROM recoveries) AS recoveries
"""


def saved_by_replay(spec_id: str) -> Op:
    """(saved_usd, recoveries) of one spec."""
    row = yield One(SAVED_SQL, {"id": spec_id})
    return round(row["saved"] or 0.0, 6), row["recoveries"]


def change_mark() -> Op:
    """A value that changes whenever a spec, an attempt (its progress included) or a gate does: what
    a live page waits on where no file can be watched (Postgres)."""
    head = yield One("SELECT (SELECT MAX(updated_at) FROM iwo_specs) AS specs,"
                     " (SELECT COUNT(*) FROM iwo_attempts) AS attempts,"
                     " (SELECT COUNT(*) FROM iwo_attempts WHERE finished_at IS NOT NULL) AS finished,"
                     " (SELECT COUNT(*) FROM iwo_gates WHERE answer IS NOT NULL) AS answers")
    running = yield All("SELECT spec_id, step, attempt, progress FROM iwo_attempts WHERE finished_at IS NULL"
                        " ORDER BY spec_id, step, attempt")
    return tuple(head.values()), tuple(tuple(row.values()) for row in running)
