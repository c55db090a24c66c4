"""Answering a human gate: the one rule every answer obeys, from the shell or from Telegram.

Owns: the guarded UPDATE that records an answer (the gate is the spec's current one, still
open, before its deadline; the first answer wins), the one-line explanation of a refusal,
and the shell's side: record the answer with plain sqlite3, then poke the daemon (SIGUSR1,
only when it holds the home's lock) so it wakes the waiting workflow at once. No DBOS import
here: an answer from the shell is a small SQLite write. The daemon's side (waking the
workflow with a DBOS message on the gate's own topic, the durable deadline, the timeout
policy) is in daemon.py and loop.py.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.db import Home, daemon_pid, open_db, utc_now
from iwo_lite.errors import UserError
from iwo_lite.roles import ANSWERS

# Parameters: answer, note, answered_by, answered_via, answered_at, gate id, now.
ANSWER_SQL = """
UPDATE iwo_gates SET answer = ?, note = ?, answered_by = ?, answered_via = ?, answered_at = ?
WHERE id = ? AND answer IS NULL AND deadline > ?
  AND EXISTS (SELECT 1 FROM iwo_specs s WHERE s.id = iwo_gates.spec_id AND s.state = 'waiting'
              AND s.gate_id = iwo_gates.id)
"""
GATE_SQL = "SELECT id, spec_id, answer, answered_by, answered_via, deadline FROM iwo_gates WHERE id = ?"
SPEC_GATE_SQL = "SELECT state, gate_id FROM iwo_specs WHERE id = ?"
ANSWER_CHANNEL = "iwo_answers"  # Postgres: NOTIFY'd after an answer from the shell; every worker listens
# The gates whose answer is recorded but whose workflow may still be asleep: wake them.
ANSWERED_WAITING_SQL = """
SELECT g.id, g.spec_id FROM iwo_specs s JOIN iwo_gates g ON g.id = s.gate_id
WHERE s.state = 'waiting' AND g.answer IS NOT NULL
"""


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


def check_answer(answer: str, note: str, spec_id: str) -> None:
    if answer not in ANSWERS:
        raise UserError(f"answer {answer!r}: expected one of {', '.join(ANSWERS)}")
    if answer == "revise" and not note.strip():
        raise UserError(f"{spec_id}: revise needs the instructions for the builder: -m TEXT")


def record_answer(config: Config, spec_id: str, answer: str, note: str, *, by: str | None = None,
                  via: str = "cli") -> str:
    """Record `answer` on the gate the spec waits on now and return its id; UserError if impossible."""
    check_answer(answer, note, spec_id)
    db_path = config.db_path
    if db_path is not None and not db_path.exists():
        raise UserError(f"{spec_id}: no such spec (no database at {db_path})")
    with contextlib.closing(open_db(config.database_url)) as conn:
        spec = conn.execute(SPEC_GATE_SQL, (spec_id,)).fetchone()
        if spec is None:
            raise UserError(f"{spec_id}: no such spec")
        if spec["state"] != "waiting" or not spec["gate_id"]:
            raise UserError(f"{spec_id}: not waiting for an answer (state {spec['state']})")
        gate_id = spec["gate_id"]
        now = utc_now()
        changed = conn.execute(ANSWER_SQL, (answer, note or None, by or _user(), via, now, gate_id, now)).rowcount
        if changed != 1:
            gate = conn.execute(GATE_SQL, (gate_id,)).fetchone()
            spec = conn.execute(SPEC_GATE_SQL, (spec_id,)).fetchone()
            raise UserError(refusal(dict(gate) if gate else None, dict(spec) if spec else None, now, gate_id))
        if db_path is None:  # Postgres: the worker running the spec may be on another machine
            conn.execute("SELECT pg_notify(?, ?)", (ANSWER_CHANNEL, gate_id))
    poke_daemon(Home(config.home).lock)
    return gate_id


def poke_daemon(lock_path: Path) -> bool:
    """Tell a running daemon to wake answered gates now; False when no daemon holds the lock."""
    pid = daemon_pid(lock_path)
    if pid is None:
        return False  # the daemon wakes the gate when it starts
    try:
        os.kill(pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
