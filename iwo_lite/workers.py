"""Several workers on one Postgres database: who is alive, and taking over from who is not.

Owns this worker's row in iwo_workers (registered at start, a heartbeat every
worker_timeout / 3, `stopped_at` on a clean stop) and the watch over the others: a worker not
heard from for `worker_timeout` is presumed gone, and exactly one live worker claims it (a
guarded UPDATE) and hands its unfinished specs back to the queue with DBOS's recovery for
other executors (`DBOS._recover_pending_workflows([executor_id])`, what DBOS's admin
endpoint /dbos-workflow-recovery and Conductor call). Any worker then dequeues them and
replays them from their last checkpoint; runs/dispatcher.py re-attaches to the gone worker's agent
runs when they are on the same host. The slots of agent.global_max_concurrent that the gone
worker held are freed. On SQLite none of this runs: one daemon per file (daemon.lock).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.runs.journal import HOST, process_start_time
from iwo_lite.store import AsyncStore
from iwo_lite.store import runs as run_rows
from iwo_lite.store import workers as worker_rows
from iwo_lite.times import iso_utc, parse_utc

log = logging.getLogger("iwo_lite")
MAX_HEARTBEAT_S = 10.0


def heartbeat_s(config: Config) -> float:
    return min(MAX_HEARTBEAT_S, config.worker_timeout / 3)


async def register(store: AsyncStore, config: Config, home: Path) -> None:
    """Take this worker's row; UserError when another live worker already uses this executor_id."""
    me = config.executor_id
    row = await store.run(worker_rows.row(me))
    if row is not None and row["stopped_at"] is None and row["pid"] != os.getpid():
        silent_for = time.time() - parse_utc(row["heartbeat_at"])
        same_home = row["host"] == HOST and row["home"] == str(home)  # daemon.lock says that one is gone
        alive_here = row["host"] == HOST and process_start_time(row["pid"]) is not None
        if not same_home and silent_for < config.worker_timeout and (row["host"] != HOST or alive_here):
            raise UserError(
                f"executor_id {me!r}: already used by a live worker (pid {row['pid']} on {row['host']}, "
                f"home {row['home']}, heard from {silent_for:.0f}s ago); give every worker its own executor_id")
    await store.run(worker_rows.registered(me, HOST, os.getpid(), str(home)))
    freed = await store.run(run_rows.slots_release_all(me))  # held by this executor before a crash
    if config.agent.global_max_concurrent:
        await store.run(run_rows.slots_ensure(config.agent.global_max_concurrent))
    if freed:
        log.info("freed %d agent slot(s) held before this worker's restart", freed)


async def keep_watch(store: AsyncStore, config: Config, recover) -> None:
    """Heartbeat, and take over silent workers' specs; `recover(executor_ids)` is DBOS's recovery."""
    me = config.executor_id
    while True:
        try:
            if not await store.run(worker_rows.heartbeat(me, os.getpid())):
                log.error("executor_id %r was taken by another worker; stop this one", me)
            silent_since = iso_utc(time.time() - config.worker_timeout)
            for gone in await store.run(worker_rows.silent(me, silent_since)):
                if await store.run(worker_rows.claimed(gone, me, silent_since)):
                    handles = await asyncio.to_thread(recover, [gone])
                    freed = await store.run(run_rows.slots_release_all(gone))
                    log.warning("worker %s silent for over %gs: %d unfinished spec(s) back on the queue%s",
                                gone, config.worker_timeout, len(handles),
                                f", {freed} agent slot(s) freed" if freed else "")
        except Exception as error:  # the database away for a moment: the next round retries
            log.warning("worker heartbeat failed: %s", error)
        await asyncio.sleep(heartbeat_s(config))
