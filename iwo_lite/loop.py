"""The six-role loop as one DBOS workflow per spec: deterministic glue, all I/O in steps.

The workflow body only decides (with roles.after_verdict / after_answer) and calls steps:
`admit` (save the spec, snapshot the loop settings), `dispatch` (one role's turn: prompt,
detached agent run, handoff file), the human gate (`open_gate`: deadline computed once;
`notify_gate`: question or reminder to Telegram; `settle_gate`: the answer from iwo_gates, or
the timeout policy at the deadline; `announce_gate`: edit the messages) and `finish`. Every value the body branches on
comes from a step's recorded output, so a replay after kill -9 takes the same path and
re-runs nothing that finished. Steps are idempotent, so DBOS may retry them.

The daemon installs a Runtime (config, home, ledger, dispatcher) before launching DBOS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dbos import DBOS
from dbos._error import DBOSMaxStepRetriesExceeded, DBOSWorkflowCancelledError

from iwo_lite import roles
from iwo_lite.config import Config
from iwo_lite.db import WORKFLOW_NAME, Home, iso_utc, parse_utc
from iwo_lite.dispatch import DispatchRequest, Dispatcher
from iwo_lite.handoff import AgentAnswer, handoff_name, render_handoff, write_once
from iwo_lite.ledger import Ledger

if TYPE_CHECKING:
    from iwo_lite.telegram import TelegramBot

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
    bot: "TelegramBot | None" = None


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
    handoff_dir = runtime.home.handoff_dir(spec_id)
    texts = await _earlier_handoffs(runtime, spec, history, handoff_dir)
    prompt = roles.render_prompt(
        role=role, spec_id=spec_id, step=step, spec_text=spec["text"], brief=brief,
        handoffs=[dict(entry, text=texts[entry["step"]]) for entry in history],
        answers=answers,
    )
    result = await runtime.dispatcher.run(
        DispatchRequest(spec_id=spec_id, workflow_id=spec["workflow_id"], step=step, role=role,
                        prompt=prompt, handoff_dir=handoff_dir)
    )
    answer: AgentAnswer = result.answer
    error = "; ".join(result.errors) if answer.error else None
    handoff_path = handoff_dir / f"{handoff_name(step, role)}.md"
    shown = answer if error is None else AgentAnswer(**{**answer.to_json(), "error": error})
    handoff_text = render_handoff(spec_id=spec_id, step=step, role=role, answer=shown, attempts=result.attempts)
    if not write_once(handoff_path, handoff_text):  # a re-run step: the file written first is the handoff
        handoff_text = _read_text(handoff_path)
    await runtime.ledger.step_finished(
        spec_id, step, verdict=answer.verdict, summary=answer.summary, question=answer.question,
        handoff=str(handoff_path), handoff_text=handoff_text, error=error,
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
    await runtime.ledger.spec_waiting(spec_id, gate_id, question, row["deadline"])
    return {"gate": gate_id, "opened": parse_utc(row["opened_at"]), "deadline": parse_utc(row["deadline"])}


@DBOS.step(name="notify_gate", **STEP_RETRIES)
async def notify_gate(gate_id: str, kind: str, on_timeout: str) -> list:
    """Send the question (kind "question") or a reminder to Telegram; [[chat, message id], ...] sent."""
    runtime = rt()
    if runtime.bot is None:
        return []
    gate = await runtime.ledger.gate_row(gate_id)
    sent = await runtime.bot.send_gate(dict(gate, on_timeout=on_timeout), kind)
    return [list(pair) for pair in sent]


@DBOS.step(name="settle_gate", **STEP_RETRIES)
async def settle_gate(gate_id: str, on_timeout: str) -> dict:
    """The gate's answer if it has one; at the deadline, the timeout policy's; and the time now."""
    runtime = rt()
    row = await runtime.ledger.gate_row(gate_id)
    now = time.time()
    if row["answer"] is None and parse_utc(row["deadline"]) <= now:
        await runtime.ledger.gate_timed_out(gate_id, on_timeout)
        row = await runtime.ledger.gate_row(gate_id)
    return {"answer": row["answer"], "note": row["note"] or "", "by": row["answered_by"],
            "via": row["answered_via"], "now": now}


@DBOS.step(name="announce_gate", **STEP_RETRIES)
async def announce_gate(gate_id: str, on_timeout: str) -> None:
    """Edit the gate's Telegram messages to say how it was answered."""
    runtime = rt()
    if runtime.bot is None:
        return
    gate = await runtime.ledger.gate_row(gate_id)
    await runtime.bot.mark_answered(dict(gate, on_timeout=on_timeout), gate["answer"], gate["answered_by"],
                                    gate["answered_via"], gate["note"] or "")


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
        await finish(spec["id"], "failed", _describe(error))
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
    """Open a gate and wait for its answer: recv with a durable deadline, reminders between."""
    question = _gate_question(outcome, reason, reworks, settings["max_rework"])
    on_timeout = settings["on_timeout"]
    gate = await open_gate(spec_id, outcome["step"], outcome["role"], reason, question, settings["gate_timeout"])
    await notify_gate(gate["gate"], "question", on_timeout)
    remind_every = settings["remind_every"]
    next_remind = gate["opened"] + remind_every if remind_every else None
    while True:
        settled = await settle_gate(gate["gate"], on_timeout)
        if settled["answer"] is not None:
            await announce_gate(gate["gate"], on_timeout)
            return dict(settled, gate=gate["gate"])
        now = settled["now"]
        if next_remind is not None and now >= next_remind:
            await notify_gate(gate["gate"], "reminder", on_timeout)
            while next_remind <= now:
                next_remind += remind_every
        wake_at = gate["deadline"] if next_remind is None else min(gate["deadline"], next_remind)
        await DBOS.recv_async(topic=gate["gate"], timeout_seconds=max(0.0, wake_at - now))


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


def _describe(error: Exception) -> str:
    """One line for iwo_specs.error: the step's own last error when DBOS gave up retrying it."""
    last = (getattr(error, "errors", None) or [None])[-1]
    if isinstance(error, DBOSMaxStepRetriesExceeded) and last is not None:
        return f"step {error.step_name} failed {error.max_retries} times; last: {type(last).__name__}: {last}"
    return f"{type(error).__name__}: {error}"


async def _earlier_handoffs(runtime: Runtime, spec: dict, history: list[dict], handoff_dir: Path) -> dict[int, str]:
    """The text of each earlier handoff, by step, from the database (any worker may have written it).

    With several workers a spec can move to another machine: its spec.md and missing handoff
    files are written into this home too, so the agent's IWO_HANDOFF_DIR holds them all.
    """
    write_once(runtime.home.spec_dir(spec["id"]) / "spec.md", spec["text"])
    stored = await runtime.ledger.handoff_texts(spec["id"])
    texts: dict[int, str] = {}
    for entry in history:
        local = handoff_dir / f"{entry['name']}.md"
        text = stored.get(entry["step"])
        if text is not None and not local.exists():
            write_once(local, text)
        if text is None:  # written before the database kept handoffs (an older build)
            text = _read_text(Path(entry["handoff"]))
        texts[entry["step"]] = _clip(text, HANDOFF_READ_LIMIT)
    return texts


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(could not read {path}: {error.strerror})"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n…(truncated)\n"
