"""Detached agent runs: start, re-attach, collect; timeouts; retries; the concurrency limit.

Owns everything about one dispatch's agent processes. Each attempt lives in its own run
directory under `runs/<spec>/<NN>-<role>/attempt-<k>/`:

    prompt.md    what went on the agent's stdin
    launch       written just before the process is started
    pid.wrapper  written by the wrapper shell as its first act (its own pid)
    pid          "<pid> <start-time>", written by the daemon once the process runs
    stdout       the agent's stdout (Claude Code's JSON result)
    stderr       the agent's stderr
    exit         the agent's exit status, written (temp + rename) by the wrapper when it ends
    timed_out    written by the daemon before it kills a run that overran agent.timeout

The wrapper is `/bin/sh` in a session of its own (so a daemon crash does not kill it and a
timeout can kill the whole process group): a child of the daemon started with
start_new_session, or with agent.dispatch = "tmux" the shell of a tmux window (tmux makes
each pane's process a session leader), which also shows the output live. The directory is the journal of the attempt
loop: on recovery, a finished run is collected, a live run is re-attached (its pid and
start time must both match, so a reused pid is never mistaken for it), and only a run
that never started is started. Each dispatch is therefore paid for once.
No DBOS here: the loop wraps `Dispatcher.run` in a DBOS step.

Several workers on one Postgres database: each attempt's row in iwo_attempts names its run
directory and host, and is written before the process starts. A worker that takes over a
spec re-attaches to (or collects) a run on its own host through that path, collects a
finished run it can read on another host, and otherwise says so and runs the call again
(a pid means nothing on another machine). `agent.global_max_concurrent` adds slots in
iwo_agent_slots that every worker shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.db import Home, iso_utc
from iwo_lite.handoff import AgentAnswer, clean, parse_agent_output
from iwo_lite.ledger import Ledger

WRAPPER = (
    'agent_umask=$(umask); umask 077\n'
    'echo $$ > "$IWO_RUN_DIR/pid.wrapper"\n'
    ': > "$IWO_RUN_DIR/stdout"; : > "$IWO_RUN_DIR/stderr"\n'
    '(umask "$agent_umask"; exec "$@") < "$IWO_RUN_DIR/prompt.md" > "$IWO_RUN_DIR/stdout" 2> "$IWO_RUN_DIR/stderr"\n'
    'code=$?\n'
    'echo $code > "$IWO_RUN_DIR/exit.tmp" && mv -f "$IWO_RUN_DIR/exit.tmp" "$IWO_RUN_DIR/exit"\n'
)
# tmux mode: the pane's shell runs the same journaled wrapper in the background, shows the
# agent's output live with `tail -f`, and keeps the window open for agent.tmux_keep seconds.
TMUX_WRAPPER = (
    'agent_umask=$(umask); umask 077\n'
    'echo $$ > "$IWO_RUN_DIR/pid.wrapper"\n'
    ': > "$IWO_RUN_DIR/stdout"; : > "$IWO_RUN_DIR/stderr"\n'
    '( (umask "$agent_umask"; exec "$@") < "$IWO_RUN_DIR/prompt.md" > "$IWO_RUN_DIR/stdout" 2> "$IWO_RUN_DIR/stderr"\n'
    '  code=$?; echo $code > "$IWO_RUN_DIR/exit.tmp" && mv -f "$IWO_RUN_DIR/exit.tmp" "$IWO_RUN_DIR/exit" ) &\n'
    'tail -f "$IWO_RUN_DIR/stdout" "$IWO_RUN_DIR/stderr" & viewer=$!\n'
    'while [ ! -f "$IWO_RUN_DIR/exit" ]; do sleep 0.2; done\n'
    'sleep 0.3; kill $viewer 2>/dev/null\n'
    'echo; echo "[iwo-lite] $IWO_SPEC_ID $IWO_ROLE attempt $IWO_ATTEMPT exited $(cat "$IWO_RUN_DIR/exit")"\n'
    'sleep "$IWO_TMUX_KEEP"\n'
)
TMUX_SESSION = "iwo"
LAUNCH_GRACE_S = 3.0  # how long a run with a `launch` marker but no pid may take to show one
POLL_S = 0.05  # how often a re-attached run is checked
KILL_GRACE_S = 3.0  # SIGTERM to SIGKILL
MAX_STDOUT_BYTES = 64 * 1024 * 1024
SLOT_POLL_S = 0.5  # how often a dispatch waiting for a global slot asks again
HOST = socket.gethostname()
OUT_OF_REACH = "is out of reach from"
log = logging.getLogger("iwo_lite")


@dataclass(frozen=True)
class DispatchRequest:
    spec_id: str
    workflow_id: str
    step: int
    role: str
    prompt: str
    handoff_dir: Path


@dataclass(frozen=True)
class DispatchResult:
    answer: AgentAnswer  # the successful attempt's, else the last failure's
    attempts: int
    errors: tuple[str, ...]


def process_start_time(pid: int) -> str | None:
    """An opaque start-time token for `pid` (None if it is not running); guards pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except FileNotFoundError:
        return None
    except OSError:
        pass
    if not _pid_exists(pid):
        return None
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


class RunDir:
    """One attempt's directory and what its files say."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> str | None:
        try:
            return self.file(name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def write(self, name: str, text: str) -> None:
        temp = self.file(name + ".tmp-daemon")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, self.file(name))

    def finished(self) -> bool:
        """The run wrote its exit status, or was killed at its timeout: collect it, never restart it."""
        return self.exit_code() is not None or self.file("timed_out").exists()

    def exit_code(self) -> int | None:
        text = self.read("exit")
        if text is None or not text.strip():
            return None
        try:
            return int(text.strip())
        except ValueError:
            return -1

    def recorded_pid(self) -> tuple[int, str | None] | None:
        """(pid, start time) from `pid`, else (pid, None) from `pid.wrapper`, else None."""
        text = (self.read("pid") or "").split()
        if len(text) >= 2 and text[0].isdigit():
            return int(text[0]), " ".join(text[1:])
        wrapper = (self.read("pid.wrapper") or "").strip()
        if wrapper.isdigit():
            return int(wrapper), None
        return None

    def started_epoch(self) -> float:
        for name in ("pid", "pid.wrapper", "launch"):
            try:
                return self.file(name).stat().st_mtime
            except FileNotFoundError:
                continue
        return time.time()

    def is_live(self) -> bool:
        recorded = self.recorded_pid()
        if recorded is None:
            return False
        pid, start = recorded
        now_start = process_start_time(pid)
        if now_start is None:
            return False
        if start is not None:
            return now_start == start
        try:  # only pid.wrapper: our wrapper leads its own session
            return os.getsid(pid) == pid
        except OSError:
            return False


class Dispatcher:
    """Runs one dispatch: its attempts, each started once, re-attached after a crash."""

    def __init__(self, config: Config, home: Home, ledger: Ledger):
        self.config = config
        self.home = home
        self.ledger = ledger
        self.slots = asyncio.Semaphore(config.agent.max_concurrent)

    async def run(self, request: DispatchRequest) -> DispatchResult:
        errors: list[str] = []
        total = self.config.agent.retries + 1
        answer = AgentAnswer(error="no attempt ran")
        attempt = tries = 0
        while tries < total:
            attempt += 1
            row = await self.ledger.attempt_row(request.spec_id, request.step, attempt)
            unreachable = await self._unreachable(request, attempt, row)
            if unreachable is not None and OUT_OF_REACH in unreachable:  # not a try of the agent's
                errors.append(f"attempt {attempt}: {unreachable}")
                continue
            tries += 1
            answer = AgentAnswer(error=unreachable) if unreachable else await self._attempt(request, attempt, row)
            if answer.error is None:
                return DispatchResult(answer, attempt, tuple(errors))
            errors.append(f"attempt {attempt}: {answer.error}")
        return DispatchResult(answer, attempt, tuple(errors))

    def _run_dir(self, request: DispatchRequest, attempt: int, row: dict | None) -> RunDir:
        """The attempt's run directory: this home's, or the one its iwo_attempts `row` names on this host."""
        own = RunDir(self.home.run_dir(request.spec_id, request.step, request.role, attempt))
        if own.file("launch").exists() or own.exit_code() is not None:
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
            await self.ledger.attempt_finished(
                request.spec_id, request.step, attempt, exit_code=None, is_error=True, verdict=None, cost_usd=0.0,
                session_id=None, num_turns=None, error=why)
        return why

    async def _attempt(self, request: DispatchRequest, attempt: int, row: dict | None) -> AgentAnswer:
        run = self._run_dir(request, attempt, row)
        if run.finished():
            return await self._collect(request, attempt, run, reattached=True)
        if run.file("launch").exists():
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
            limit = self.config.agent.global_max_concurrent if self.ledger.dialect == "postgresql" else 0
            if not limit:
                yield
                return
            me = self.config.executor_id
            slot = await self.ledger.slot_acquire(limit, me, request.spec_id, request.step)
            while slot is None:
                await asyncio.sleep(SLOT_POLL_S)
                slot = await self.ledger.slot_acquire(limit, me, request.spec_id, request.step)
            try:
                yield
            finally:
                await self.ledger.slot_release(slot, me)

    async def _await_pid(self, run: RunDir) -> None:
        deadline = run.started_epoch() + LAUNCH_GRACE_S
        while run.recorded_pid() is None and time.time() < deadline and run.exit_code() is None:
            await asyncio.sleep(POLL_S)

    def _argv(self, role: str) -> list[str]:
        role_config = self.config.roles[role]
        argv = list(self.config.agent.command) + list(role_config.extra_args)
        if role_config.model:
            argv += ["--model", role_config.model]
        return argv

    def _env(self, request: DispatchRequest, attempt: int, run: RunDir) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            IWO_ROLE=request.role,
            IWO_SPEC_ID=request.spec_id,
            IWO_WORKFLOW_ID=request.workflow_id,
            IWO_HANDOFF_DIR=str(request.handoff_dir),
            IWO_ATTEMPT=str(attempt),
            IWO_RUN_DIR=str(run.path),
        )
        env.pop(self.config.telegram.token_env, None)
        return env

    async def _start(self, request: DispatchRequest, attempt: int, run: RunDir) -> asyncio.subprocess.Process | None:
        """Start the attempt; the process handle in subprocess mode, None in tmux mode or on failure."""
        run.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        request.handoff_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        run.write("prompt.md", request.prompt)
        run.write("launch", iso_utc(time.time()) + "\n")
        await self._record_start(request, attempt, run, reattached=False)  # where and on which host, first
        argv = self._argv(request.role)
        env = self._env(request, attempt, run)
        proc = None
        try:
            if self.config.agent.dispatch == "tmux":
                pid = await self._start_in_tmux(request, argv, env)
            else:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", WRAPPER, "iwo-run", *argv,
                    cwd=self.config.workdir, env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True,
                )
                pid = proc.pid
        except OSError as error:  # e.g. workdir missing: the attempt fails, the loop goes on
            run.write("stderr", f"iwo-lite could not start the agent: {error}\n")
            run.write("exit", "127\n")
            await self._record_start(request, attempt, run, reattached=False)
            return None
        run.write("pid", f"{pid} {process_start_time(pid) or '?'}\n")
        await self._record_start(request, attempt, run, reattached=False)
        return proc

    async def _start_in_tmux(self, request: DispatchRequest, argv: list[str], env: dict[str, str]) -> int:
        """Open window `<spec>:<role>` in tmux session `iwo` running the wrapper; the pane's pid.

        The pane inherits the tmux server's environment (the daemon's, when the daemon started
        the server); the IWO_* variables are passed with -e, and the Telegram token is unset.
        """
        if await _tmux("has-session", "-t", TMUX_SESSION, check=False) != 0:
            await _tmux("new-session", "-d", "-s", TMUX_SESSION, "-n", "iwo-lite", check=False)
        passed = {k: v for k, v in env.items() if k.startswith("IWO_")}
        passed["IWO_TMUX_KEEP"] = f"{self.config.agent.tmux_keep:g}"
        command = ["env", "-u", self.config.telegram.token_env, "/bin/sh", "-c", TMUX_WRAPPER, "iwo-run", *argv]
        out = await _tmux(
            "new-window", "-d", "-t", f"{TMUX_SESSION}:", "-n", f"{request.spec_id}:{request.role}",
            "-c", str(self.config.workdir), "-P", "-F", "#{pane_pid}",
            *[arg for key, value in passed.items() for arg in ("-e", f"{key}={value}")],
            shlex.join(command), capture=True,
        )
        return int(out.strip())

    async def _record_start(self, request: DispatchRequest, attempt: int, run: RunDir, reattached: bool) -> None:
        recorded = run.recorded_pid()
        await self.ledger.attempt_started(
            request.spec_id, request.step, attempt, request.role, str(run.path),
            recorded[0] if recorded else None, iso_utc(run.started_epoch()), reattached, HOST,
        )

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
        await self._kill(run, proc)

    async def _kill(self, run: RunDir, proc: asyncio.subprocess.Process | None) -> None:
        run.write("timed_out", iso_utc(time.time()) + "\n")
        recorded = run.recorded_pid()
        if recorded is None:
            return
        group = recorded[0]
        for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            end = time.time() + grace
            while time.time() < end:
                if proc is not None and proc.returncode is None:
                    try:
                        await asyncio.wait_for(proc.wait(), POLL_S)
                    except asyncio.TimeoutError:
                        pass
                else:
                    await asyncio.sleep(POLL_S)
                if not _group_alive(group):
                    break
            if not _group_alive(group):
                break
        if proc is not None and proc.returncode is None:
            await proc.wait()

    async def _collect(self, request: DispatchRequest, attempt: int, run: RunDir, reattached: bool) -> AgentAnswer:
        exit_code = run.exit_code()
        if run.file("timed_out").exists():
            answer = AgentAnswer(error=f"agent timed out after {self.config.agent.timeout:g}s and was killed")
        elif exit_code is None:
            answer = AgentAnswer(error="agent process vanished without an exit status "
                                 "(killed, or the machine restarted)")
        else:
            stdout = _read_capped(run.file("stdout"))
            if stdout is None:
                answer = AgentAnswer(error=f"agent output is over {MAX_STDOUT_BYTES // 2**20} MiB; not read "
                                     f"(see {run.file('stdout')})")
            else:
                answer = parse_agent_output(request.role, stdout, exit_code)
            stderr_tail = _tail(run.file("stderr"))
            if answer.error and stderr_tail:
                answer = replace(answer, error=f"{answer.error}; stderr: {stderr_tail}")
        await self._record_start(request, attempt, run, reattached=reattached)
        await self.ledger.attempt_finished(
            request.spec_id, request.step, attempt, exit_code=exit_code, is_error=answer.is_error,
            verdict=answer.verdict, cost_usd=answer.cost_usd, session_id=answer.session_id,
            num_turns=answer.num_turns, error=answer.error,
        )
        return answer


async def _tmux(*args: str, check: bool = True, capture: bool = False):
    """Run a tmux command; its stdout when `capture`, else its exit status."""
    proc = await asyncio.create_subprocess_exec(
        "tmux", *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise OSError(f"tmux {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode() if capture else proc.returncode


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a file, clipped: enough to say why an agent failed."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return clean(lines[-1][-limit:]) if lines else ""


def _read_capped(path: Path) -> str | None:
    """The file's text, "" when missing, None when over MAX_STDOUT_BYTES (left unread in runs/)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_STDOUT_BYTES + 1)
    except FileNotFoundError:
        return ""
    if len(data) > MAX_STDOUT_BYTES:
        return None
    return data.decode("utf-8", errors="replace")


if sys.platform == "win32":  # pragma: no cover
    raise ImportError("iwo-lite dispatch needs a POSIX system")
