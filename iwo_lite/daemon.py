"""The daemon (`iwo-lite run`): one asyncio process that owns the home while it runs.

Owns: the exclusive lock on `<home>/daemon.lock` (one launched DBOS per database file),
preparing the database, launching DBOS inside the running loop (which recovers unfinished
specs), serving the spec queue, and a clean stop on SIGINT/SIGTERM. The loop itself is in
loop.py; agent processes in dispatch.py. On Postgres the daemon is one worker among several:
it registers and keeps watch over the others (workers.py), and hears answers given on any
machine through LISTEN iwo_answers.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import time
from functools import partial
from pathlib import Path

from dbos import DBOS

from iwo_lite import loop, workers
from iwo_lite.config import Config
from iwo_lite.db import QUEUE_NAME, REPLAY_VERSION, Home
from iwo_lite.dispatch import Dispatcher
from iwo_lite.engine import QUEUE_POLL_S, dbos_config, enqueue_spec_in_daemon, prepare_database
from iwo_lite.errors import UserError
from iwo_lite.handoff import write_once
from iwo_lite.inbox import InboxWatcher
from iwo_lite.ledger import Ledger
from iwo_lite.submit import Spec

log = logging.getLogger("iwo_lite")
LOCK_PATIENCE_S = 1.0
WAKE_SWEEP_S = 5.0  # safety net: wake answered gates even if a poke was lost


def acquire_lock(lock_path: Path) -> int:
    """Hold an exclusive flock on the home for this process's lifetime; the fd is not inherited.

    Shell commands take a shared lock for a moment to see whether a daemon runs, so a busy
    lock is tried again for LOCK_PATIENCE_S before another daemon is assumed.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{lock_path}: another iwo-lite daemon (pid {holder}) is already running on this home")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


async def serve(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGINT/SIGTERM arrives."""
    home = Home(config.home)
    stop = stop or asyncio.Event()
    if config.agent.dispatch == "tmux" and shutil.which("tmux") is None:
        raise UserError('agent.dispatch = "tmux", but tmux is not installed (or not on PATH)')
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a poke before we listen must not kill us
    lock_fd = acquire_lock(home.lock)
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, stop.set)
    ledger = None
    shared = False  # Postgres: one worker of several
    launched = False
    bot = None
    try:
        await asyncio.to_thread(prepare_database, config)
        ledger = await Ledger.open(config.database_url)
        shared = ledger.dialect == "postgresql"
        if shared:
            await workers.register(ledger, config, home.root)
        await ledger.daemon_started(os.getpid(), config.executor_id)
        gates = GateWaker(ledger)
        bot = _telegram_bot(config, ledger, gates.answer)
        loop.install(loop.Runtime(config, home, ledger, Dispatcher(config, home, ledger), bot))
        DBOS(config=dbos_config(config))
        DBOS.launch()
        launched = True
        await DBOS.register_queue_async(QUEUE_NAME, polling_interval_sec=QUEUE_POLL_S)
        running.add_signal_handler(signal.SIGUSR1, gates.poke)
        background = [  # held here: the loop keeps only weak references to tasks
            asyncio.create_task(gates.sweep_forever(), name="iwo-wake-answered"),
            asyncio.create_task(InboxWatcher(home.inbox, partial(submit_in_daemon, ledger, home)).run_forever(),
                                name="iwo-inbox"),
        ]
        if shared:
            background += [
                asyncio.create_task(workers.keep_watch(ledger, config, DBOS._recover_pending_workflows),
                                    name="iwo-workers"),
                asyncio.create_task(listen_for_answers(config.database_url, gates), name="iwo-answers"),
            ]
        if bot is not None:
            bot.start()
        log.info("daemon running on %s (pid %d, executor %s, %d background tasks)", home.root, os.getpid(),
                 config.executor_id, len(background))
        await _warn_of_other_replay_versions(ledger)
        await stop.wait()
        log.info("stopping: agent runs in flight continue detached and are re-attached on the next start")
    finally:
        if bot is not None:
            await bot.stop()
        await _cancel_other_tasks()
        if launched:
            DBOS.destroy(workflow_completion_timeout_sec=0)
        loop.install(None)
        if ledger is not None:
            if shared:
                await ledger.worker_stopped(config.executor_id, os.getpid())
            await ledger.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            running.remove_signal_handler(sig)
        os.close(lock_fd)


async def _warn_of_other_replay_versions(ledger: Ledger) -> None:
    """Unfinished specs started by a build with another REPLAY_VERSION: this daemon leaves them be."""
    rows = await ledger.fetch_all(
        "SELECT application_version, COUNT(*) FROM workflow_status WHERE status IN ('PENDING', 'ENQUEUED')"
        " AND COALESCE(application_version, '') <> ? GROUP BY 1", (REPLAY_VERSION,))
    for version, count in rows:
        log.warning("%d unfinished spec(s) were started by a build with replay version %s; this build (%s) "
                    "will not run them: see `iwo-lite doctor`", count, version, REPLAY_VERSION)


async def listen_for_answers(database_url: str, gates: "GateWaker") -> None:
    """Postgres: an answer recorded on any machine (gates.ANSWER_CHANNEL) wakes its gate now."""
    from iwo_lite import pg
    from iwo_lite.gates import ANSWER_CHANNEL

    while True:
        try:
            async for _ in pg.listen(database_url, ANSWER_CHANNEL):
                gates.poke()
        except Exception as error:  # the server restarted: listen again; the sweep covers the gap
            log.warning("listening for answers failed: %s", error)
        await asyncio.sleep(WAKE_SWEEP_S)


async def _cancel_other_tasks() -> None:
    """Cancel the workflow tasks DBOS started on this loop; their steps stay unrecorded and resume."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=5)


async def submit_in_daemon(ledger: Ledger, home: Home, spec: Spec) -> bool:
    """Queue a spec from inside the daemon (the inbox); False when its id already existed."""
    created = await ledger.spec_queued(spec.id, spec.title, spec.source)
    write_once(home.spec_dir(spec.id) / "spec.md", spec.text)
    await enqueue_spec_in_daemon(spec.workflow_input())
    return created


def _telegram_bot(config: Config, ledger: Ledger, answer_gate):
    """The bot when a token and at least one allowed chat are configured, else None."""
    token = config.telegram.token()
    if not token or not config.telegram.allowed_chat_ids:
        if token or config.telegram.allowed_chat_ids:
            log.warning("telegram: needs both $%s and telegram.allowed_chat_ids; the bot is off",
                        config.telegram.token_env)
        return None
    from iwo_lite.telegram import TelegramBot, install_redaction

    install_redaction(token)
    return TelegramBot(config, token, ledger, answer_gate)


class GateWaker:
    """Answers gates for the bot, and wakes the workflows of answered gates.

    An answer is recorded in iwo_gates first (by the shell or the bot); the waiting workflow is
    then sent a DBOS message on the gate's topic and its recv woken at once (nudge_local_waiter;
    DBOS's poll is the fallback). A shell
    answer pokes the daemon with SIGUSR1; a sweep at start and every WAKE_SWEEP_S catches
    answers given while the daemon was down or whose poke was lost.
    """

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._woken: dict[str, float] = {}
        self._kick = asyncio.Event()

    async def answer(self, gate_id: str, answer: str, note: str, by: str, via: str) -> str | None:
        refused = await self.ledger.answer_gate(gate_id, answer, note, by, via)
        if refused is None:
            spec_id = gate_id.rsplit("#", 1)[0]
            await self._wake(gate_id, spec_id)
        return refused

    def poke(self) -> None:
        self._kick.set()

    async def sweep_forever(self) -> None:
        while True:
            try:
                for gate_id, spec_id in await self.ledger.answered_waiting():
                    if time.monotonic() - self._woken.get(gate_id, -1e9) > WAKE_SWEEP_S * 2:
                        await self._wake(gate_id, spec_id)
            except Exception as error:  # a locked database for a moment: the next sweep retries
                log.warning("waking answered gates failed: %s", error)
            try:
                await asyncio.wait_for(self._kick.wait(), WAKE_SWEEP_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def _wake(self, gate_id: str, spec_id: str) -> None:
        self._woken[gate_id] = time.monotonic()
        # Every worker may send this (each sweeps): the key makes it one message.
        await DBOS.send_async(spec_id, {"gate": gate_id}, topic=gate_id, idempotency_key=f"answer:{gate_id}")
        nudge_local_waiter(spec_id, gate_id)


def nudge_local_waiter(workflow_id: str, topic: str) -> bool:
    """End this process's recv on (workflow_id, topic) now instead of at DBOS's next poll.

    DBOS 3.4 on SQLite delivers messages by polling, even a send from the same process. The
    message is already committed when this runs; setting the waiter's in-memory event only
    makes recv look at once. It reaches into DBOS internals (pinned dbos==3.4.0): if they
    change, this does nothing and the poll still delivers the message. (IWO_WAKE_NUDGE=0 turns
    it off, for the benchmark's baseline.)
    """
    if os.environ.get("IWO_WAKE_NUDGE") == "0":
        return False
    try:
        from dbos import _dbos

        sys_db = _dbos._dbos_global_instance._sys_db  # type: ignore[union-attr]
        key, _ = sys_db._waiter(workflow_id, topic)
        signal_for_key = sys_db.notifications_map.get(key)
    except Exception:
        return False
    if signal_for_key is None:
        return False
    signal_for_key.set()
    return True
