"""What DBOS records for iwo-lite, read with plain SQL: names, the replay version, step outputs.

Owns the names shared with DBOS (application, queue, workflow), the replay contract
(`REPLAY_VERSION` and the typed shapes of the recorded step outputs), and the reads of DBOS's
tables that commands need without importing DBOS (`status`, `doctor`, `fork`, `resume`).
DBOS writes these tables; iwo-lite only reads them. Step outputs are portable JSON text.
"""

from __future__ import annotations

import json
from typing import TypedDict

from iwo_lite.store import All, One, Op

APP_NAME = "iwo-lite"
# DBOS `application_version`: the replay contract of the loop workflow. Bump it only when a
# code change would make an unfinished spec replay differently (see README "Upgrades").
REPLAY_VERSION = "iwo-replay-1"
QUEUE_NAME = "iwo_specs"
WORKFLOW_NAME = "iwo_spec"


class SpecInput(TypedDict, total=False):
    """The workflow's input (also what `submit` enqueues)."""

    id: str
    title: str
    text: str
    source: str | None
    parent_id: str | None


class Settings(TypedDict):
    """`admit`'s output: the settings a spec fixes when it starts (config.ADMISSION_KEYS)."""

    max_rework: int
    gate_timeout: float
    on_timeout: str
    remind_every: float | None


class Outcome(TypedDict):
    """`dispatch`'s output: one role's turn."""

    name: str
    step: int
    role: str
    verdict: str | None
    summary: str
    question: str
    error: str | None
    handoff: str
    attempts: int


class GateOpened(TypedDict):
    """`open_gate`'s output (epoch seconds)."""

    gate: str
    opened: float
    deadline: float


class Settled(TypedDict):
    """`settle_gate`'s output: the answer (None while there is none) and the time it looked."""

    answer: str | None
    note: str
    by: str | None
    via: str | None
    now: float


def other_versions() -> Op:
    """[(application_version, count)] of unfinished workflows this build's DBOS will not recover."""
    rows = yield All("SELECT application_version AS version, COUNT(*) AS n FROM workflow_status"
                     " WHERE status IN ('PENDING', 'ENQUEUED') AND COALESCE(application_version, '') <> ?"
                     " GROUP BY 1 ORDER BY 1", (REPLAY_VERSION,))
    return [(r["version"], r["n"]) for r in rows]


def last_dispatch(spec_id: str, role: str) -> Op:
    """{function_id, step} of the role's most recent recorded dispatch, or None."""
    rows = yield All("SELECT function_id, output FROM operation_outputs WHERE workflow_uuid = ?"
                     " AND function_name = 'dispatch' AND output IS NOT NULL ORDER BY function_id DESC", (spec_id,))
    for row in rows:
        recorded = json.loads(row["output"])
        if isinstance(recorded, dict) and recorded.get("role") == role:
            return {"function_id": row["function_id"], "step": recorded.get("step") or 0}
    return None


def first_failed_step(spec_id: str) -> Op:
    """The function id of the spec's first step that recorded an error, or None."""
    row = yield One("SELECT MIN(function_id) AS f FROM operation_outputs WHERE workflow_uuid = ? AND error IS NOT NULL",
                    (spec_id,))
    return row["f"] if row else None
