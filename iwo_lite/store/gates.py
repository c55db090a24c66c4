"""Gates: the iwo_gates rows, the one rule every answer obeys, and the notifiers' message references.

An answer is recorded by one guarded UPDATE: the gate is the spec's current one, still open,
before its deadline; the first answer wins. Whoever answers (the shell, a notifier, the
timeout policy) goes through `answer` or `timed_out` here. Message references (iwo_messages)
map a notifier's message (a reply, a button) back to its gate after a restart.
"""

from __future__ import annotations

from iwo_lite.store import DIALECT, All, One, Op, Write
from iwo_lite.times import utc_now

# Parameters: answer, note, answered_by, answered_via, answered_at, gate id, now.
ANSWER_SQL = """
UPDATE iwo_gates SET answer = ?, note = ?, answered_by = ?, answered_via = ?, answered_at = ?
WHERE id = ? AND answer IS NULL AND deadline > ?
  AND EXISTS (SELECT 1 FROM iwo_specs s WHERE s.id = iwo_gates.spec_id AND s.state = 'waiting'
              AND s.gate_id = iwo_gates.id)
"""
GATE_COLUMNS = ("g.rowid AS rowid, g.id AS gate_id, g.spec_id, g.step, g.role, g.reason, g.question, g.opened_at,"
                " g.deadline, g.answer, g.note, g.answered_by, g.answered_via, g.answered_at, s.title")


def opened(gate_id: str, spec_id: str, step: int, role: str, reason: str, question: str, opened_at: str,
           deadline: str) -> Op:
    """Record the gate (a re-run keeps the first row, so the first deadline); returns the row."""
    yield Write("INSERT INTO iwo_gates (id, spec_id, step, role, reason, question, opened_at, deadline)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (gate_id, spec_id, step, role, reason, question, opened_at, deadline))
    return (yield from row(gate_id))


def row(gate_id: str) -> Op:
    """The gate with what a message about it needs (spec title, rowid for button data), or None."""
    return (yield One(f"SELECT {GATE_COLUMNS} FROM iwo_gates g LEFT JOIN iwo_specs s ON s.id = g.spec_id"
                      " WHERE g.id = ?", (gate_id,)))


def of_spec(spec_id: str) -> Op:
    return (yield All("SELECT id, step, role, reason, question, opened_at, deadline, answer, note, answered_by,"
                      " answered_via, answered_at FROM iwo_gates WHERE spec_id = ? ORDER BY step", (spec_id,)))


def answer(gate_id: str, answer: str, note: str, by: str, via: str) -> Op:
    """Record an answer by the rule above: None when recorded, else one line saying why not."""
    now = utc_now()
    if (yield Write(ANSWER_SQL, (answer, note or None, by, via, now, gate_id, now))) == 1:
        return None
    gate = yield One("SELECT id, spec_id, answer, answered_by, answered_via, deadline FROM iwo_gates WHERE id = ?",
                     (gate_id,))
    spec = (yield One("SELECT state, gate_id FROM iwo_specs WHERE id = ?", (gate["spec_id"],))) if gate else None
    return refusal(gate, spec, now, gate_id)


def refusal(gate: dict | None, spec: dict | None, now: str, gate_id: str) -> str:
    """Why an answer to `gate_id` was not recorded (after ANSWER_SQL changed no row)."""
    if gate is None:
        return f"gate {gate_id}: no such gate"
    if gate["answer"] is not None:
        return (f"gate {gate_id} was already answered: {gate['answer']} by {gate['answered_by']} "
                f"via {gate['answered_via']}")
    if gate["deadline"] <= now:
        return f"gate {gate_id} closed at its deadline {gate['deadline']}; approvals.on_timeout decides it"
    state = spec["state"] if spec else "unknown"
    return f"{gate['spec_id']}: not waiting on gate {gate_id} (state {state})"


def timed_out(gate_id: str, answer: str) -> Op:
    """The timeout policy's answer, unless a human answered first; True if it won."""
    return (yield Write("UPDATE iwo_gates SET answer = ?, answered_by = 'timeout', answered_via = 'timeout',"
                        " answered_at = ? WHERE id = ? AND answer IS NULL", (answer, utc_now(), gate_id))) == 1


def answered_waiting() -> Op:
    """(gate id, spec id) of the answered gates whose workflow may still be asleep: wake them."""
    rows = yield All("SELECT g.id, g.spec_id FROM iwo_specs s JOIN iwo_gates g ON g.id = s.gate_id"
                     " WHERE s.state = 'waiting' AND g.answer IS NOT NULL")
    return [(r["id"], r["spec_id"]) for r in rows]


def by_rowid(rowid: int) -> Op:
    found = yield One("SELECT id FROM iwo_gates WHERE rowid = ?", (rowid,))
    return found["id"] if found else None


# -- notifier messages -----------------------------------------------------------------------


def message_sent(notifier: str, ref: str, gate_id: str | None, kind: str) -> Op:
    yield Write("INSERT INTO iwo_messages (notifier, ref, gate_id, kind, sent_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING", (notifier, ref, gate_id, kind, utc_now()))


def messages(notifier: str, gate_id: str) -> Op:
    """[(ref, kind)] of the notifier's messages about the gate, oldest first."""
    rows = yield All("SELECT ref, kind FROM iwo_messages WHERE notifier = ? AND gate_id = ? ORDER BY sent_at",
                     (notifier, gate_id))
    return [(r["ref"], r["kind"]) for r in rows]


def gate_of_message(notifier: str, ref: str) -> Op:
    found = yield One("SELECT gate_id FROM iwo_messages WHERE notifier = ? AND ref = ?", (notifier, ref))
    return found["gate_id"] if found else None


def gate_id_for(spec_id: str, step: int, extra: str = "") -> str:
    """A gate is named by its spec and the dispatch that asked: `<spec>#<NN>`; a gate before a
    dispatch (budget) or at the end (merge) adds what it is: `<spec>#<NN>-budget1`, `<spec>#00-merge1`."""
    return f"{spec_id}#{step:02d}" + (f"-{extra}" if extra else "")


def spec_of(gate_id: str) -> str:
    return gate_id.rsplit("#", 1)[0]


ANSWER_CHANNEL = "iwo_answers"  # Postgres: NOTIFY'd after an answer; every worker listens


def announce_answer(gate_id: str) -> Op:
    """Postgres: tell every worker (on any machine) that a gate was answered. SQLite: nothing."""
    if (yield DIALECT) == "postgresql":
        yield One("SELECT pg_notify(?, ?)", (ANSWER_CHANNEL, gate_id))
