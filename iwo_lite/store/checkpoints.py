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
REPLAY_VERSION = "iwo-replay-2"
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
    """`dispatch`'s output: one role's turn (or, with `pause`, the part of it before a pause)."""

    name: str
    step: int
    role: str
    verdict: str | None
    summary: str
    question: str
    error: str | None
    error_class: str | None
    denials: list
    handoff: str
    attempts: int
    pause: dict | None  # {"reason", "until"}: the loop sleeps, then continues the dispatch with `carry`
    carry: dict


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


def resumed_elsewhere(spec_id: str) -> Op:
    """Why `resume` of `spec_id` would not take effect under this build (a workflow of another replay
    version goes back to a queue only that build takes from), or None."""
    row = yield One("SELECT application_version AS version FROM workflow_status WHERE workflow_uuid = ?"
                    " AND COALESCE(application_version, '') <> ?", (spec_id, REPLAY_VERSION))
    if row is None:
        return None
    return (f"{spec_id}: its workflow is of replay version {row['version']}, which this build ({REPLAY_VERSION})"
            " does not run, so `resume` would not take effect: resume it with the build that started it"
            " (README \"Upgrades and the replay version\")")


def run_elsewhere(spec_id: str) -> Op:
    """Why an answer to `spec_id` cannot take effect under this build (its unfinished workflow
    belongs to another replay version, which this build's DBOS never recovers), or None."""
    row = yield One("SELECT application_version AS version FROM workflow_status WHERE workflow_uuid = ?"
                    " AND status IN ('PENDING', 'ENQUEUED') AND COALESCE(application_version, '') <> ?",
                    (spec_id, REPLAY_VERSION))
    if row is None:
        return None
    return (f"{spec_id}: its workflow is of replay version {row['version']}, which this build ({REPLAY_VERSION})"
            " does not run, so the answer would not take effect: answer it with the build that started it"
            " (README \"Upgrades and the replay version\")")


def fork_point(spec_id: str, role: str) -> Op:
    """{function_id, step} where a fork re-runs the role's most recent dispatch: its `prepare` step
    (so a worktree spec's branch starts at the commit that dispatch started from), or None."""
    steps = yield from step_functions(spec_id)
    dispatches = [(fid, out) for fid, name, out in steps
                  if name == "dispatch" and isinstance(out, dict) and out.get("role") == role and not out.get("pause")]
    if not dispatches:
        return None
    fid, out = dispatches[-1]
    prepares = [f for f, name, _ in steps if name == "prepare" and f < fid]
    return {"function_id": prepares[-1] if prepares else fid, "step": out.get("step") or 0}


def first_failed_step(spec_id: str) -> Op:
    """The function id of the spec's first step that recorded an error, or None."""
    row = yield One("SELECT MIN(function_id) AS f FROM operation_outputs WHERE workflow_uuid = ? AND error IS NOT NULL",
                    (spec_id,))
    return row["f"] if row else None


def launched_without_workflow(executor_id: str) -> Op:
    """Specs this worker claimed whose workflow was never started (a crash in between)."""
    rows = yield All("SELECT s.id, s.title, s.text, s.source, s.parent_id FROM iwo_specs s WHERE s.launched_by = ?"
                     " AND s.state = 'queued' AND s.text IS NOT NULL AND NOT EXISTS"
                     " (SELECT 1 FROM workflow_status w WHERE w.workflow_uuid = s.id)", (executor_id,))
    return rows


def step_functions(spec_id: str) -> Op:
    """[(function_id, function_name, output)] of the spec's recorded steps, in order."""
    rows = yield All("SELECT function_id, function_name, output FROM operation_outputs WHERE workflow_uuid = ?"
                     " ORDER BY function_id", (spec_id,))
    return [(r["function_id"], r["function_name"], json.loads(r["output"]) if r["output"] else None) for r in rows]


def pending_executors(me: str) -> Op:
    """Executor ids, other than `me`, of this build's unfinished workflows (SQLite: the daemon
    holding the file's lock owns them all)."""
    rows = yield All("SELECT DISTINCT executor_id FROM workflow_status WHERE status = 'PENDING'"
                     " AND executor_id <> ? AND COALESCE(application_version, '') = ?", (me, REPLAY_VERSION))
    return [r["executor_id"] for r in rows]
