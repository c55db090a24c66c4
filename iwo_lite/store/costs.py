"""Spending: what the agents cost per UTC day, per spec and per role, and what replay saved.

The reads behind the dashboard's costs panel (web/). Costs are the attempts' `cost_usd`
(an attempt whose reported cost was not believable counts 0, as in `status`); a dispatch's role
is its iwo_steps row's. "Saved by replay" is store/specs.py's figure, summed over the specs it
can be non-zero for (a run re-attached, or finished before some daemon start or takeover).
"""

from __future__ import annotations

from iwo_lite.store import All, One, Op
from iwo_lite.store.specs import saved_by_replay


def per_day(first_day: str) -> Op:
    """[{"day": "YYYY-MM-DD", "usd"}] from `first_day` (UTC, by the attempt's start), oldest first."""
    rows = yield All("SELECT SUBSTR(started_at, 1, 10) AS day, COALESCE(SUM(cost_usd), 0) AS usd FROM iwo_attempts"
                     " WHERE started_at >= ? GROUP BY SUBSTR(started_at, 1, 10) ORDER BY day", (first_day,))
    return [{"day": row["day"], "usd": round(row["usd"], 6)} for row in rows]


def per_role() -> Op:
    rows = yield All("SELECT st.role AS role, COALESCE(SUM(a.cost_usd), 0) AS usd, COUNT(*) AS attempts"
                     " FROM iwo_attempts a JOIN iwo_steps st ON st.spec_id = a.spec_id AND st.step = a.step"
                     " GROUP BY st.role ORDER BY usd DESC, role")
    return [{"role": row["role"], "usd": round(row["usd"], 6), "attempts": row["attempts"]} for row in rows]


def per_spec(limit: int = 20) -> Op:
    """The `limit` specs that cost most, with their title and state."""
    rows = yield All("SELECT s.id AS id, s.title AS title, s.state AS state, SUM(a.cost_usd) AS usd"
                     " FROM iwo_attempts a JOIN iwo_specs s ON s.id = a.spec_id GROUP BY s.id, s.title, s.state"
                     f" HAVING SUM(a.cost_usd) > 0 ORDER BY usd DESC, s.id LIMIT {int(limit)}")
    return [{"id": row["id"], "title": row["title"], "state": row["state"], "usd": round(row["usd"], 6)}
            for row in rows]


def total() -> Op:
    row = yield One("SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM iwo_attempts")
    return round(row["usd"], 6)


def saved() -> Op:
    """(saved_usd, recoveries) over every spec."""
    candidates = yield All(
        "SELECT DISTINCT a.spec_id AS id FROM iwo_attempts a WHERE a.reattached = 1"
        " OR a.finished_at < (SELECT MAX(started_at) FROM iwo_daemon_starts)"
        " OR a.finished_at < (SELECT MAX(recovered_at) FROM iwo_takeovers)")
    usd, recoveries = 0.0, 0
    for row in candidates:
        spec_usd, spec_recoveries = yield from saved_by_replay(row["id"])
        usd += spec_usd
        recoveries += spec_recoveries
    return round(usd, 6), recoveries
