"""One dispatch's agent processes: attempts, retries, pauses, sessions, the concurrency limits,
takeover, the stall watchdog, live progress, kill and collect.

Owns the attempt loop of a dispatch. Each attempt is started once, journaled in its run
directory (runs/journal.py) and recorded in iwo_attempts *before* its process starts (where
its run directory is, on which host, which Claude session it is). On recovery an attempt is
collected when it finished (an exit status or a kill marker), re-attached when its process is
still alive, and started only when it never started: each dispatch is paid for once.
No DBOS here: the loop wraps `Dispatcher.run` in a DBOS step.

What happens after an attempt depends on its answer's error class (agents/answer.py):

    none                       the dispatch is done
    denied, fatal, max_turns,  no retry: the loop opens a gate (the budget one for "budget")
    budget, cancelled
    overloaded, rate_limited,  no retry burned: the dispatch returns a pause (until a reset time,
    usage_limit                or a backoff) that the loop sleeps durably, then continues it
    interrupted                the run died with the machine (no exit status, seen after a
                               restart): continued by resuming its session, not counted
    no_session,                the session cannot be resumed here / was already started: the
    session_in_use             next attempt starts afresh / resumes it; not counted
    retry, stalled             counted against agent.retries; the next attempt resumes the session

The agent of each role comes from agents.for_roles (roles.<role>.agent, else agent.kind); this
module knows only the interface of agents/base.py, never which kind runs. Each attempt asks its
agent for a session (`Agent.session`, keyed by database, spec, dispatch and attempt: Claude Code
derives its session id from that key, so a replayed step that tried to start it again would be
refused by the CLI itself; Codex names its thread when it starts, read back from its output); a
continued attempt resumes the previous attempt's session when the agent can resume it on this
machine, else it starts afresh and the trace says why.

While a streaming agent runs, its stdout is read every PROGRESS_S (`Agent.stream_reader`): the
turns, the tool in use, tokens and cost so far go to iwo_attempts.progress at most every
PROGRESS_WRITE_S (never on every event), and a run with no new output for agent.stall_timeout
is killed ("stalled") and continued. Agents that print once at the end: no progress, no stall
watchdog (agent.timeout still applies).

Several workers on one Postgres database: each attempt's row names its run directory and
host. A worker that takes over a spec re-attaches to (or collects) a run on its own host
through that path, collects a finished run it can read on another host, and otherwise says
so and runs the call again (a pid means nothing on another machine).
`agent.global_max_concurrent` adds slots in iwo_agent_slots that every worker shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from iwo_lite import sandbox
from iwo_lite.agents import refusals
from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.agents.base import SessionKey
from iwo_lite.config import Config
from iwo_lite.home import Home
from iwo_lite.runs import launcher
from iwo_lite.runs.journal import HOST, AwakeClock, RunDir, launch_text, process_start_time
from iwo_lite.runs.slots import FairSlots
from iwo_lite.store import AsyncStore
from iwo_lite.store import runs as rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.times import iso_utc

LAUNCH_GRACE_S = 3.0  # how long a run with a `launch` marker but no pid may take to show one
POLL_S = 0.25  # how often a run that is not our child (re-attached, tmux) is checked
PROGRESS_S = 1.0  # how often a streaming run's output is read
PROGRESS_WRITE_S = 2.0  # at most this often a changed progress is written to the database
SLOT_POLL_S = 0.5  # how often a dispatch waiting for a global slot asks again
SETTLE_S = 1.0  # after such a wake-up, how long the run's processes get to catch up before any deadline
CANCEL_CHECK_S = 5.0  # how often a running attempt looks whether its spec was cancelled (from another machine)
MAX_ATTEMPTS = 50  # a safety net over attempts that are not counted as tries (interrupted, no session)
OUT_OF_REACH = "is out of reach from"
CANCELLED = "agent run stopped by `iwo-lite cancel`"
NO_RETRY = ("denied", "fatal", "max_turns", "budget", "cancelled")
PAUSES = {"overloaded": "overloaded", "rate_limited": "rate limited", "usage_limit": "usage limit"}
NOT_COUNTED = ("interrupted", "no_session", "session_in_use")
BUDGET_SPENT = "the spec's budget is spent by this dispatch's attempts (no retry past the cap)"
OVER_BUDGET = "stopped: its cost so far reached what the spec may still spend (its CLI has no budget limit)"
BACKOFF_S = (60, 120, 240, 480, 900)  # overload / rate limit: the n-th pause waits this long (then 900 s)
log = logging.getLogger("iwo_lite")


@dataclass(frozen=True)
class DispatchRequest:
    spec_id: str
    workflow_id: str
    step: int
    role: str
    prompt: str
    handoff_dir: Path
    cwd: Path  # where the agent works: the shared workdir, or the spec's own worktree
    carry: dict | None = None  # continuing a paused dispatch: where it left off (DispatchResult.carry)
    budget_left_usd: float | None = None  # what the spec may still spend (Claude: --max-budget-usd)
    priority: float = 0.0  # lower first: the spec's submission time (older specs get agents first)


@dataclass(frozen=True)
class DispatchResult:
    answer: AgentAnswer  # the successful attempt's, else the last failure's
    attempts: int  # the number of the last attempt
    errors: tuple[str, ...]
    pause: dict | None = None  # {"reason", "until" (epoch s)}: sleep, then continue with `carry`
    carry: dict = field(default_factory=dict)


def _left(budget_left_usd: float | None, spent_usd: float) -> float | None:
    """What an attempt may spend: the dispatch's budget less what its earlier attempts spent."""
    return None if budget_left_usd is None else budget_left_usd - spent_usd


class Dispatcher:
    """Runs one dispatch: its attempts, each started once, re-attached after a crash."""

    def __init__(self, config: Config, home: Home, store: AsyncStore, agents, unset_env: tuple[str, ...] = ()):
        self.config = config
        self.home = home
        self.store = store
        # role -> its agent (agents.for_roles; agents/base.py's interface); one agent: every role
        self.agents = agents if isinstance(agents, dict) else {role: agents for role in config.roles}
        self.unset_env = unset_env  # secrets the agents must not see (notifier tokens, the database URL)
        self.slots = FairSlots(config.agent.max_concurrent)
        self.session_namespace = config.database_url_redacted

    async def run(self, request: DispatchRequest) -> DispatchResult:
        carry = dict(request.carry or {})
        attempt = carry.get("next_attempt", 1) - 1
        tries = carry.get("tries", 0)
        spent = carry.get("spent_usd", 0.0)  # by this dispatch's earlier attempts: not to be spent again
        resume_from = carry.get("resume_from")
        note = carry.get("note")
        total = self.config.agent.retries + 1
        errors: list[str] = []
        answer = AgentAnswer(error="no attempt ran")
        while attempt < MAX_ATTEMPTS and (tries < total or self._started(request, attempt + 1)):
            if self._spent_out(request, spent) and not self._started(request, attempt + 1):
                # the earlier attempts spent what was left: no new call before the budget gate asks
                errors.append(f"attempt {attempt + 1}: not started: {BUDGET_SPENT}")
                return DispatchResult(replace(answer, error=f"{answer.error}; {BUDGET_SPENT}", error_class="budget"),
                                      attempt, tuple(errors))
            attempt += 1
            row = await self.store.run(rows.attempt(request.spec_id, request.step, attempt))
            unreachable = await self._unreachable(request, attempt, row)
            if unreachable is not None and OUT_OF_REACH in unreachable:  # not a try of the agent's
                errors.append(f"attempt {attempt}: {unreachable}")
                continue
            if unreachable:
                answer, session = AgentAnswer(error=unreachable, error_class="retry"), None
            else:
                answer, session = await self._attempt(request, attempt, row, resume_from, note,
                                                      _left(request.budget_left_usd, spent))
                session = session or answer.session_id  # a CLI that names its session as it starts (Codex)
            spent += answer.cost_usd
            if answer.error is None:
                return DispatchResult(answer, attempt, tuple(errors))
            errors.append(f"attempt {attempt}: {answer.error}")
            kind = answer.error_class or "retry"
            if kind in NO_RETRY:
                return DispatchResult(answer, attempt, tuple(errors))
            resume_from, note = self._next_session(request, answer, session)
            if kind in PAUSES:
                return self._paused(request, answer, attempt, tries, resume_from, dict(carry, spent_usd=spent), errors)
            if kind not in NOT_COUNTED:
                tries += 1
        return DispatchResult(answer, attempt, tuple(errors))

    @staticmethod
    def _spent_out(request: DispatchRequest, spent_usd: float) -> bool:
        """This dispatch's attempts spent what the spec had left (a retry would go past the cap)."""
        return request.budget_left_usd is not None and spent_usd > 0 and rows.reached(spent_usd,
                                                                                      request.budget_left_usd)

    async def _cancelled(self, request: DispatchRequest) -> bool:
        return await self.store.run(spec_rows.state(request.spec_id)) == "cancelled"

    def _started(self, request: DispatchRequest, attempt: int) -> bool:
        """An attempt that started before a restart is always collected (even if agent.retries was lowered)."""
        return RunDir(self.home.run_dir(request.spec_id, request.step, request.role, attempt)).started()

    def agent(self, role: str):
        """The agent that runs `role`."""
        return self.agents[role]

    def _next_session(self, request: DispatchRequest, answer: AgentAnswer, session: str | None
                      ) -> tuple[str | None, str | None]:
        """(the session the next attempt resumes, or None to start afresh; why, for its trace)."""
        if session is None:
            return None, None
        if answer.error_class == "no_session":
            return None, f"session {session} cannot be resumed on this machine: started afresh"
        return session, None

    def _paused(self, request: DispatchRequest, answer: AgentAnswer, attempt: int, tries: int,
                resume_from: str | None, carry: dict, errors: list[str]) -> DispatchResult:
        """An overload, a rate limit or a usage limit: no retry burned; sleep, then continue."""
        now = time.time()
        reason = PAUSES[answer.error_class]
        pauses = carry.get("pauses", 0)
        waited = carry.get("waited_s", 0.0)
        if reason == "usage limit":
            wait = (answer.resets_at - now) if answer.resets_at else 3600.0
            wait = max(wait, 0.0) + 5 + zlib.crc32(request.spec_id.encode()) % 55  # after the reset, within a minute
        else:
            wait = BACKOFF_S[min(pauses, len(BACKOFF_S) - 1)]
            if waited + wait > self.config.agent.overload_wait:
                final = replace(answer, error=f"{answer.error}; still {reason} after backing off for "
                                f"{waited / 60:.0f} min in all (agent.overload_wait)", error_class="fatal")
                return DispatchResult(final, attempt, tuple(errors))
        carry = {"next_attempt": attempt + 1, "tries": tries, "resume_from": resume_from,
                 "spent_usd": carry.get("spent_usd", 0.0), "pauses": pauses + 1,
                 "waited_s": waited + (0 if reason == "usage limit" else wait)}
        return DispatchResult(answer, attempt, tuple(errors), pause={"reason": reason, "until": now + wait},
                              carry=carry)

    def _run_dir(self, request: DispatchRequest, attempt: int, row: dict | None) -> RunDir:
        """The attempt's run directory: this home's, or the one its iwo_attempts `row` names on this host."""
        own = RunDir(self.home.run_dir(request.spec_id, request.step, request.role, attempt))
        if own.started() or own.exit_code() is not None:
            return own
        if row is None or Path(row["run_dir"]) == own.path:
            return own
        theirs = RunDir(Path(row["run_dir"]))
        if row["host"] in (None, HOST) or theirs.finished():
            return theirs  # another worker's home on this machine, or a finished run on a shared runs/
        return own

    async def _unreachable(self, request: DispatchRequest, attempt: int, row: dict | None) -> str | None:
        """The error of an attempt (`row`: its iwo_attempts row) started by a worker on another
        host whose run directory is out of reach.

        None: handle the attempt here as usual (ours, or on this host, or its finished run is
        readable). The recorded error when it finished with one (a try of the agent's). Else
        why it is out of reach (not a try: the call runs again here, with a warning).
        """
        if row is None or row["host"] in (None, HOST):
            return None
        if RunDir(Path(row["run_dir"])).finished():
            return None  # a shared runs/ directory: collect it
        if row["finished_at"] is not None and row["error"]:
            return row["error"]
        why = f"its agent run on host {row['host']} {OUT_OF_REACH} {HOST} (that worker stopped); the call runs again here"
        log.warning("%s dispatch %02d (%s) attempt %d: %s", request.spec_id, request.step, request.role, attempt, why)
        if row["finished_at"] is None:
            await self.store.run(rows.attempt_finished(
                request.spec_id, request.step, attempt, exit_code=None, is_error=True, verdict=None, cost_usd=0.0,
                session_id=None, num_turns=None, error=why))
        return why

    async def _attempt(self, request: DispatchRequest, attempt: int, row: dict | None, resume_from: str | None,
                       note: str | None, budget_left: float | None) -> tuple[AgentAnswer, str | None]:
        """Collect, re-attach or start the attempt: (its answer, its session id)."""
        run = self._run_dir(request, attempt, row)
        session = (row or {}).get("session_id")
        if row is not None and row["finished_at"] is None and row["pid"] and not run.started() \
                and row["host"] in (None, HOST):
            return await self._orphan(request, attempt, run, row), session
        if run.finished():
            return await self._collect(request, attempt, run, reattached=True), session
        if run.started():
            await self._await_pid(run)
            if run.recorded_pid() is not None:
                if run.is_live():
                    async with self._slot(request):
                        await self._record_start(request, attempt, run, reattached=True)
                        progress = await self._wait(request, attempt, run, proc=None, budget_left=budget_left)
                    return await self._collect(request, attempt, run, reattached=True, progress=progress), session
                return await self._collect(request, attempt, run, reattached=True, vanished_while_down=True), session
        async with self._slot(request):
            if await self._cancelled(request):  # while it waited for the slot
                return AgentAnswer(error=f"{CANCELLED} before this attempt started", error_class="cancelled"), session
            session, proc = await self._start(request, attempt, run, resume_from, note, budget_left)
            progress = await self._wait(request, attempt, run, proc=proc,
                                        budget_left=budget_left) if proc is not False else None
        return await self._collect(request, attempt, run, reattached=False, progress=progress), session

    async def _orphan(self, request: DispatchRequest, attempt: int, run: RunDir, row: dict) -> AgentAnswer:
        """The attempt started here, but its run directory is gone (deleted while the daemon was down):
        its output is lost with it. Whatever of it still runs is stopped (never two at once), and the
        next attempt continues its session (Claude Code keeps the transcript elsewhere)."""
        from iwo_lite.runs import proctree

        alive = process_start_time(row["pid"]) == row.get("pid_start") if row.get("pid_start") else False
        stopped = await asyncio.to_thread(proctree.kill_tree, row["pid"], launcher.KILL_GRACE_S, run_dir=str(run.path),
                                          start_time=row.get("pid_start")) if alive else 0
        why = (f"its run directory {run.path} was deleted" + (f" while it ran (stopped {stopped} process(es))"
               if stopped else "") + "; its output is lost")
        log.warning("%s dispatch %02d (%s) attempt %d: %s", request.spec_id, request.step, request.role, attempt, why)
        answer = AgentAnswer(error=why, error_class="interrupted")
        await self.store.run(rows.attempt_finished(
            request.spec_id, request.step, attempt, exit_code=None, is_error=True, verdict=None, cost_usd=0.0,
            session_id=None, num_turns=None, error=why, error_class="interrupted"))
        return answer

    @contextlib.asynccontextmanager
    async def _slot(self, request: DispatchRequest):
        """agent.max_concurrent in this process (oldest spec first), and on Postgres
        agent.global_max_concurrent across workers."""
        async with self.slots.hold(request.priority):
            limit = self.config.agent.global_max_concurrent if self.store.dialect == "postgresql" else 0
            if not limit:
                yield
                return
            me = self.config.executor_id
            take = rows.slot_acquire
            slot = await self.store.run(take(limit, me, request.spec_id, request.step))
            while slot is None:
                await asyncio.sleep(SLOT_POLL_S)
                slot = await self.store.run(take(limit, me, request.spec_id, request.step))
            try:
                yield
            finally:
                await self.store.run(rows.slot_release(slot, me))

    async def _await_pid(self, run: RunDir) -> None:
        deadline = run.started_epoch() + LAUNCH_GRACE_S
        while run.recorded_pid() is None and time.time() < deadline and run.exit_code() is None:
            await asyncio.sleep(0.05)

    def _env(self, request: DispatchRequest, attempt: int, run: RunDir) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in self.unset_env}
        env.update(self.agent(request.role).env())
        env.update(
            IWO_ROLE=request.role,
            IWO_SPEC_ID=request.spec_id,
            IWO_WORKFLOW_ID=request.workflow_id,
            IWO_HANDOFF_DIR=str(request.handoff_dir),
            IWO_ATTEMPT=str(attempt),
            IWO_RUN_DIR=str(run.path),
        )
        return env

    def _session(self, request: DispatchRequest, attempt: int, resume_from: str | None, env: dict[str, str],
                 note: str | None):
        """The attempt's session (None for agents without sessions), and the note for its trace."""
        key = SessionKey(self.session_namespace, request.spec_id, request.step, attempt)
        session = self.agent(request.role).session(key, resume_from, request.cwd, env)
        if session is None or resume_from is None:
            return session, note
        if session.resume_from == resume_from:
            return session, note or f"resumed session {resume_from}"
        return session, f"session {resume_from} has no transcript on this machine: started afresh"

    async def _start(self, request: DispatchRequest, attempt: int, run: RunDir, resume_from: str | None,
                     note: str | None, budget_left: float | None):
        """Start the attempt: (its session id, the process handle in subprocess mode / None in tmux /
        False when it could not start)."""
        run.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        request.handoff_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        agent = self.agent(request.role)
        env = self._env(request, attempt, run)
        session, note = self._session(request, attempt, resume_from, env, note)
        for name, text in agent.files(request.role).items():
            run.write(name, text)
        run.write("prompt.md", agent.stdin(request.prompt, request.role, session))
        run.write("launch", launch_text(iso_utc(time.time())))
        # a resumed Codex thread keeps its id; a fresh one is named by the CLI (read from its output)
        session_id = (session.id or session.resume_from) if session else None
        resumed = session.resume_from if session else None
        unconfined = sandbox.unconfined(self.config.agent.sandbox, env)  # "auto" without bubblewrap: say so
        note = f"{unconfined}; {note}" if unconfined and note else unconfined or note
        # where, on which host, which session, which agent: recorded before the process exists
        await self._record_start(request, attempt, run, reattached=False, session_id=session_id,
                                 resumed_from=resumed, note=note, agent=agent.name)
        argv = agent.argv(request.role, session=session, budget_left_usd=budget_left, run_dir=run.path)
        try:  # inside the OS sandbox (agent.sandbox): the reaper runs bwrap, bwrap runs the agent
            argv, confined = sandbox.for_attempt(self.config, self.home.root, agent, argv, env, request.cwd,
                                                 run.path, request.handoff_dir)
            if confined is not None:  # what it hides, and the branch it may move (_collect)
                run.write("sandbox", json.dumps(confined))
        except OSError as error:
            run.write("stderr", f"iwo-lite could not start the agent: {error}\n")
            run.write("exit", "127\n")
            await self._record_start(request, attempt, run, reattached=False)
            return session_id, False
        launch = launcher.Launch(
            argv=tuple(argv), env=env, cwd=request.cwd, title=f"{request.spec_id}:{request.role}",
            unset=self.unset_env, tmux_keep_s=self.config.agent.tmux_keep, max_output=self.config.agent.max_output,
            interrupt_s=launcher.INTERRUPT_S if agent.interrupt_first else 0.0)
        try:
            proc = await launcher.start(run, launch, self.config.agent.dispatch)
        except OSError as error:  # e.g. the working directory is missing: the attempt fails, the loop goes on
            run.write("stderr", f"iwo-lite could not start the agent: {error}\n")
            run.write("exit", "127\n")
            await self._record_start(request, attempt, run, reattached=False)
            return session_id, False
        await self._record_start(request, attempt, run, reattached=False)
        await self.store.run(spec_rows.running(request.spec_id))
        return session_id, proc

    async def _record_start(self, request: DispatchRequest, attempt: int, run: RunDir, reattached: bool,
                            **more) -> None:
        recorded = run.recorded_pid()
        await self.store.run(rows.attempt_started(
            request.spec_id, request.step, attempt, request.role, str(run.path),
            recorded[0] if recorded else None, iso_utc(run.started_epoch()), reattached, HOST,
            executor_id=self.config.executor_id, pid_start=recorded[1] if recorded else None, **more))

    async def _wait(self, request: DispatchRequest, attempt: int, run: RunDir,
                    proc: asyncio.subprocess.Process | None, budget_left: float | None = None) -> dict | None:
        """Until the run wrote its exit status, or overran agent.timeout, or stalled, or (an agent
        whose CLI has no budget limit of its own) its cost so far reached `budget_left`, and was
        killed; its last progress (streaming agents).

        Time limits count time the machine was awake (the monotonic clock), never time it slept;
        and whenever this loop finds more time passed than it slept for (the machine woke up, or
        this process was stopped), it first lets the run's processes catch up (SETTLE_S) and
        collects a run that finished meanwhile before it judges any deadline.
        """
        agent = self.agent(request.role)
        streams = agent.streams
        watch = _Progress(self, request, attempt, run) if streams else None
        cap = budget_left if watch is not None and budget_left is not None and not agent.caps_budget else None
        clock = AwakeClock(run)
        next_cancel_check = time.monotonic() + CANCEL_CHECK_S
        while True:
            if run.exit_code() is not None:  # finished (the wrapper wrote its status): collect, judge nothing
                break
            if clock.woke_up():
                await asyncio.sleep(SETTLE_S)
                clock.settled()
                continue
            now = time.monotonic()
            if now >= next_cancel_check:  # `cancel` given on another machine (it cannot reach this run)
                next_cancel_check = now + CANCEL_CHECK_S
                if await self._cancelled(request):
                    await asyncio.to_thread(launcher.kill_run, run, "cancelled")
                    break
            if watch is not None:
                await watch.update()
                if cap is not None and rows.reached(watch.reader.progress.get("cost_usd") or 0.0, cap) \
                        and not await launcher.finishing(run):
                    log.warning("%s dispatch %02d (%s) attempt %d: its cost so far reached the $%.4f the spec may "
                                "still spend: stopped", request.spec_id, request.step, request.role, attempt, cap)
                    if await asyncio.to_thread(launcher.kill_run, run, "over_budget") or run.exit_code() is None:
                        break
            overdue = clock.overdue(self.config.agent.timeout, self.config.agent.stall_timeout if watch else None)
            if overdue is not None and not await launcher.finishing(run):
                if overdue == "stalled":
                    log.warning("%s dispatch %02d (%s) attempt %d: no output for %gs: stalled, killed",
                                request.spec_id, request.step, request.role, attempt, self.config.agent.stall_timeout)
                if await asyncio.to_thread(launcher.kill_run, run, overdue) or run.exit_code() is None:
                    break
                continue  # it finished by itself as the deadline came: collect it
            left = max(0.0, self.config.agent.timeout - clock.awake())
            tick = PROGRESS_S if streams else min(CANCEL_CHECK_S, left)
            clock.will_sleep(tick if proc is not None else min(POLL_S, tick) if tick else POLL_S)
            if proc is not None:
                try:
                    await asyncio.wait_for(proc.wait(), min(tick, left) if left else SETTLE_S)
                    break
                except asyncio.TimeoutError:
                    continue
            if run.exit_code() is not None or not run.is_live():
                break
            await asyncio.sleep(min(POLL_S, tick) if tick else POLL_S)
        if proc is not None and proc.returncode is None:
            await proc.wait()
        if watch is None:
            return None
        await watch.update(final=True)
        return watch.written

    async def _orphaned(self, request: DispatchRequest, attempt: int, run: RunDir, printed: AgentAnswer | None,
                        vanished_while_down: bool) -> AgentAnswer:
        """The run has no exit status: its wrapper died (an OOM kill, SIGKILL) or the machine restarted.
        Whatever of the attempt still runs (its agent and all it started: the wrapper's session and
        the run's IWO_RUN_DIR tag) is stopped first: nothing new starts beside it. A complete answer
        it printed is kept (paid once); else it failed, or (processes that cannot be killed) it
        stops the dispatch at a gate."""
        from iwo_lite.runs import proctree

        stopped, left = await asyncio.to_thread(proctree.sweep, str(run.path), launcher.KILL_GRACE_S)
        where = f"{request.spec_id} dispatch {request.step:02d} ({request.role}) attempt {attempt}"
        if left:
            why = (f"its wrapper died and {len(left)} of its processes cannot be stopped (pids "
                   f"{' '.join(map(str, left[:10]))}): no new attempt starts beside them")
            log.warning("%s: %s", where, why)
            return AgentAnswer(error=why, error_class="fatal")
        if stopped:
            log.warning("%s: its wrapper died while the agent ran; stopped %d orphaned process(es)", where, stopped)
        if printed is not None and printed.error is None:
            return printed  # it answered before its wrapper died: collected, not paid again
        why = ("agent process vanished without an exit status (killed, or the machine restarted)"
               + (f"; stopped {stopped} orphaned process(es) of it" if stopped else ""))
        return AgentAnswer(error=why, error_class="interrupted" if vanished_while_down else "retry",
                           session_id=printed.session_id if printed else None,
                           cost_usd=printed.cost_usd if printed else 0.0)  # what it printed is paid: keep it

    async def _collect(self, request: DispatchRequest, attempt: int, run: RunDir, reattached: bool,
                       vanished_while_down: bool = False, progress: dict | None = None) -> AgentAnswer:
        exit_code = run.exit_code()
        marker = run.kill_marker()
        stdout = run.read_capped("stdout", self.config.agent.max_output + 2**20)
        stderr_tail = run.tail("stderr")
        agent = self.agent(request.role)
        env = self._env(request, attempt, run)
        printed = agent.parse(request.role, stdout, exit_code, stderr_tail, env=env) if stdout else None
        if marker is not None:
            why = {"timed_out": f"agent timed out after {self.config.agent.timeout:g}s and was killed",
                   "stalled": f"stalled: no output for {self.config.agent.stall_timeout:g}s; killed",
                   "cancelled": CANCELLED, "over_budget": OVER_BUDGET}[marker]
            kind = {"timed_out": "retry", "stalled": "stalled", "cancelled": "cancelled", "over_budget": "budget"}[marker]
            # what the run printed before it was killed (a result after SIGTERM is paid): keep its money
            answer = replace(printed or AgentAnswer(), verdict=None, error=why, error_class=kind)
        elif exit_code is None:
            answer = await self._orphaned(request, attempt, run, printed, vanished_while_down)
        elif stdout is None:
            answer = AgentAnswer(error=f"agent output is over {self.config.agent.max_output} bytes; not read "
                                 f"(see {run.file('stdout')})", error_class="retry")
        else:
            answer = printed or agent.parse(request.role, "", exit_code, stderr_tail, env=env)
            cut = run.read("stdout.cut")
            if answer.error and cut:
                answer = replace(answer, error=f"{answer.error}; output cut at {self.config.agent.max_output} bytes "
                                 f"(agent.max_output; {cut.strip()} bytes dropped)")
            elif answer.error and stderr_tail and stderr_tail not in answer.error:
                answer = replace(answer, error=f"{answer.error}; stderr: {stderr_tail}")
        confined = run.read("sandbox")
        if confined is not None:  # the branch the agent moved; writes the sandbox refused are never a silent pass
            seen = json.loads(confined)
            _, dropped = await asyncio.to_thread(sandbox.sync_branch, seen.get("branch"))
            answer = refusals.judged(answer, stdout or "", agent.tool_events(stdout or ""), seen.get("hidden", ()),
                                     seen.get("visible", ()), dropped_refs=dropped)
        if reattached:  # this daemon did not start it: its row gets the pid it sees, and the mark
            await self._record_start(request, attempt, run, reattached=True)
        if progress is None and agent.streams:  # collected after a restart
            progress = _Progress.final_of(agent, run)
        await self.store.run(rows.attempt_finished(
            request.spec_id, request.step, attempt, exit_code=exit_code, is_error=answer.is_error,
            verdict=answer.verdict, cost_usd=answer.cost_usd, session_id=answer.session_id,
            num_turns=answer.num_turns, error=answer.error, error_class=answer.error_class,
            denials=list(answer.denials) or None, progress=progress, cost_note=answer.cost_note))
        return answer


class _Progress:
    """A streaming run's progress, read from its stdout as it grows; written in batches."""

    def __init__(self, dispatcher: Dispatcher, request: DispatchRequest, attempt: int, run: RunDir):
        self.store = dispatcher.store
        self.key = (request.spec_id, request.step, attempt)
        self.run = run
        self.reader = dispatcher.agent(request.role).stream_reader()
        self.written: dict | None = None
        self.written_at = 0.0
        self.session: str | None = None

    async def update(self, final: bool = False) -> None:
        self.reader.read_new(self.run.file("stdout"))
        named = getattr(self.reader, "session_id", None)  # the session the CLI named as it started
        if named and named != self.session:
            await self.store.run(rows.attempt_session(*self.key, named))
            self.session = named
        progress = dict(self.reader.progress, last_event_at=iso_utc(self.run.last_output_epoch()))
        if progress == self.written or (not final and time.monotonic() - self.written_at < PROGRESS_WRITE_S):
            if final:
                self.written = progress
            return
        await self.store.run(rows.attempt_progress(*self.key, progress))
        self.written, self.written_at = progress, time.monotonic()

    @staticmethod
    def final_of(agent, run: RunDir) -> dict:
        reader = agent.stream_reader()
        reader.read_new(run.file("stdout"))
        return dict(reader.progress, last_event_at=iso_utc(run.last_output_epoch()))
