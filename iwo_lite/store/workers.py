"""Workers: daemon starts (iwo_daemon_starts) and, on a shared Postgres database, each worker's
row in iwo_workers (heartbeats, clean stops, and who took over a silent worker's specs)."""

from __future__ import annotations

from iwo_lite.store import All, One, Op, Write
from iwo_lite.times import utc_now


def daemon_started(pid: int, executor_id: str) -> Op:
    yield Write("INSERT INTO iwo_daemon_starts (started_at, pid, executor_id) VALUES (?, ?, ?)",
                (utc_now(), pid, executor_id))


def row(executor_id: str) -> Op:
    return (yield One("SELECT executor_id, host, pid, home, heartbeat_at, stopped_at FROM iwo_workers"
                      " WHERE executor_id = ?", (executor_id,)))


def registered(executor_id: str, host: str, pid: int, home: str) -> Op:
    now = utc_now()
    yield Write("INSERT INTO iwo_workers (executor_id, host, pid, home, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (executor_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, home = excluded.home,"
                " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,"
                " recovered_by = NULL, recovered_at = NULL", (executor_id, host, pid, home, now, now))


def heartbeat(executor_id: str, pid: int) -> Op:
    """True while the row is still ours (no other process took the executor id over)."""
    return (yield Write("UPDATE iwo_workers SET heartbeat_at = ? WHERE executor_id = ? AND pid = ?",
                        (utc_now(), executor_id, pid))) == 1


def stopped(executor_id: str, pid: int) -> Op:
    yield Write("UPDATE iwo_workers SET stopped_at = ? WHERE executor_id = ? AND pid = ?", (utc_now(), executor_id, pid))


def silent(me: str, silent_since: str) -> Op:
    """Workers not heard from since `silent_since` whose specs nobody has recovered yet."""
    rows = yield All("SELECT executor_id FROM iwo_workers WHERE executor_id <> ? AND heartbeat_at < ?"
                     " AND recovered_at IS NULL ORDER BY executor_id", (me, silent_since))
    return [r["executor_id"] for r in rows]


def claimed(executor_id: str, me: str, silent_since: str) -> Op:
    """Claim the recovery of a silent worker's specs; exactly one claimer wins (and the takeover is
    kept in iwo_takeovers: the worker's own row forgets it when the worker registers again)."""
    now = utc_now()
    won = (yield Write("UPDATE iwo_workers SET recovered_by = ?, recovered_at = ? WHERE executor_id = ?"
                       " AND heartbeat_at < ? AND recovered_at IS NULL", (me, now, executor_id, silent_since))) == 1
    if won:
        yield Write("INSERT INTO iwo_takeovers (executor_id, recovered_by, recovered_at) VALUES (?, ?, ?)",
                    (executor_id, me, now))
    return won


def listed() -> Op:
    return (yield All("SELECT executor_id, host, stopped_at FROM iwo_workers ORDER BY executor_id"))


def leased(name: str, holder: str, now: str, until: str) -> Op:
    """Take or renew the lease `name` until `until`: True while `holder` holds it (it was free,
    expired, or already ours)."""
    return (yield Write("INSERT INTO iwo_leases (name, holder, expires_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                        " WHERE iwo_leases.holder = excluded.holder OR iwo_leases.expires_at < ?",
                        (name, holder, until, now))) == 1


def released(name: str, holder: str) -> Op:
    yield Write("DELETE FROM iwo_leases WHERE name = ? AND holder = ?", (name, holder))
