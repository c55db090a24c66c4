"""The six-role loop as one DBOS workflow per spec: deterministic glue, all I/O in steps.

The workflow body only decides (roles.after_verdict / after_answer) and calls steps, per spec:

    admit                        save the spec, fix its settings (config.ADMISSION, the workspace)
    per dispatch NN:
      prepare                    the budget check, the spec's worktree (made or repaired), its start commit
      dispatch                   one role's turn: prompt, detached agent run(s), handoff file
      [pause, DBOS sleep]        an overload or usage limit: wait durably, then continue the dispatch
      commit                     worktree mode: what the agent left uncommitted, one commit on iwo/<id>
    gates                        open_gate (deadline computed once), notify_gate (outbox), settle_gate
                                 (the answer, or the timeout policy at the deadline), announce_gate
    end                          finish_workspace (keep / merge / done command), finish (state, outbox)

Every value the body branches on comes from a step's recorded output (typed in
store/checkpoints.py), so a replay after kill -9 takes the same path and re-runs nothing that
finished. Steps are idempotent (DBOS may run one again after a crash): rows are upserts, files
are written once, git operations find what an earlier run of theirs did, outbox events have keys.

The daemon installs a Runtime (config, home, store, dispatcher) before launching DBOS.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
    settings = dict(config.admission_settings(), priority=time.time(), **_workspace_settings(config, spec, row))
    if settings["workspace"] == "worktree":  # recorded as ours when free; else prepare asks
        await _claim_branch(runtime, spec["id"], workspace.spec_branch(spec["id"]), settings, settings["base"])
    return settings  # type: ignore[return-value]


def _workspace_settings(config: Config, spec: SpecInput, row: dict) -> dict:
    """The spec's workspace: "shared" (the workdir) or "worktree" (branch iwo/<id> from its base)."""
    shared = {"workspace": "shared", "repo": None, "prefix": "", "base": None, "base_branch": None}
    if config.workspace == "shared":
        return shared
    repo = workspace.describe_repo(str(config.workdir))
    if not repo["repository"] or not repo["head"]:
        if config.workspace == "worktree":
            raise workspace.WorkspaceError(f"workspace = \"worktree\", but workdir {config.workdir} is not a git "
                                           "repository with a commit")
        return shared
    # the HEAD recorded at submit, and the branch it was on then (None: a detached HEAD, not the branch
    # checked out now); nothing recorded (the workdir was not a repository then): the HEAD now. (A fork
    # never comes here: it replays its parent's admit and starts from the commit its prepare is given.)
    if row.get("base_commit"):
        base, base_branch = row["base_commit"], row.get("base_branch")
    else:
        base, base_branch = repo["head"], repo["branch"]
    return {"workspace": "worktree", "repo": repo["toplevel"], "prefix": repo["prefix"], "base": base,
            "base_branch": base_branch}


@durable.step(name="prepare", **durable.STEP_RETRIES)
async def prepare(spec_id: str, step: int, role: str, settings: Settings, head: str | None) -> dict:
    """Before a dispatch: the budget check, and (worktree mode) the spec's worktree made or repaired
    on its branch at `head` (the commit after the previous dispatch). {"step", "cwd", "start",
    "budget": budget.check's answer}."""
    runtime = rt()
    await runtime.store.run(spec_rows.at_step(spec_id, step, role))
    checked = await runtime.store.run(budget.check(runtime.config, spec_id, time.time()))
    cwd, start, blocked = str(runtime.config.workdir), None, None
    if settings["workspace"] == "worktree":
        branch = workspace.spec_branch(spec_id)  # a fork's own branch, though its settings are its parent's
        foreign = await _claim_branch(runtime, spec_id, branch, settings, head)
        if foreign:  # not ours: never built on without a yes (adopt_branch)
            return {"step": step, "cwd": cwd, "start": None, "budget": checked, "blocked": foreign, "foreign": True}
        made = await asyncio.to_thread(_ensure_worktree, runtime, spec_id, branch, settings, head)
        if "error" in made:
            blocked = made["error"]
        else:
            cwd, start = os.path.join(made["path"], settings["prefix"]), made["head"]
            await runtime.store.run(spec_rows.on_branch(spec_id, branch, start))
    return {"step": step, "cwd": cwd, "start": start, "budget": checked, "blocked": blocked}


async def _claim_branch(runtime: Runtime, spec_id: str, branch: str, settings: Settings, head: str | None) -> str | None:
    """The durable record of which branches this home made: the spec's `branch` column, written
    before the branch is made (so a kill between the two leaves it ours). A spec without it whose
    `iwo/<id>` already exists at another commit than the one it would start from — made by another
    home meanwhile, or one since deleted — gets the question to ask instead (None: the branch is ours)."""
    row = await runtime.store.run(spec_rows.base(spec_id))
    if row is None or row.get("branch"):
        return None
    repo = _spec_repo(runtime, settings)
    tip = await asyncio.to_thread(workspace.branch_head, repo, branch) if repo else None
    if tip is not None and tip != head:
        start = (head or "")[:12] or "its base"
        return (f"Branch {branch} already exists in {repo} (at {tip[:12]}) and this home did not make it (another"
                f" home's spec with the same id, or one from a deleted home). Approve to build on its commits; or"
                f" delete or rename it first (git branch -m {branch} {branch}-old) and approve to start afresh"
                f" from {start}; reject ends the spec.")
    await runtime.store.run(spec_rows.on_branch(spec_id, branch, None))
    return None


@durable.step(name="adopt_branch", **durable.STEP_RETRIES)
async def adopt_branch(spec_id: str) -> None:
    """A human said yes to building on a branch this home did not make: record it as this spec's."""
    await rt().store.run(spec_rows.on_branch(spec_id, workspace.spec_branch(spec_id), None))


def _spec_repo(runtime: Runtime, settings: Settings) -> str:
    """The repository a worktree spec works in here: the one recorded at admission while it is a
    repository on this machine, else this worker's own workdir's (a spec taken over from a worker
    on another machine, whose path does not exist here)."""
    recorded = settings["repo"]
    if recorded and workspace.is_repository(recorded):
        return recorded
    local = workspace.describe_repo(str(runtime.config.workdir))
    return local["toplevel"] if local["repository"] else recorded


def _ensure_worktree(runtime: Runtime, spec_id: str, branch: str, settings: Settings, head: str | None) -> dict:
    """ensure_worktree; when it cannot (e.g. the branch was made on another machine) and git.remote
    is set, fetch the branch from there and try again. {"error": question} when it still cannot:
    the spec asks the human instead of failing."""
    repo, path = _spec_repo(runtime, settings), str(runtime.home.worktree(spec_id))
    remote = runtime.config.git.remote
    try:
        return workspace.ensure_worktree(repo, path, branch, settings["base"], head=head)
    except workspace.WorkspaceError as error:
        cause = str(error)
    fetched = ""
    if remote:
        try:
            fetched = workspace.fetch_branch(repo, remote, branch)["detail"]
            made = workspace.ensure_worktree(repo, path, branch, settings["base"], head=head)
            log.info("%s: fetched %s from %s to continue it here", spec_id, branch, remote)
            return made
        except workspace.WorkspaceError as error:
            cause = str(error)
    how = (f"fetching it from git.remote {remote} did not help ({fetched or cause})" if remote else
           "git.remote is not set, so it cannot be fetched (set it: the branch is pushed there after each dispatch)")
    return {"error": f"Cannot continue branch {branch} in {repo}: {cause}; {how}. Fix it (e.g. fetch the branch "
                     f"into {repo}), then approve to try again; reject ends the spec."}


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
    """Worktree mode: commit what the dispatch left uncommitted (`NN-role: summary`), push it when
    git.remote is set. {"commit": sha or None, "head": the branch tip}."""
    runtime = rt()
    git = runtime.config.git
    path = str(runtime.home.worktree(spec_id))
    branch = workspace.spec_branch(spec_id)
    try:
        made = await asyncio.to_thread(workspace.commit_dispatch, path, workspace.dispatch_message(step, role, summary),
                                       git.author, workspace.dispatch_tag(spec_id, step), since=start, branch=branch)
    except workspace.WorkspaceError as error:  # the agent broke its worktree: a retry cannot mend it, a human can
        return {"commit": None, "head": start, "error": (
            f"After the {role}'s dispatch {step:02d} its worktree {path} cannot be committed: {error} (did the agent"
            f" switch the worktree's branch, delete the worktree or break its .git?). The branch {branch} still"
            " holds every earlier commit. Approve to make the worktree again from the branch and go on (a worktree"
            " that cannot be mended is moved aside to worktrees/.orphaned/, not deleted); reject ends the spec.")}
    # the dispatch's commit: ours, else the agent's own last commit when it committed by itself
    shown = made["commit"] or (made["head"] if made["changed"] else None)
    await runtime.store.run(run_rows.step_commits(spec_id, step, None, shown))
    await runtime.store.run(spec_rows.on_branch(spec_id, None, made["head"]))
    if git.remote:
        branch = workspace.spec_branch(spec_id)
        pushed = await asyncio.to_thread(workspace.push_branch, path, git.remote, branch)
        if not pushed["ok"]:
            log.warning("%s: pushing %s to %s failed: %s", spec_id, branch, git.remote, pushed.get("detail"))
    return {"commit": made["commit"], "head": made["head"]}


@durable.step(name="repair_worktree", **durable.STEP_RETRIES)
async def repair_worktree(spec_id: str, settings: Settings, head: str | None) -> dict:
    """After a human's yes: the spec's worktree made again from its branch (a broken or missing one
    moved aside or re-made; a switched branch switched back). {"error"} when it still cannot be."""
    runtime = rt()
    branch, path = workspace.spec_branch(spec_id), str(runtime.home.worktree(spec_id))
    made = await asyncio.to_thread(_ensure_worktree, runtime, spec_id, branch, settings, head)
    if "error" in made:  # e.g. switched to another branch with changes: set it aside, make it anew
        aside = await asyncio.to_thread(workspace.set_aside, _spec_repo(runtime, settings), path)
        log.warning("%s: worktree %s set aside to %s, made again from %s", spec_id, path, aside, branch)
        made = await asyncio.to_thread(_ensure_worktree, runtime, spec_id, branch, settings, head)
    return {"error": made["error"]} if "error" in made else {"head": made["head"], "repaired": made["repaired"]}


@durable.step(name="finish_workspace", **durable.STEP_RETRIES)
async def finish_workspace(spec_id: str, state: str, settings: Settings, title: str) -> dict:
    """The end of a worktree spec: git.on_done (keep / merge / command) when it is done; the
    worktree removed once nothing more is to be done there. {"ok", "question"}."""
    runtime = rt()
    git = runtime.config.git
    repo, branch = await asyncio.to_thread(_spec_repo, runtime, settings), workspace.spec_branch(spec_id)
    result = {"ok": True, "question": ""}
    if state == "done" and git.on_done == "merge" and not settings["base_branch"]:
        # submitted on a detached HEAD: no branch to merge into, and asking could never succeed
        result["note"] = f"not merged: the workdir was on no branch (a detached HEAD) at submit; {branch} is kept"
        log.warning("%s: %s", spec_id, result["note"])
    elif state == "done" and git.on_done == "merge":
        try:
            merged = await asyncio.to_thread(workspace.merge_branch, repo, branch, settings["base_branch"],
                                             f"Merge {branch}: {title}", git.author)
        except workspace.WorkspaceError as error:  # the checkout is in a state only its owner can mend: ask
            merged = {"ok": False, "reason": "error", "files": [], "detail": str(error)}
        if not merged["ok"]:
            files = ", ".join(merged["files"][:10])
            result = {"ok": False, "question": (
                f"Merging {branch} into {settings['base_branch']} in {repo} failed: {merged['reason']}"
                + (f" ({files})" if files else "") + f". {merged['detail']} Fix it (the workdir must be clean and on "
                f"{settings['base_branch']}), then approve to merge again; reject leaves the branch unmerged.")}
    elif state == "done" and git.on_done == "command" and git.done_command:
        ran = await asyncio.to_thread(workspace.run_done_command, git.done_command, str(runtime.config.workdir), branch,
                               spec_id, title)
        log.info("%s: git.done_command exited %s: %s", spec_id, ran["exit_code"], ran["output"][-500:].strip())
        result["done_command"] = {"argv": ran["argv"], "exit_code": ran["exit_code"], "output": ran["output"]}
        if not ran["ok"]:
            result.update(ok=False, question=(
                f"git.done_command failed (exit {ran['exit_code']}{', timed out' if ran['timed_out'] else ''}): "
                f"{ran['output'][-500:]} Approve to run it again, reject to leave it."))
    if result["ok"]:
        await asyncio.to_thread(workspace.remove_worktree, repo, str(runtime.home.worktree(spec_id)))
    return result


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
        if settings["workspace"] == "worktree":
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
        while prepared.get("blocked"):  # worktree mode: the branch cannot be continued here
            blocked_gates += 1
            gate_id = gate_rows.gate_id_for(spec["id"], step, f"workspace{blocked_gates}")
            answer = await _gate(gate_id, spec["id"], step, role, roles.GATE_AGENT_FAILED, prepared["blocked"],
                                 settings)
            if answer["answer"] == "reject":
                return "rejected"
            if prepared.get("foreign"):  # a yes to a branch this home did not make
                await adopt_branch(spec["id"])
            prepared = await prepare(spec["id"], step, role, settings, head)
        outcome = await _dispatch_through_pauses(spec, step, role, history, answers, prepared)
        if settings["workspace"] == "worktree":
            committed = await commit(spec["id"], step, role, outcome["summary"] or outcome["error"] or "",
                                     settings, prepared["start"])
            repo_gates = 0
            while committed.get("error"):  # the agent broke its worktree: ask, then make it again
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
        answer = await _gate(gate_id, spec["id"], 0, "docs", roles.GATE_MERGE, ended["question"], settings)
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
