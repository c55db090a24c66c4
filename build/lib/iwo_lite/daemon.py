"""The daemon (`iwo-lite run`): one asyncio process that owns the home while it runs.

Owns: the exclusive lock on `<home>/daemon.lock` (one launched DBOS per database file),
preparing the database, launching DBOS inside the running loop (which recovers unfinished
specs), serving the spec queue, and a clean stop on SIGINT/SIGTERM. The loop itself is in
loop.py; agent processes in dispatch.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from pathlib import Path

from dbos import DBOS

from iwo_lite import loop
from iwo_lite.config import Config
from iwo_lite.db import QUEUE_NAME, Home
from iwo_lite.dispatch import Dispatcher
from iwo_lite.engine import QUEUE_POLL_S, dbos_config, prepare_database
from iwo_lite.errors import UserError
from iwo_lite.ledger import Ledger

log = logging.getLogger("iwo_lite")


def acquire_lock(lock_path: Path) -> int:
    """Hold an exclusive flock on the home for this process's lifetime; the fd is not inherited."""
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
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
    lock_fd = acquire_lock(home.lock)
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, stop.set)
    ledger = None
    launched = False
    try:
        await asyncio.to_thread(prepare_database, config)
        ledger = await Ledger.open(config.db_path) if config.db_path else None
        if ledger is None:
            raise UserError(f"database_url: {config.database_url_redacted}: only sqlite is supported by this build")
        loop.install(loop.Runtime(config, home, ledger, Dispatcher(config, home, ledger)))
        DBOS(config=dbos_config(config))
        DBOS.launch()
        launched = True
        await DBOS.register_queue_async(QUEUE_NAME, polling_interval_sec=QUEUE_POLL_S)
        log.info("daemon running on %s (pid %d, executor %s)", home.root, os.getpid(), config.executor_id)
        await stop.wait()
        log.info("stopping: agent runs in flight continue detached and are re-attached on the next start")
    finally:
        await _cancel_other_tasks()
        if launched:
            DBOS.destroy(workflow_completion_timeout_sec=0)
        loop.install(None)
        if ledger is not None:
            await ledger.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.remove_signal_handler(sig)
        os.close(lock_fd)


async def _cancel_other_tasks() -> None:
    """Cancel the workflow tasks DBOS started on this loop; their steps stay unrecorded and resume."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=5)
