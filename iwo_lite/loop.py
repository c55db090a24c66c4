"""The six-role loop as one DBOS workflow per spec: deterministic glue, all I/O in steps.

The workflow body only decides (with roles.after_verdict / after_answer) and calls steps:
`admit` (save the spec, snapshot the settings a spec fixes when it starts), `dispatch` (one
role's turn: prompt, detached agent run, handoff file), the human gate (`open_gate`: deadline
computed once; `notify_gate`: question or reminder to the notifiers; `settle_gate`: the
answer from iwo_gates, or the timeout policy at the deadline; `announce_gate`: edit the
messages) and `finish`. Every value the body branches on comes from a step's recorded output
(typed in store/checkpoints.py), so a replay after kill -9 takes the same path and re-runs
nothing that finished. Steps are idempotent, so DBOS may retry them.

The daemon installs a Runtime (config, home, store, dispatcher, notifiers) before launching DBOS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from iwo_lite import durable, roles
from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.config import Config
from iwo_lite.handoff import render_handoff
from iwo_lite.home import Home, handoff_name, read_text, write_once
from iwo_lite.runs.dispatcher import DispatchRequest, Dispatcher
from iwo_lite.store import AsyncStore
from iwo_lite.store import gates as gate_rows
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.store.checkpoints import WORKFLOW_NAME, GateOpened, Outcome, Settings, Settled, SpecInput
from iwo_lite.times import iso_utc, parse_utc

HANDOFF_READ_LIMIT = 200_000  # characters of one handoff file read back into later prompts


@dataclass
class Runtime:
    config: Config
    home: Home
    store: AsyncStore
    dispatcher: Dispatcher
    notifiers: list = field(default_factory=list)


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def rt() -> Runtime:
    if _runtime is None:  # pragma: no cover - a programming error, not a user one
        raise RuntimeError("iwo-lite loop used before the daemon installed its runtime")
    return _runtime


# -- steps ---------------------------------------------------------------------------------


@durable.step(name="admit", **durable.STEP_RETRIES)
async def admit(spec: SpecInput) -> Settings:
    """Save spec.md (once), mark the spec running, and snapshot the settings it keeps to its end."""
    runtime = rt()
    runtime.home.save_spec(spec["id"], spec["text"])
    await runtime.store.run(spec_rows.admitted(spec["id"], spec["title"], spec.get("source"), spec.get("parent_id")))
    return runtime.config.admission_settings()  # type: ignore[return-value]


@durable.step(name="dispatch", **durable.STEP_RETRIES)
async def dispatch(spec: SpecInput, step: int, role: str, history: list[Outcome], answers: list[dict]) -> Outcome:
    """One role's turn: build the prompt, run the agent (detached, re-attachable), write the handoff."""
    runtime = rt()
    spec_id = spec["id"]
    await runtime.store.run(spec_rows.at_step(spec_id, step, role))
    await runtime.store.run(run_rows.step_started(spec_id, step, role))
    role_config = runtime.config.roles[role]
    brief = read_text(role_config.prompt_file) if role_config.prompt_file else None
    handoff_dir = runtime.home.handoff_dir(spec_id)
    texts = await _earlier_handoffs(runtime, spec, history)
    prompt = roles.render_prompt(
        role=role, spec_id=spec_id, step=step, spec_text=spec["text"], brief=brief,
        handoffs=[dict(entry, text=texts[entry["step"]]) for entry in history],
        answers=answers,
    )
    result = await runtime.dispatcher.run(
        DispatchRequest(spec_id=spec_id, workflow_id=spec["workflow_id"], step=step, role=role,
                        prompt=prompt, handoff_dir=handoff_dir, cwd=runtime.config.workdir)
    )
    answer: AgentAnswer = result.answer
    error = "; ".join(result.errors) if answer.error else None
    handoff_path = runtime.home.handoff_path(spec_id, step, role)
    shown = answer if error is None else AgentAnswer(**{**answer.to_json(), "error": error})
    handoff_text = render_handoff(spec_id=spec_id, step=step, role=role, answer=shown, attempts=result.attempts)
    if not write_once(handoff_path, handoff_text):  # a re-run step: the file written first is the handoff
        handoff_text = read_text(handoff_path)
    await runtime.store.run(run_rows.step_finished(
        spec_id, step, verdict=answer.verdict, summary=answer.summary, question=answer.question,
        handoff=str(handoff_path), handoff_text=handoff_text, error=error))
    return {
        "name": handoff_name(step, role), "step": step, "role": role, "verdict": answer.verdict,
        "summary": answer.summary, "question": answer.question, "error": error,
        "handoff": str(handoff_path), "attempts": result.attempts,
    }


@durable.step(name="open_gate", **durable.STEP_RETRIES)
async def open_gate(spec_id: str, step: int, role: str, reason: str, question: str, timeout_s: float) -> GateOpened:
    """Record the gate and its deadline (computed once: a re-run keeps the first deadline)."""
    runtime = rt()
    gate_id = gate_rows.gate_id_for(spec_id, step)
    now = time.time()
    row = await runtime.store.run(gate_rows.opened(gate_id, spec_id, step, role, reason, question,
                                                   iso_utc(now), iso_utc(now + timeout_s)))
    await runtime.store.run(spec_rows.waiting(spec_id, gate_id, question, row["deadline"]))
    return {"gate": gate_id, "opened": parse_utc(row["opened_at"]), "deadline": parse_utc(row["deadline"])}


@durable.step(name="notify_gate", **durable.STEP_RETRIES)
async def notify_gate(gate_id: str, kind: str, on_timeout: str) -> list:
    """Send the question (kind "question") or a reminder to every notifier; the message refs sent."""
    runtime = rt()
    if not runtime.notifiers:
        return []
    gate = dict(await runtime.store.run(gate_rows.row(gate_id)), on_timeout=on_timeout)
    sent: list[str] = []
    for notifier in runtime.notifiers:
        sent += [f"{notifier.name}:{ref}" for ref in await notifier.send_gate(gate, kind)]
    return sent


@durable.step(name="settle_gate", **durable.STEP_RETRIES)
async def settle_gate(gate_id: str, on_timeout: str) -> Settled:
    """The gate's answer if it has one; at the deadline, the timeout policy's; and the time now."""
    runtime = rt()
    row = await runtime.store.run(gate_rows.row(gate_id))
    now = time.time()
    if row["answer"] is None and parse_utc(row["deadline"]) <= now:
        await runtime.store.run(gate_rows.timed_out(gate_id, on_timeout))
        row = await runtime.store.run(gate_rows.row(gate_id))
    elif row["answer"] is None:  # still open: the spec waits on it (again, after a resume)
        await runtime.store.run(spec_rows.waiting(row["spec_id"], gate_id, row["question"], row["deadline"]))
    return {"answer": row["answer"], "note": row["note"] or "", "by": row["answered_by"],
            "via": row["answered_via"], "now": now}


@durable.step(name="announce_gate", **durable.STEP_RETRIES)
async def announce_gate(gate_id: str, on_timeout: str) -> None:
    """Edit the gate's messages to say how it was answered."""
    runtime = rt()
    if not runtime.notifiers:
        return
    gate = dict(await runtime.store.run(gate_rows.row(gate_id)), on_timeout=on_timeout)
    for notifier in runtime.notifiers:
        await notifier.mark_answered(gate)


@durable.step(name="finish", **durable.STEP_RETRIES)
async def finish(spec_id: str, state: str, error: str | None) -> None:
    await rt().store.run(spec_rows.finished(spec_id, state, error))


# -- the workflow --------------------------------------------------------------------------


@durable.workflow(name=WORKFLOW_NAME, max_recovery_attempts=durable.MAX_RECOVERY_ATTEMPTS)
async def spec_workflow(spec: SpecInput) -> dict:
    """Run one spec through planner -> builder -> reviewer -> tester -> deployer -> docs."""
    # A fork runs the same input under a new workflow id: the workflow id is the spec id.
    spec = dict(spec, id=durable.workflow_id(), workflow_id=durable.workflow_id())  # type: ignore[assignment]
    try:
        state = await _run_loop(spec)
    except durable.WorkflowCancelled:
        raise
    except Exception as error:  # a bug or a broken home: record it; `resume` retries from here
        await finish(spec["id"], "failed", _describe(error))
        raise
    await finish(spec["id"], state, None)
    return {"state": state}


async def _run_loop(spec: SpecInput) -> str:
    settings = await admit(spec)
    history: list[Outcome] = []
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


async def _gate(spec_id: str, outcome: Outcome, reason: str, reworks: int, settings: Settings) -> dict:
    """Open a gate and wait for its answer: recv with a durable deadline, reminders between."""
    question = roles.gate_question(outcome, reason, reworks, settings["max_rework"])
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
        await durable.recv(gate["gate"], max(0.0, wake_at - now))


def _describe(error: Exception) -> str:
    """One line for iwo_specs.error: the step's own last error when DBOS gave up retrying it."""
    last = (getattr(error, "errors", None) or [None])[-1]
    if isinstance(error, durable.StepRetriesExceeded) and last is not None:
        return f"step {error.step_name} failed {error.max_retries} times; last: {type(last).__name__}: {last}"
    return f"{type(error).__name__}: {error}"


async def _earlier_handoffs(runtime: Runtime, spec: SpecInput, history: list[Outcome]) -> dict[int, str]:
    """The text of each earlier handoff, by step, from the database (any worker may have written it).

    With several workers a spec can move to another machine: its spec.md and missing handoff
    files are written into this home too, so the agent's IWO_HANDOFF_DIR holds them all.
    """
    runtime.home.save_spec(spec["id"], spec["text"])
    stored = await runtime.store.run(run_rows.handoff_texts(spec["id"]))
    texts: dict[int, str] = {}
    for entry in history:
        local = runtime.home.handoff_path(spec["id"], entry["step"], entry["role"])
        text = stored.get(entry["step"])
        if text is not None and not local.exists():
            write_once(local, text)
        if text is None:  # written before the database kept handoffs (an older build)
            text = read_text(Path(entry["handoff"]))
        texts[entry["step"]] = _clip(text, HANDOFF_READ_LIMIT)
    return texts


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n…(truncated)\n"
