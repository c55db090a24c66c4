"""The daemon (`iwo-lite run`): one asyncio process that owns the home while it runs.

Owns: the exclusive lock on `<home>/daemon.lock` (one launched DBOS per database file),
preparing the database, wiring the pieces (store, gates, notifiers, dispatcher, the loop's
runtime), launching DBOS inside the running loop (which recovers unfinished specs), the
background tasks (waking answered gates, the inbox, on Postgres the watch over other workers
and LISTEN for answers), and a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from iwo_lite import durable, loop, notify, workers
from iwo_lite.agents import plain
from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.gates import Gates
from iwo_lite.home import Home
from iwo_lite.inbox import InboxWatcher
from iwo_lite.intake import Spec
from iwo_lite.runs.dispatcher import Dispatcher
from iwo_lite.store import AsyncStore
from iwo_lite.store import checkpoints
from iwo_lite.store import specs as spec_rows
from iwo_lite.store import workers as worker_rows

log = logging.getLogger("iwo_lite")
LOCK_PATIENCE_S = 1.0


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
    store = None
    shared = False  # Postgres: one worker of several
    launched = False
    notifiers: list = []
    try:
        await asyncio.to_thread(durable.prepare_database, config)
        store = await AsyncStore.open(config.database_url)
        shared = store.dialect == "postgresql"
        if shared:
            await workers.register(store, config, home.root)
        await store.run(worker_rows.daemon_started(os.getpid(), config.executor_id))
        gates = Gates(store, wake_gate)
        notifiers = notify.from_config(config, store, gates.answer)
        dispatcher = Dispatcher(config, home, store, plain.from_config(config), notify.secret_env_names(config))
        loop.install(loop.Runtime(config, home, store, dispatcher, notifiers))
        await durable.launch(config)
        launched = True
        running.add_signal_handler(signal.SIGUSR1, gates.poke)
        inbox = InboxWatcher(home.inbox, lambda spec: submit_in_daemon(store, home, spec))
        background = [  # held here: the loop keeps only weak references to tasks
            asyncio.create_task(gates.sweep_forever(), name="iwo-wake-answered"),
            asyncio.create_task(inbox.run_forever(), name="iwo-inbox"),
        ]
        if shared:
            background += [
                asyncio.create_task(workers.keep_watch(store, config, durable.Internals.recover_executors),
                                    name="iwo-workers"),
                asyncio.create_task(gates.listen_forever(config.database_url), name="iwo-answers"),
            ]
        for notifier in notifiers:
            notifier.start()
        log.info("daemon running on %s (pid %d, executor %s, %d background tasks)", home.root, os.getpid(),
                 config.executor_id, len(background))
        await _warn_of_other_replay_versions(store)
        await stop.wait()
        log.info("stopping: agent runs in flight continue detached and are re-attached on the next start")
    finally:
        for notifier in notifiers:
            await notifier.stop()
        await _cancel_other_tasks()
        if launched:
            durable.destroy()
        loop.install(None)
        if store is not None:
            if shared:
                await store.run(worker_rows.stopped(config.executor_id, os.getpid()))
            await store.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            running.remove_signal_handler(sig)
        os.close(lock_fd)


async def wake_gate(gate_id: str, spec_id: str) -> None:
    """Send the waiting workflow its answer's message, then wake its recv at once."""
    # Every worker may send this (each sweeps): the key makes it one message.
    await durable.send(spec_id, {"gate": gate_id}, topic=gate_id, idempotency_key=f"answer:{gate_id}")
    try:
        durable.Internals.wake_waiter(spec_id, gate_id)
    except Exception as error:  # DBOS moved its internals: the 1 s poll still delivers the answer
        log.warning("waking the gate's waiter at once failed (%s); DBOS's poll delivers it", error)


async def _warn_of_other_replay_versions(store: AsyncStore) -> None:
    """Unfinished specs started by a build with another REPLAY_VERSION: this daemon leaves them be."""
    for version, count in await store.run(checkpoints.other_versions()):
        log.warning("%d unfinished spec(s) were started by a build with replay version %s; this build (%s) "
                    "will not run them: see `iwo-lite doctor`", count, version, checkpoints.REPLAY_VERSION)


async def _cancel_other_tasks() -> None:
    """Cancel the workflow tasks DBOS started on this loop; their steps stay unrecorded and resume."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=5)


async def submit_in_daemon(store: AsyncStore, home: Home, spec: Spec) -> bool:
    """Queue a spec from inside the daemon (the inbox); False when its id already existed."""
    created = await store.run(spec_rows.queued(spec.id, spec.title, spec.source))
    if created:
        home.save_spec(spec.id, spec.text)
    await durable.enqueue_in_daemon(spec.workflow_input())
    return created
