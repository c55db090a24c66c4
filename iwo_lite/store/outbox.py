"""The outbox: what the notifiers must tell the humans, written durably by the loop's steps.

A step that opens a gate, reminds, answers one, pauses or ends a spec adds a row under a key
naming the event (`gate:<id>:question`, `spec:<id>:done`, ...): a re-run step adds nothing new.
The worker that runs the notifiers (holding the `notifier` lease) sends the rows not yet sent,
oldest first, and marks each sent: at-least-once (a crash between sending and marking may send
one twice), the same for every worker's specs. On Postgres a new row is NOTIFY'd on
OUTBOX_CHANNEL, so the sending worker hears of rows added on other workers at once.
"""

from __future__ import annotations

from iwo_lite.store import DIALECT, All, One, Op, Write
from iwo_lite.times import utc_now

OUTBOX_CHANNEL = "iwo_outbox"  # Postgres: NOTIFY'd after a row is added; the sending worker listens


def added(key: str, kind: str, spec_id: str, gate_id: str | None = None) -> Op:
    """True when the event is new (a re-run step finds it already there)."""
    new = (yield Write("INSERT INTO iwo_outbox (key, kind, spec_id, gate_id, created_at) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT DO NOTHING", (key, kind, spec_id, gate_id, utc_now()))) == 1
    if new and (yield DIALECT) == "postgresql":
        yield One("SELECT pg_notify(?, ?)", (OUTBOX_CHANNEL, key))
    return new


def unsent(limit: int = 50) -> Op:
    return (yield All("SELECT key, kind, spec_id, gate_id, created_at FROM iwo_outbox WHERE sent_at IS NULL"
                      " ORDER BY created_at, key LIMIT ?", (limit,)))


def sent(key: str, outcome: str) -> Op:
    yield Write("UPDATE iwo_outbox SET sent_at = ?, outcome = ? WHERE key = ? AND sent_at IS NULL",
                (utc_now(), outcome, key))


def skipped_before(before: str) -> Op:
    """When notifiers are turned on for the first time (no row was ever sent by one): the history
    older than `before` is not sent late, except the questions of gates still open (they still
    want an answer). Once any row was sent, nothing is skipped: what happened while the notifier
    was away (Telegram down, the laptop asleep) is still told, once."""
    delivered = yield One("SELECT 1 AS one FROM iwo_outbox WHERE sent_at IS NOT NULL"
                          " AND outcome NOT LIKE 'skipped%' LIMIT 1", ())
    if delivered is not None:
        return 0
    return (yield Write("UPDATE iwo_outbox SET sent_at = ?, outcome = 'skipped (too old)' WHERE sent_at IS NULL"
                        " AND created_at < ? AND NOT (kind = 'question' AND gate_id IN"
                        " (SELECT id FROM iwo_gates WHERE answered_at IS NULL))", (utc_now(), before)))
