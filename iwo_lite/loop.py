"""The six-role loop as one DBOS workflow per spec: deterministic glue, all I/O in steps.

The workflow body only decides (roles.after_verdict / after_answer) and calls steps, per spec:

    admit                        save the spec, fix its settings (config.ADMISSION, the workspace)
    per dispatch NN:
      prepare                    the budget check, the spec's workspace made ready (workspace/: its kind)
      dispatch                   one role's turn: prompt, detached agent run(s), handoff file
      [pause, DBOS sleep]        an overload or usage limit: wait durably, then continue the dispatch
      commit                     a kind that commits (worktree): what the agent left, one commit on iwo/<id>
    gates                        open_gate (deadline computed once), notify_gate (outbox), settle_gate
                                 (the answer, or the timeout policy at the deadline), announce_gate
    end                          finish_workspace (the kind's end: keep / merge / done command), finish

Every value the body branches on comes from a step's recorded output (typed in
store/checkpoints.py), so a replay after kill -9 takes the same path and re-runs nothing that
finished. Steps are idempotent (DBOS may run one again after a crash): rows are upserts, files
are written once, git operations find what an earlier run of theirs did, outbox events have keys.

The daemon installs a Runtime (config, home, store, dispatcher) before launching DBOS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from iwo_lite import budget, durable, roles, workspace
from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.config import Config
from iwo_lite.handoff import render_handoff
from iwo_lite.home import Home, handoff_name, read_text, write_once
from iwo_lite.runs.dispatcher import DispatchRequest, Dispatcher
from iwo_lite.store import AsyncStore
from iwo_lite.store import gates as gate_rows
from iwo_lite.store import outbox
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.store.checkpoints import WORKFLOW_NAME, GateOpened, Outcome, Settings, Settled, SpecInput
from iwo_lite.times import iso_utc, parse_utc

log = logging.getLogger("iwo_lite")
HANDOFF_READ_LIMIT = 200_000  # characters of one handoff file read back into later prompts
# What a dispatch's error class means for the loop: the gate it opens.
GATE_FOR_ERROR = {"denied": roles.GATE_PERMISSION_DENIED, "budget": roles.GATE_BUDGET}


@dataclass
class Runtime:
    config: Config
    home: Home
    store: AsyncStore
    dispatcher: Dispatcher
    on_change: object = None  # called after an outbox row is added: a spec ended, waits or paused (the daemon
    # sends the row, and may start another queued spec)


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def rt() -> Runtime:
    if _runtime is None:  # pragma: no cover - a programming error, not a user one
        raise RuntimeError("iwo-lite loop used before the daemon installed its runtime")
    return _runtime


async def _announce(key: str, kind: str, spec_id: str, gate_id: str | None = None) -> None:
    """Add an event to the outbox (once per key) and wake the notifiers."""
    runtime = rt()
    if await runtime.store.run(outbox.added(key, kind, spec_id, gate_id)) and runtime.on_change:
        runtime.on_change()


# -- steps ---------------------------------------------------------------------------------


@durable.step(name="admit", **durable.STEP_RETRIES)
async def admit(spec: SpecInput) -> Settings:
    """Save spec.md (once), record the spec, and fix the settings it keeps to its end."""
    runtime = rt()
    config = runtime.config
    runtime.home.save_spec(spec["id"], spec["text"])
    await runtime.store.run(spec_rows.admitted(spec["id"], spec["title"], spec.get("source"), spec.get("parent_id"),
                                               config.budget.spec_cap_usd))
    row = await runtime.store.run(spec_rows.base(spec["id"])) or {}
    settings = dict(config.admission_settings(), priority=time.time(), **workspace.settings_for(config, row))
    await workspace.of(settings).admitted(runtime, spec["id"], settings)
    return settings  # type: ignore[return-value]


@durable.step(name="prepare", **durable.STEP_RETRIES)
async def prepare(spec_id: str, step: int, role: str, settings: Settings, head: str | None) -> dict:
    """Before a dispatch: the budget check, and the spec's workspace made ready (worktree mode: its
    worktree made or repaired on its branch at `head`, the commit after the previous dispatch).
    {"step", "cwd", "start", "budget": budget.check's answer, "blocked": a question or None}."""
    runtime = rt()
    await runtime.store.run(spec_rows.at_step(spec_id, step, role))
    checked = await runtime.store.run(budget.check(runtime.config, spec_id, time.time()))
    ready = await workspace.of(settings).prepare(runtime, spec_id, settings, head)
    return {"step": step, "budget": checked, **ready}


@durable.step(name="adopt_branch", **durable.STEP_RETRIES)
async def adopt_branch(spec_id: str, settings: Settings | None = None) -> None:
    """A human said yes to building on something this home did not make (a branch): take it as the spec's."""
    await workspace.of(settings or {"workspace": "worktree"}).adopt(rt(), spec_id)


@durable.step(name="budget_approved", **durable.STEP_RETRIES)
async def budget_approved(spec_id: str, over: str, cap_usd: float | None = None) -> None:
    """Approve at a budget gate: the spec's cap raised (once: `cap_usd` is the cap the gate showed), or
    the spec let go on for the rest of the UTC day."""
    runtime = rt()
    await runtime.store.run(budget.approved(runtime.config, spec_id, over, time.time(), cap_usd))


@durable.step(name="dispatch", **durable.STEP_RETRIES)
async def dispatch(spec: SpecInput, step: int, role: str, history: list[Outcome], answers: list[dict],
                   prepared: dict, carry: dict | None) -> Outcome:
    """One role's turn: build the prompt, run the agent (detached, re-attachable), write the handoff.
    A pause (overload, usage limit) returns before the handoff, with where to continue (`carry`)."""
    runtime = rt()
    spec_id = spec["id"]
    if carry:  # a dispatch continued after a pause: running again (prepare marked the step itself)
        await runtime.store.run(spec_rows.at_step(spec_id, step, role))
    await runtime.store.run(run_rows.step_started(spec_id, step, role))
    if prepared["start"]:
        await runtime.store.run(run_rows.step_commits(spec_id, step, prepared["start"], None))
    role_config = runtime.config.roles[role]
    brief = read_text(role_config.prompt_file) if role_config.prompt_file else None
    handoff_dir = runtime.home.handoff_dir(spec_id)
    texts, stored = await _earlier_handoffs(runtime, spec, history)
    prompt = roles.render_prompt(
        role=role, spec_id=spec_id, step=step, spec_text=spec["text"], brief=brief,
        handoffs=[dict(entry, text=texts[entry["step"]]) for entry in history],
        answers=answers,
    )
    result = await runtime.dispatcher.run(DispatchRequest(
        spec_id=spec_id, workflow_id=spec["workflow_id"], step=step, role=role, prompt=prompt,
        handoff_dir=handoff_dir, cwd=Path(prepared["cwd"]), carry=carry,
        budget_left_usd=prepared["budget"]["left_usd"], priority=spec.get("priority") or 0.0))
    answer: AgentAnswer = result.answer
    base = {"name": handoff_name(step, role), "step": step, "role": role, "attempts": result.attempts,
            "error_class": answer.error_class, "denials": list(answer.denials), "pause": result.pause,
            "carry": result.carry}
    if result.pause:
        return dict(base, verdict=None, summary="", question="", error=answer.error, handoff="")  # type: ignore
    error = "; ".join(result.errors) if answer.error else None
    if answer.error_class in GATE_FOR_ERROR:  # the cause is the answer itself: say it first
        error = answer.error
    handoff_path = runtime.home.handoff_path(spec_id, step, role)
    shown = answer if error is None else AgentAnswer(**{**answer.to_json(), "error": error})
    handoff_text = render_handoff(spec_id=spec_id, step=step, role=role, answer=shown, attempts=result.attempts)
    if step in stored:  # a re-run step: the first handoff written is the handoff
        handoff_text = stored[step]
    _write_handoff(handoff_path, handoff_text)
    await runtime.store.run(run_rows.step_finished(
        spec_id, step, verdict=answer.verdict, summary=answer.summary, question=answer.question,
        handoff=str(handoff_path), handoff_text=handoff_text, error=error))
    return dict(base, verdict=answer.verdict, summary=answer.summary, question=answer.question, error=error,
                handoff=str(handoff_path))  # type: ignore[return-value]


def _write_handoff(path: Path, text: str) -> None:
    """The handoff file is ours: an agent's file of that name in $IWO_HANDOFF_DIR is replaced."""
    if path.exists() and read_text(path) != text:
        path.unlink()
    write_once(path, text)


@durable.step(name="pause", **durable.STEP_RETRIES)
async def pause(spec_id: str, step: int, number: int, until: float, reason: str) -> None:
    """Record the pause (status shows paused_until / pause_reason) and announce it once."""
    runtime = rt()
    await runtime.store.run(spec_rows.paused(spec_id, iso_utc(until), reason))
    await _announce(f"spec:{spec_id}:paused:{step:02d}:{number}", "paused", spec_id)


@durable.step(name="commit", **durable.STEP_RETRIES)
async def commit(spec_id: str, step: int, role: str, summary: str, settings: Settings, start: str | None) -> dict:
    """After a dispatch, for a kind that commits (worktree): what the agent left uncommitted, one
    commit. {"commit": sha or None, "head": the branch tip} or {"error": the question to ask}."""
    return await workspace.of(settings).commit(rt(), spec_id, step, role, summary, settings, start)


@durable.step(name="repair_worktree", **durable.STEP_RETRIES)
async def repair_worktree(spec_id: str, settings: Settings, head: str | None) -> dict:
    """After a human's yes to a failed commit: the workspace made usable again. {"error"} when it
    still cannot be."""
    return await workspace.of(settings).repair(rt(), spec_id, settings, head)


@durable.step(name="finish_workspace", **durable.STEP_RETRIES)
async def finish_workspace(spec_id: str, state: str, settings: Settings, title: str) -> dict:
    """The end of a spec's workspace (worktree: keep / merge / done command, then the worktree
    removed). {"ok", "question"}."""
    return await workspace.of(settings).finish(rt(), spec_id, state, settings, title)


@durable.step(name="open_gate", **durable.STEP_RETRIES)
async def open_gate(gate_id: str, spec_id: str, step: int, role: str, reason: str, question: str,
                    timeout_s: float) -> GateOpened:
    """Record the gate and its deadline (computed once: a re-run keeps the first deadline)."""
    runtime = rt()
    now = time.time()
    row = await runtime.store.run(gate_rows.opened(gate_id, spec_id, step, role, reason, question,
                                                   iso_utc(now), iso_utc(now + timeout_s)))
    await runtime.store.run(spec_rows.waiting(spec_id, gate_id, question, row["deadline"]))
    return {"gate": gate_id, "opened": parse_utc(row["opened_at"]), "deadline": parse_utc(row["deadline"])}


@durable.step(name="notify_gate", **durable.STEP_RETRIES)
async def notify_gate(gate_id: str, kind: str, number: int) -> None:
    """The question (kind "question") or the n-th reminder, to the notifiers (through the outbox)."""
    key = f"gate:{gate_id}:question" if kind == "question" else f"gate:{gate_id}:reminder:{number}"
    await _announce(key, kind, gate_rows.spec_of(gate_id), gate_id)


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
async def announce_gate(gate_id: str) -> None:
    """The gate's messages say how it was answered (through the outbox)."""
    await _announce(f"gate:{gate_id}:answered", "answered", gate_rows.spec_of(gate_id), gate_id)


@durable.step(name="finish", **durable.STEP_RETRIES)
async def finish(spec_id: str, state: str, error: str | None) -> None:
    await rt().store.run(spec_rows.finished(spec_id, state, error))
    await _announce(f"spec:{spec_id}:{state}", state, spec_id)


# -- the workflow --------------------------------------------------------------------------


@durable.workflow(name=WORKFLOW_NAME, max_recovery_attempts=durable.MAX_RECOVERY_ATTEMPTS)
async def spec_workflow(spec: SpecInput) -> dict:
    """Run one spec through planner -> builder -> reviewer -> tester -> deployer -> docs."""
    # A fork runs the same input under a new workflow id: the workflow id is the spec id.
    spec = dict(spec, id=durable.workflow_id(), workflow_id=durable.workflow_id())  # type: ignore[assignment]
    try:
        settings = await admit(spec)
        spec["priority"] = settings["priority"]
        state = await _run_loop(spec, settings)
        if workspace.of(settings).ends:
            state = await _end_workspace(spec, state, settings)
    except durable.WorkflowCancelled:
        raise
    except Exception as error:  # a bug or a broken home: record it; `resume` retries from here
        await finish(spec["id"], "failed", _describe(error))
        raise
    await finish(spec["id"], state, None)
    return {"state": state}


async def _run_loop(spec: SpecInput, settings: Settings) -> str:
    history: list[Outcome] = []
    answers: list[dict] = []
    reworks = 0
    role: str | None = roles.ROLES[0]
    step = 0
    head = settings["base"]
    budget_stopped = False  # the last call was stopped by --max-budget-usd and no budget gate asked since
    while role is not None:
        step += 1
        prepared = await prepare(spec["id"], step, role, settings, head)
        budget_gates = 0
        while prepared["budget"]["over"]:
            budget_gates += 1
            over = prepared["budget"]["over"]
            gate_id = gate_rows.gate_id_for(spec["id"], step, f"budget{budget_gates}")
            answer = await _gate(gate_id, spec["id"], step, role, roles.GATE_BUDGET, prepared["budget"]["question"],
                                 settings)
            if answer["answer"] == "reject":
                return "rejected"
            await budget_approved(spec["id"], over, prepared["budget"]["cap_usd"])
            budget_stopped = False
            if answer["answer"] == "revise":
                answers.append({"gate": gate_id, "role": role, "answer": "revise", "note": answer["note"]})
                role = "builder"
            prepared = await prepare(spec["id"], step, role, settings, head)
        blocked_gates = 0
        while prepared.get("blocked"):  # the workspace cannot be made ready here (worktree: the branch)
            blocked_gates += 1
            gate_id = gate_rows.gate_id_for(spec["id"], step, f"workspace{blocked_gates}")
            answer = await _gate(gate_id, spec["id"], step, role, roles.GATE_AGENT_FAILED, prepared["blocked"],
                                 settings)
            if answer["answer"] == "reject":
                return "rejected"
            if prepared.get("foreign"):  # a yes to something this home did not make (a branch)
                await adopt_branch(spec["id"], settings)
            prepared = await prepare(spec["id"], step, role, settings, head)
        outcome = await _dispatch_through_pauses(spec, step, role, history, answers, prepared)
        if workspace.of(settings).commits:
            committed = await commit(spec["id"], step, role, outcome["summary"] or outcome["error"] or "",
                                     settings, prepared["start"])
            repo_gates = 0
            while committed.get("error"):  # the agent broke its workspace: ask, then make it again
                repo_gates += 1
                gate_id = gate_rows.gate_id_for(spec["id"], step, f"repo{repo_gates}")
                answer = await _gate(gate_id, spec["id"], step, role, roles.GATE_AGENT_FAILED, committed["error"],
                                     settings)
                if answer["answer"] == "reject":
                    return "rejected"
                await repair_worktree(spec["id"], settings, prepared["start"])
                committed = await commit(spec["id"], step, role, outcome["summary"] or outcome["error"] or "",
                                         settings, prepared["start"])
            head = committed["head"]
        history.append(outcome)
        if outcome["error_class"] == "budget" and not budget_stopped:
            # --max-budget-usd stopped the call: the cap is reached, so the next dispatch's budget
            # check asks (what was spent on what); approve runs this role again
            budget_stopped = True
            continue
        budget_stopped = False
        if outcome["error"]:
            reason = GATE_FOR_ERROR.get(outcome["error_class"], roles.GATE_AGENT_FAILED)
            nxt = roles.Next("gate", gate_reason=reason)
        else:
            nxt = roles.after_verdict(role, outcome["verdict"], reworks, settings["max_rework"])
            reworks += int(nxt.is_rework)
        if nxt.kind == "role":
            role = nxt.role
            continue
        if nxt.kind == "done":
            return "done"
        question = roles.gate_question(outcome, nxt.gate_reason, reworks, settings["max_rework"])
        gate_id = gate_rows.gate_id_for(spec["id"], step)
        answer = await _gate(gate_id, spec["id"], step, role, nxt.gate_reason, question, settings)
        if answer["answer"] == "reject":
            return "rejected"
        answers.append({"gate": gate_id, "role": role, "answer": answer["answer"], "note": answer["note"]})
        after = roles.after_answer(role, nxt.gate_reason, answer["answer"])
        if after.kind == "done":
            return "done"
        role = after.role
    return "done"


async def _dispatch_through_pauses(spec: SpecInput, step: int, role: str, history: list[Outcome],
                                   answers: list[dict], prepared: dict) -> Outcome:
    """Dispatch; while it pauses (an overload, a rate or usage limit), sleep durably and continue it."""
    outcome = await dispatch(spec, step, role, history, answers, prepared, None)
    pauses = 0
    while outcome["pause"]:
        pauses += 1
        until = outcome["pause"]["until"]
        await pause(spec["id"], step, pauses, until, outcome["pause"]["reason"])
        await durable.sleep(max(0.0, until - time.time()))  # the wake-up time is recorded: kill -9 keeps it
        outcome = await dispatch(spec, step, role, history, answers, prepared, outcome["carry"])
    return outcome


async def _end_workspace(spec: SpecInput, state: str, settings: Settings) -> str:
    """keep / merge / command; a failed merge or command asks the human (approve tries again)."""
    tries = 0
    while True:
        ended = await finish_workspace(spec["id"], state, settings, spec["title"])
        if ended["ok"]:
            return state
        tries += 1
        gate_id = gate_rows.gate_id_for(spec["id"], 0, f"merge{tries}")
        answer = await _gate(gate_id, spec["id"], 0, roles.ROLES[-1], roles.GATE_MERGE, ended["question"], settings)
        if answer["answer"] == "reject":
            state = "rejected"  # one more round: finish_workspace then only removes the worktree


async def _gate(gate_id: str, spec_id: str, step: int, role: str, reason: str, question: str,
                settings: Settings) -> dict:
    """Open a gate and wait for its answer: recv with a durable deadline, reminders between."""
    on_timeout = settings["on_timeout"]
    gate = await open_gate(gate_id, spec_id, step, role, reason, question, settings["gate_timeout"])
    await notify_gate(gate["gate"], "question", 0)
    remind_every = settings["remind_every"]
    next_remind = gate["opened"] + remind_every if remind_every else None
    reminders = 0
    while True:
        settled = await settle_gate(gate["gate"], on_timeout)
        if settled["answer"] is not None:
            await announce_gate(gate["gate"])
            return dict(settled, gate=gate["gate"])
        now = settled["now"]
        if next_remind is not None and now >= next_remind:
            reminders += 1
            await notify_gate(gate["gate"], "reminder", reminders)
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


async def _earlier_handoffs(runtime: Runtime, spec: SpecInput, history: list[Outcome]
                            ) -> tuple[dict[int, str], dict[int, str]]:
    """The text of each earlier handoff, by step, from the database (any worker may have written it);
    and every handoff text stored so far (a re-run step finds its own there).

    With several workers a spec can move to another machine: its spec.md and missing handoff
    files are written into this home too, so the agent's IWO_HANDOFF_DIR holds them all.
    """
    runtime.home.save_spec(spec["id"], spec["text"])
    stored = await runtime.store.run(run_rows.handoff_texts(spec["id"]))
    texts: dict[int, str] = {}
    for entry in history:
        local = runtime.home.handoff_path(spec["id"], entry["step"], entry["role"])
        text = stored.get(entry["step"])
        if text is not None:
            _write_handoff(local, text)
        else:  # written before the database kept handoffs (an older build)
            text = read_text(Path(entry["handoff"]))
        texts[entry["step"]] = _clip(text, HANDOFF_READ_LIMIT)
    return texts, stored


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n…(truncated)\n"
