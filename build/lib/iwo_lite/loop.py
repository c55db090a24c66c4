"""The six-role loop as one DBOS workflow per spec: deterministic glue, all I/O in steps.

The workflow body only decides (with roles.after_verdict / after_answer) and calls steps:
`admit` (save the spec, snapshot the loop settings), `dispatch` (one role's turn: prompt,
detached agent run, handoff file), `open_gate` / `settle_gate` (the human gate: deadline
computed once, answer read from iwo_gates) and `finish`. Every value the body branches on
comes from a step's recorded output, so a replay after kill -9 takes the same path and
re-runs nothing that finished. Steps are idempotent, so DBOS may retry them.

The daemon installs a Runtime (config, home, ledger, dispatcher) before launching DBOS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dbos import DBOS
from dbos._error import DBOSWorkflowCancelledError

from iwo_lite import roles
from iwo_lite.config import Config
from iwo_lite.db import WORKFLOW_NAME, Home, iso_utc, parse_utc
from iwo_lite.dispatch import DispatchRequest, Dispatcher
from iwo_lite.handoff import AgentAnswer, handoff_name, render_handoff, write_once
from iwo_lite.ledger import Ledger

STEP_RETRIES = dict(retries_allowed=True, max_attempts=4, interval_seconds=0.5, backoff_rate=2.0)
# Every daemon restart counts as a recovery attempt; a gate may wait through many restarts.
MAX_RECOVERY_ATTEMPTS = 1_000_000
HANDOFF_READ_LIMIT = 200_000  # characters of one handoff file read back into later prompts


@dataclass
class Runtime:
    config: Config
    home: Home
    ledger: Ledger
    dispatcher: Dispatcher


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def rt() -> Runtime:
    if _runtime is None:  # pragma: no cover - a programming error, not a user one
        raise RuntimeError("iwo-lite loop used before the daemon installed its runtime")
    return _runtime


# -- steps ---------------------------------------------------------------------------------


@DBOS.step(name="admit", **STEP_RETRIES)
async def admit(spec: dict) -> dict:
    """Save spec.md (once), mark the spec running, and snapshot the loop settings."""
    runtime = rt()
    write_once(runtime.home.spec_dir(spec["id"]) / "spec.md", spec["text"])
    await runtime.ledger.spec_running(spec["id"], spec["title"], spec.get("source"), spec.get("parent_id"))
    approvals = runtime.config.approvals
    return {
        "max_rework": runtime.config.loop.max_rework,
        "gate_timeout": approvals.timeout,
        "on_timeout": approvals.on_timeout,
        "remind_every": approvals.remind_every,
    }


@DBOS.step(name="dispatch", **STEP_RETRIES)
async def dispatch(spec: dict, step: int, role: str, history: list[dict], answers: list[dict]) -> dict:
    """One role's turn: build the prompt, run the agent (detached, re-attachable), write the handoff."""
    runtime = rt()
    spec_id = spec["id"]
    await runtime.ledger.spec_at_step(spec_id, step, role)
    await runtime.ledger.step_started(spec_id, step, role)
    role_config = runtime.config.roles[role]
    brief = _read_text(role_config.prompt_file) if role_config.prompt_file else None
    prompt = roles.render_prompt(
        role=role, spec_id=spec_id, step=step, spec_text=spec["text"], brief=brief,
        handoffs=[dict(entry, text=_read_text(Path(entry["handoff"]), HANDOFF_READ_LIMIT)) for entry in history],
        answers=answers,
    )
    handoff_dir = runtime.home.handoff_dir(spec_id)
    result = await runtime.dispatcher.run(
        DispatchRequest(spec_id=spec_id, workflow_id=spec["workflow_id"], step=step, role=role,
                        prompt=prompt, handoff_dir=handoff_dir)
    )
    answer: AgentAnswer = result.answer
    error = "; ".join(result.errors) if answer.error else None
    handoff_path = handoff_dir / f"{handoff_name(step, role)}.md"
    shown = answer if error is None else AgentAnswer(**{**answer.to_json(), "error": error})
    write_once(handoff_path, render_handoff(spec_id=spec_id, step=step, role=role, answer=shown,
                                            attempts=result.attempts))
    await runtime.ledger.step_finished(
        spec_id, step, verdict=answer.verdict, summary=answer.summary, question=answer.question,
        handoff=str(handoff_path), error=error,
    )
    return {
        "name": handoff_name(step, role), "step": step, "role": role, "verdict": answer.verdict,
        "summary": answer.summary, "question": answer.question, "error": error,
        "handoff": str(handoff_path), "attempts": result.attempts,
    }


@DBOS.step(name="open_gate", **STEP_RETRIES)
async def open_gate(spec_id: str, step: int, role: str, reason: str, question: str, timeout_s: float) -> dict:
    """Record the gate and its deadline (computed once: a re-run keeps the first deadline)."""
    runtime = rt()
    gate_id = f"{spec_id}#{step:02d}"
    now = time.time()
    await runtime.ledger.gate_opened(gate_id, spec_id, step, role, reason, question,
                                     iso_utc(now), iso_utc(now + timeout_s))
    row = await runtime.ledger.gate_row(gate_id)
    deadline = parse_utc(row["deadline"])
    await runtime.ledger.spec_waiting(spec_id, gate_id, question, row["deadline"])
    return {"gate": gate_id, "deadline": deadline, "remaining": max(0.0, deadline - time.time())}


@DBOS.step(name="settle_gate", **STEP_RETRIES)
async def settle_gate(gate_id: str, on_timeout: str) -> dict:
    """The gate's answer if it has one; at the deadline, the timeout policy's; else the time left."""
    runtime = rt()
    row = await runtime.ledger.gate_row(gate_id)
    remaining = parse_utc(row["deadline"]) - time.time()
    if row["answer"] is None and remaining <= 0:
        await runtime.ledger.gate_timed_out(gate_id, on_timeout)
        row = await runtime.ledger.gate_row(gate_id)
    if row["answer"] is None:
        return {"answer": None, "remaining": remaining}
    return {"answer": row["answer"], "note": row["note"] or "", "by": row["answered_by"],
            "via": row["answered_via"], "remaining": 0.0}


@DBOS.step(name="finish", **STEP_RETRIES)
async def finish(spec_id: str, state: str, error: str | None) -> None:
    await rt().ledger.spec_finished(spec_id, state, error)


# -- the workflow --------------------------------------------------------------------------


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=MAX_RECOVERY_ATTEMPTS)
async def spec_workflow(spec: dict) -> dict:
    """Run one spec through planner -> builder -> reviewer -> tester -> deployer -> docs."""
    # A fork runs the same input under a new workflow id: the workflow id is the spec id.
    spec = dict(spec, id=DBOS.workflow_id, workflow_id=DBOS.workflow_id)
    try:
        state = await _run_loop(spec)
    except DBOSWorkflowCancelledError:
        raise
    except Exception as error:  # a bug or a broken home: record it; `resume` retries from here
        await finish(spec["id"], "failed", f"{type(error).__name__}: {error}")
        raise
    await finish(spec["id"], state, None)
    return {"state": state}


async def _run_loop(spec: dict) -> str:
    settings = await admit(spec)
    history: list[dict] = []
    answers: list[dict] = []
    reworks = 0
    role: str | None = roles.ROLES[0]
    step = 0
    while role is not None:
        step += 1
        outcome = await dispatch(spec, step, role, history, answers)
        history.append(outcome)
        if outcome["error"]:
            nxt = roles.Next("gate", gate_reason=roles.GATE_AGENT_FAILED)
        else:
            nxt = roles.after_verdict(role, outcome["verdict"], reworks, settings["max_rework"])
            reworks += int(nxt.is_rework)
        if nxt.kind == "role":
            role = nxt.role
            continue
        if nxt.kind == "done":
            return "done"
        answer = await _gate(spec["id"], outcome, nxt.gate_reason, reworks, settings)
        if answer["answer"] == "reject":
            return "rejected"
        answers.append({"gate": answer["gate"], "role": role, "answer": answer["answer"], "note": answer["note"]})
        after = roles.after_answer(role, nxt.gate_reason, answer["answer"])
        if after.kind == "done":
            return "done"
        role = after.role
    return "done"


async def _gate(spec_id: str, outcome: dict, reason: str, reworks: int, settings: dict) -> dict:
    question = _gate_question(outcome, reason, reworks, settings["max_rework"])
    gate = await open_gate(spec_id, outcome["step"], outcome["role"], reason, question, settings["gate_timeout"])
    remaining = gate["remaining"]
    remind_every = settings["remind_every"]
    while True:
        if remaining > 0:
            wait = remaining if not remind_every else min(remaining, remind_every)
            await DBOS.recv_async(topic=gate["gate"], timeout_seconds=wait)
        settled = await settle_gate(gate["gate"], settings["on_timeout"])
        if settled["answer"] is not None:
            return dict(settled, gate=gate["gate"])
        remaining = settled["remaining"]


def _gate_question(outcome: dict, reason: str, reworks: int, max_rework: int) -> str:
    role = outcome["role"]
    if reason == roles.GATE_BLOCKER:
        return outcome["question"]
    if reason == roles.GATE_REWORK_LIMIT:
        return (f"The spec has gone back to the builder {reworks} times (loop.max_rework = {max_rework}). "
                f"The {role} says: {outcome['summary'] or outcome['verdict']}. "
                "Approve to send it to the builder once more, revise with instructions, or reject.")
    if reason == roles.GATE_DEPLOY_FAILED:
        return (f"The deployer failed: {outcome['summary'] or 'no summary'}. "
                "Approve to continue to docs, revise to send it back to the builder, or reject.")
    return (f"The {role} agent failed after {outcome['attempts']} attempt(s): {outcome['error']}. "
            f"Approve to continue as if the {role} had passed, revise to send it to the builder, or reject.")


def _read_text(path: Path, limit: int | None = None) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(could not read {path}: {error.strerror})"
    return text if limit is None or len(text) <= limit else text[:limit] + "\n…(truncated)\n"
