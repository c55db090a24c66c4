"""One dispatch's agent processes: attempts, retries, the concurrency limits, takeover, kill, collect.

Owns the attempt loop of a dispatch. Each attempt is started once, journaled in its run
directory (runs/journal.py) and recorded in iwo_attempts *before* its process starts. On
recovery an attempt is collected when it finished (an exit status or a kill marker),
re-attached when its process is still alive, and started only when it never started: each
dispatch is paid for once. A failed attempt is retried up to `agent.retries` times.
No DBOS here: the loop wraps `Dispatcher.run` in a DBOS step.

Several workers on one Postgres database: each attempt's row names its run directory and
host. A worker that takes over a spec re-attaches to (or collects) a run on its own host
through that path, collects a finished run it can read on another host, and otherwise says
so and runs the call again (a pid means nothing on another machine).
`agent.global_max_concurrent` adds slots in iwo_agent_slots that every worker shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.config import Config
from iwo_lite.home import Home
from iwo_lite.runs import launcher
from iwo_lite.runs.journal import HOST, RunDir
from iwo_lite.store import AsyncStore
from iwo_lite.store import runs as rows
from iwo_lite.times import iso_utc

LAUNCH_GRACE_S = 3.0  # how long a run with a `launch` marker but no pid may take to show one
POLL_S = 0.05  # how often a re-attached run is checked
MAX_STDOUT_BYTES = 64 * 1024 * 1024
SLOT_POLL_S = 0.5  # how often a dispatch waiting for a global slot asks again
OUT_OF_REACH = "is out of reach from"
CANCELLED = "agent run stopped by `iwo-lite cancel`"
log = logging.getLogger("iwo_lite")


@dataclass(frozen=True)
class DispatchRequest:
    spec_id: str
    workflow_id: str
    step: int
    role: str
    prompt: str
    handoff_dir: Path
    cwd: Path  # where the agent works: the shared workdir (or, later, the spec's own workspace)


@dataclass(frozen=True)
class DispatchResult:
    answer: AgentAnswer  # the successful attempt's, else the last failure's
    attempts: int
    errors: tuple[str, ...]


class Dispatcher:
    """Runs one dispatch: its attempts, each started once, re-attached after a crash."""

    def __init__(self, config: Config, home: Home, store: AsyncStore, agent, unset_env: tuple[str, ...] = ()):
        self.config = config
        self.home = home
        self.store = store
        self.agent = agent  # agents.plain.PlainAgent: argv and parsing
        self.unset_env = unset_env  # secrets the agents must not see (the notifiers' tokens)
        self.slots = asyncio.Semaphore(config.agent.max_concurrent)

    async def run(self, request: DispatchRequest) -> DispatchResult:
        errors: list[str] = []
        total = self.config.agent.retries + 1
        answer = AgentAnswer(error="no attempt ran")
        attempt = tries = 0
        while tries < total:
            attempt += 1
            row = await self.store.run(rows.attempt(request.spec_id, request.step, attempt))
            unreachable = await self._unreachable(request, attempt, row)
            if unreachable is not None and OUT_OF_REACH in unreachable:  # not a try of the agent's
                errors.append(f"attempt {attempt}: {unreachable}")
                continue
            tries += 1
            answer = AgentAnswer(error=unreachable) if unreachable else await self._attempt(request, attempt, row)
            if answer.error is None:
                return DispatchResult(answer, attempt, tuple(errors))
            errors.append(f"attempt {attempt}: {answer.error}")
            if answer.error == CANCELLED:  # the spec is being cancelled: no new paid attempt
                break
        return DispatchResult(answer, attempt, tuple(errors))

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

    async def _attempt(self, request: DispatchRequest, attempt: int, row: dict | None) -> AgentAnswer:
        run = self._run_dir(request, attempt, row)
        if run.finished():
            return await self._collect(request, attempt, run, reattached=True)
        if run.started():
            await self._await_pid(run)
            if run.recorded_pid() is not None:
                if run.is_live():
                    async with self._slot(request):
                        await self._record_start(request, attempt, run, reattached=True)
                        await self._wait(run, proc=None)
                return await self._collect(request, attempt, run, reattached=True)
        async with self._slot(request):
            proc = await self._start(request, attempt, run)
            await self._wait(run, proc=proc)
        return await self._collect(request, attempt, run, reattached=False)

    @contextlib.asynccontextmanager
    async def _slot(self, request: DispatchRequest):
        """agent.max_concurrent in this process, and on Postgres agent.global_max_concurrent across workers."""
        async with self.slots:
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
            await asyncio.sleep(POLL_S)

    def _env(self, request: DispatchRequest, attempt: int, run: RunDir) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in self.unset_env}
        env.update(
            IWO_ROLE=request.role,
            IWO_SPEC_ID=request.spec_id,
            IWO_WORKFLOW_ID=request.workflow_id,
            IWO_HANDOFF_DIR=str(request.handoff_dir),
            IWO_ATTEMPT=str(attempt),
            IWO_RUN_DIR=str(run.path),
        )
        return env

    async def _start(self, request: DispatchRequest, attempt: int, run: RunDir) -> asyncio.subprocess.Process | None:
        """Start the attempt; the process handle in subprocess mode, None in tmux mode or on failure."""
        run.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        request.handoff_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        run.write("prompt.md", request.prompt)
        run.write("launch", iso_utc(time.time()) + "\n")
        await self._record_start(request, attempt, run, reattached=False)  # where and on which host, first
        launch = launcher.Launch(
            argv=tuple(self.agent.argv(request.role)), env=self._env(request, attempt, run), cwd=request.cwd,
            title=f"{request.spec_id}:{request.role}", unset=self.unset_env, tmux_keep_s=self.config.agent.tmux_keep)
        try:
            proc = await launcher.start(run, launch, self.config.agent.dispatch)
        except OSError as error:  # e.g. workdir missing: the attempt fails, the loop goes on
            run.write("stderr", f"iwo-lite could not start the agent: {error}\n")
            run.write("exit", "127\n")
            await self._record_start(request, attempt, run, reattached=False)
            return None
        await self._record_start(request, attempt, run, reattached=False)
        return proc

    async def _record_start(self, request: DispatchRequest, attempt: int, run: RunDir, reattached: bool) -> None:
        recorded = run.recorded_pid()
        await self.store.run(rows.attempt_started(
            request.spec_id, request.step, attempt, request.role, str(run.path),
            recorded[0] if recorded else None, iso_utc(run.started_epoch()), reattached, HOST))

    async def _wait(self, run: RunDir, proc: asyncio.subprocess.Process | None) -> None:
        """Until the run wrote its exit status, or overran agent.timeout and was killed."""
        deadline = run.started_epoch() + self.config.agent.timeout
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), max(0.0, deadline - time.time()))
                return
            except asyncio.TimeoutError:
                pass
        else:
            while run.exit_code() is None and run.is_live() and time.time() < deadline:
                await asyncio.sleep(POLL_S)
            if run.exit_code() is not None or not run.is_live():
                return
        await asyncio.to_thread(launcher.kill_run, run, "timed_out")
        if proc is not None and proc.returncode is None:
            await proc.wait()

    async def _collect(self, request: DispatchRequest, attempt: int, run: RunDir, reattached: bool) -> AgentAnswer:
        exit_code = run.exit_code()
        marker = run.kill_marker()
        if marker == "timed_out":
            answer = AgentAnswer(error=f"agent timed out after {self.config.agent.timeout:g}s and was killed")
        elif marker == "cancelled":
            answer = AgentAnswer(error=CANCELLED)
        elif exit_code is None:
            answer = AgentAnswer(error="agent process vanished without an exit status "
                                 "(killed, or the machine restarted)")
        else:
            stdout = run.read_capped("stdout", MAX_STDOUT_BYTES)
            if stdout is None:
                answer = AgentAnswer(error=f"agent output is over {MAX_STDOUT_BYTES // 2**20} MiB; not read "
                                     f"(see {run.file('stdout')})")
            else:
                answer = self.agent.parse(request.role, stdout, exit_code)
            stderr_tail = run.tail("stderr")
            if answer.error and stderr_tail:
                answer = replace(answer, error=f"{answer.error}; stderr: {stderr_tail}")
        await self._record_start(request, attempt, run, reattached=reattached)
        await self.store.run(rows.attempt_finished(
            request.spec_id, request.step, attempt, exit_code=exit_code, is_error=answer.is_error,
            verdict=answer.verdict, cost_usd=answer.cost_usd, session_id=answer.session_id,
            num_turns=answer.num_turns, error=answer.error))
        return answer
