"""Answering a human gate from the shell: approve, reject, revise.

Owns: finding the gate a spec has open now, recording the answer in iwo_gates (the first
answer wins: an UPDATE guarded by `answer IS NULL`), refusing answers to specs that are not
waiting or to gates past their deadline, and waking the waiting workflow with a DBOS message
on the gate's own topic, so an answer can never be taken by a later gate of the same spec.
The waiting side (recv with a durable deadline, the timeout policy) is in loop.py.
"""

from __future__ import annotations

import contextlib
import getpass
import time

from iwo_lite.config import Config
from iwo_lite.db import connect, parse_utc, utc_now
from iwo_lite.errors import UserError
from iwo_lite.roles import ANSWERS


def record_answer(config: Config, spec_id: str, answer: str, note: str, *, by: str | None = None,
                  via: str = "cli") -> str:
    """Record `answer` on the spec's open gate and return the gate id; UserError if impossible."""
    if answer not in ANSWERS:
        raise UserError(f"answer {answer!r}: expected one of {', '.join(ANSWERS)}")
    if answer == "revise" and not note.strip():
        raise UserError(f"{spec_id}: revise needs the instructions for the builder: -m TEXT")
    db_path = config.db_path
    if db_path is None or not db_path.exists():
        raise UserError(f"{spec_id}: no such spec (no database at {db_path})")
    with contextlib.closing(connect(db_path)) as conn:
        spec = conn.execute("SELECT state FROM iwo_specs WHERE id = ?", (spec_id,)).fetchone()
        if spec is None:
            raise UserError(f"{spec_id}: no such spec")
        gate = conn.execute(
            "SELECT id, deadline FROM iwo_gates WHERE spec_id = ? AND answer IS NULL ORDER BY step DESC LIMIT 1",
            (spec_id,),
        ).fetchone()
        if gate is None or spec["state"] != "waiting":
            raise UserError(f"{spec_id}: not waiting for an answer (state {spec['state']})")
        if parse_utc(gate["deadline"]) <= time.time():
            raise UserError(f"{spec_id}: gate {gate['id']} closed at its deadline {gate['deadline']}; "
                            "approvals.on_timeout decides it")
        changed = conn.execute(
            "UPDATE iwo_gates SET answer = ?, note = ?, answered_by = ?, answered_via = ?, answered_at = ?"
            " WHERE id = ? AND answer IS NULL",
            (answer, note or None, by or _user(), via, utc_now(), gate["id"]),
        ).rowcount
        if changed != 1:
            raise UserError(f"{spec_id}: gate {gate['id']} was already answered")
    wake(config, spec_id, gate["id"], answer)
    return gate["id"]


def wake(config: Config, workflow_id: str, gate_id: str, answer: str) -> None:
    """Send the waiting workflow a message on the gate's topic (it reads the answer from iwo_gates)."""
    from iwo_lite.engine import open_client

    client = open_client(config)
    try:
        client.send(workflow_id, {"gate": gate_id, "answer": answer}, topic=gate_id)
    finally:
        client.destroy()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
