"""The DBOS boundary: the only module that imports `dbos`.

Owns DBOS's configuration (pinned application_version, the portable JSON serializer, polling
intervals), preparing a database (our tables and DBOS's), launching and stopping DBOS in the
daemon, the client the shell uses, the decorators and calls the loop uses, and the DBOS
internals iwo-lite needs that have no public form, behind one shim (`Internals`) that
`check_internals()` verifies (a test fails loudly if an upgrade moves them):

* recovering the specs of another executor (a silent worker): `DBOS._recover_pending_workflows`,
  what DBOS's admin endpoint /dbos-workflow-recovery calls;
* waking this process's `recv` at once after the daemon's own `send` (on SQLite DBOS polls);
* slowing the polls of DBOS's own background threads that have no setting (quiet when idle);
* finding a workflow left PENDING with nothing running it, and handing it back to be replayed.

Every SQLite connection DBOS opens (its engines: launch, migrate, the client) gets, when the
SQLite library lacks it, the `unixepoch('subsec')` DBOS 3.4 writes on Python >= 3.12
(store/sqlite_compat.py says why): a SQLAlchemy "connect" listener on every Engine.

Importing this module costs ~0.6 s (SQLAlchemy, psycopg): commands that can answer without
DBOS (`status`, `doctor`, answers) never import it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from typing import Any

import sqlalchemy
from dbos import DBOS, DBOSClient, DBOSConfig, DBOSPortableJSONSerializer, SetWorkflowID
from dbos import error as dbos_error

from iwo_lite import store
from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.home import Home
from iwo_lite.store import sqlite_compat
from iwo_lite.store.checkpoints import APP_NAME, QUEUE_NAME, REPLAY_VERSION

WorkflowCancelled = dbos_error.DBOSWorkflowCancelledError
StepRetriesExceeded = dbos_error.DBOSMaxStepRetriesExceeded
SERIALIZER = DBOSPortableJSONSerializer()

# Quiet when idle: what DBOS polls, and how often (measured in bench/idle.py, BENCHMARKS.md).
# recv() is polled on SQLite, every waiter at every poll, so idle CPU grows with open gates x
# poll rate. Every answer reaches a gate through the daemon, which wakes the waiting recv at once
# (Internals.wake_waiter), and a recv's deadline is its own timer, so the poll is only a fallback.
# $IWO_NOTIFICATION_POLL_S overrides it (the benchmarks compare 0.1 s and 1 s).
NOTIFICATION_POLL_S = 10.0
# The queue only carries forked and resumed specs (submitted specs are started by the daemon's
# Starter at once): one of those waits at most this long for its first step.
QUEUE_POLL_S = float(os.environ.get("IWO_QUEUE_POLL_S") or 10.0)  # $IWO_QUEUE_POLL_S overrides it
# DBOS's own queue: recovery re-enqueues every unfinished spec there at launch, so it is polled every
# RECOVERY_POLL_S for the first RECOVERY_FAST_S (only when there is something to recover), every 1 s
# until RECOVERY_WINDOW_S, then this (a resumed cancelled spec, a silent worker's specs taken over,
# wait at most this long).
INTERNAL_QUEUE_POLL_S = float(os.environ.get("IWO_QUEUE_POLL_S") or 10.0)  # $IWO_QUEUE_POLL_S too
RECOVERY_WINDOW_S = 20.0
RECOVERY_POLL_S = 0.05  # the internal queue's poll for the first RECOVERY_FAST_S after launch (then 1 s)
RECOVERY_FAST_S = 3.0
BACKGROUND_JOBS_S = 30.0  # DBOS's sweep of delayed and timed-out workflows (iwo-lite uses neither); default 1 s
SCHEDULER_POLL_S = 600.0  # DBOS's scheduler (iwo-lite schedules nothing); default 30 s
STEP_RETRIES = dict(retries_allowed=True, max_attempts=4, interval_seconds=0.5, backoff_rate=2.0)
# Every daemon restart counts as a recovery attempt; a gate may wait through many restarts.
MAX_RECOVERY_ATTEMPTS = 1_000_000

step = DBOS.step
workflow = DBOS.workflow


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_functions(dbapi_connection, _record) -> None:
    """Each new SQLite connection of any engine (DBOS creates its own): unixepoch with 'subsec'."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        sqlite_compat.install(dbapi_connection)


def check_sqlite(config: Config) -> None:
    """UserError (one line, with the remedy) when DBOS cannot work on this Python with this SQLite."""
    if config.db_path is None:
        return  # Postgres
    refused = sqlite_compat.refusal()
    if refused:
        raise UserError(refused)


def notification_poll_s() -> float:
    try:
        return max(0.01, float(os.environ.get("IWO_NOTIFICATION_POLL_S", NOTIFICATION_POLL_S)))
    except ValueError:
        return NOTIFICATION_POLL_S


def dbos_config(config: Config) -> DBOSConfig:
    settings: dict[str, Any] = {
        "name": APP_NAME,
        "system_database_url": config.database_url,
        "application_version": REPLAY_VERSION,
        "executor_id": config.executor_id,
        "serializer": SERIALIZER,
        "notification_listener_polling_interval_sec": notification_poll_s(),
        "scheduler_polling_interval_sec": SCHEDULER_POLL_S,
        "log_level": "WARNING",
    }
    unknown = set(settings) - set(DBOSConfig.__annotations__)
    if unknown:  # DBOSConfig is a TypedDict: a misspelled key would be silently ignored
        raise RuntimeError(f"DBOS does not know the config keys {sorted(unknown)}")
    return settings  # type: ignore[return-value]


def prepare_database(config: Config) -> None:
    """Create the home, the database (SQLite: the file, 0600, WAL) and every table, DBOS's and ours.

    On Postgres DBOS.migrate creates the database itself when the role may (CREATEDB), and
    DBOS's tables in schema `dbos`; ours go in schema `iwo`.
    """
    check_sqlite(config)
    Home(config.home).create()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    if not store.is_postgres(config.database_url):
        store.prepare(config.database_url)
        DBOS.migrate(config.database_url)
        return
    from iwo_lite.store import pg

    pg.check_reachable(config.database_url)  # one clear error, before DBOS logs its own
    DBOS.migrate(config.database_url)  # creates the database when it is missing
    store.prepare(config.database_url)


# -- the daemon ----------------------------------------------------------------------------


async def launch(config: Config) -> None:
    """Launch DBOS inside the running event loop (it recovers this executor's unfinished specs:
    they go through DBOS's internal queue, polled fast at first, then slower: see RECOVERY_POLL_S)."""
    DBOS(config=dbos_config(config))
    Internals.quiet()
    quiet_expected()
    # the recovered specs are dequeued at once (DBOS's worker waits a whole poll before its first look)
    Internals.internal_queue_poll(RECOVERY_POLL_S)
    DBOS.launch()
    await DBOS.register_queue_async(QUEUE_NAME, polling_interval_sec=QUEUE_POLL_S)
    later = asyncio.get_running_loop().call_later
    if await Internals.nothing_to_recover(config.executor_id):
        Internals.internal_queue_poll(1.0)  # no fast window: it cost ~6% of a core for its 3 s
    else:
        later(RECOVERY_FAST_S, Internals.internal_queue_poll, 1.0)
    later(RECOVERY_WINDOW_S, Internals.internal_queue_poll, INTERNAL_QUEUE_POLL_S)


class ExpectedConditions(logging.Filter):
    """An expected condition logged with its traceback becomes one line (a traceback in the
    daemon's log means a bug): a cancelled workflow or task, a full disk, DBOS's per-task notes as
    the daemon stops, and a step's retries and its final failure (the spec records that error in
    one line, `status ID` shows it, `resume` retries it; `iwo-lite --debug run` keeps the
    tracebacks of those two)."""

    SHUTDOWN_NOISE = "Asyncio task cancelled for workflow or step"  # DBOS, per task, as the daemon stops
    RETRY = "Step being automatically retried"

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if record.name.startswith("dbos") and text.startswith(self.SHUTDOWN_NOISE):
            return False  # the daemon says "stopping" itself
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        failed_step = isinstance(error, StepRetriesExceeded) or text.startswith(self.RETRY)
        if expected(error) or (failed_step and not debug):
            last = (getattr(error, "errors", None) or [None])[-1]
            cause = (f"step {error.step_name} failed {error.max_retries} times; last: {type(last).__name__}: "
                     f"{_first_line(last)}" if isinstance(error, StepRetriesExceeded) and last is not None
                     else f"{type(error).__name__}: {_first_line(error)}")
            record.msg, record.args = f"{record.getMessage().rstrip().rstrip(':')}: {cause}", ()
            record.exc_info, record.exc_text = None, None
            if _cancelled(error) and record.levelno > logging.WARNING:  # `cancel` did it: not an error
                record.msg = f"a cancelled workflow ended ({type(error).__name__}: {_first_line(error)})"
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def expected(error: BaseException) -> bool:
    """A cancelled workflow or task, or a full disk (anywhere in the chain of causes)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, (WorkflowCancelled, dbos_error.DBOSAwaitedWorkflowCancelledError,
                              asyncio.CancelledError)):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "disk is full" in str(error) or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__ or getattr(error, "orig", None)
        seen += 1
    return False


def _cancelled(error: BaseException) -> bool:
    return isinstance(error, (WorkflowCancelled, dbos_error.DBOSAwaitedWorkflowCancelledError))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "(no message)"


def quiet_expected() -> None:
    """ExpectedConditions on DBOS's logger (its records go to its own handler) and on every handler
    of the root logger (ours, asyncio's, the notifiers')."""
    condition = ExpectedConditions()
    for target in [logging.getLogger("dbos"), *logging.getLogger().handlers]:
        if not any(isinstance(f, ExpectedConditions) for f in target.filters):
            target.addFilter(condition)


def destroy() -> None:
    """Stop DBOS. Its SQLite notification listener sleeps out a whole poll (10 s) before it sees
    the stop, and DBOS joins it: it is a daemon thread that holds nothing of ours, so it is not
    waited for (a stop takes well under a second instead of ~10 s)."""
    Internals.unjoin_notification_listener()
    DBOS.destroy(workflow_completion_timeout_sec=0)


def workflow_id() -> str:
    return DBOS.workflow_id  # type: ignore[return-value]


async def recv(topic: str, timeout_s: float) -> Any:
    return await DBOS.recv_async(topic=topic, timeout_seconds=timeout_s)


async def sleep(seconds: float) -> None:
    """A durable sleep: its wake-up time is recorded, so a restart sleeps only the rest."""
    await DBOS.sleep_async(seconds)


async def send(workflow: str, message: Any, topic: str, idempotency_key: str) -> None:
    await DBOS.send_async(workflow, message, topic=topic, idempotency_key=idempotency_key)


async def start_workflow(workflow, spec: dict) -> None:
    """Start a spec's workflow in this daemon, under the spec's id (the same id again attaches)."""
    with SetWorkflowID(spec["id"]):
        await DBOS.start_workflow_async(workflow, spec)


async def cancel(spec_id: str) -> None:
    await DBOS.cancel_workflow_async(spec_id)


# -- the shell -----------------------------------------------------------------------------


class Client:
    """DBOSClient for the shell commands (daemon running or not): cancel, resume, fork. (A resumed
    or forked spec goes through DBOS's queue, which the daemon serves; submit needs no DBOS.)"""

    def __init__(self, config: Config):
        self._client = DBOSClient(system_database_url=config.database_url, serializer=SERIALIZER,
                                  application_name=APP_NAME, system_database_pool_size=2)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self._client.destroy()

    def cancel(self, spec_id: str) -> None:
        self._client.cancel_workflow(spec_id)

    def resume(self, spec_id: str) -> None:
        self._client.resume_workflow(spec_id)

    def rewind(self, spec_id: str, start_step: int) -> None:
        """Run a failed workflow again from `start_step` (a failed step's error would replay)."""
        self._client.rewind_workflow(spec_id, start_step=start_step, application_version=REPLAY_VERSION,
                                     queue_name=QUEUE_NAME)

    def fork(self, spec_id: str, start_step: int, new_id: str) -> None:
        with SetWorkflowID(new_id):
            self._client.fork_workflow(spec_id, start_step, application_version=REPLAY_VERSION,
                                       queue_name=QUEUE_NAME)


# -- the internals -------------------------------------------------------------------------


class Internals:
    """DBOS internals with no public form (dbos pinned to 3.4.0). `check_internals` tests them."""

    @staticmethod
    def recover_executors(executor_ids: list[str]) -> list:
        """Hand a gone executor's PENDING workflows back to the queue (/dbos-workflow-recovery)."""
        return DBOS._recover_pending_workflows(executor_ids)

    @staticmethod
    def quiet() -> None:
        """Slow the polls of DBOS's own background threads that have no setting (see the constants
        above): its background jobs and its scheduler's first minute. Before DBOS.launch()."""
        from dbos import _scheduler, _workflow_commands

        _workflow_commands._BACKGROUND_JOBS_INTERVAL_SEC = BACKGROUND_JOBS_S
        _scheduler._STARTUP_FAST_POLL_DURATION_SEC = 0.0  # it polls every 1 s for a minute after launch

    @staticmethod
    def unjoin_notification_listener() -> bool:
        """Leave DBOS's notification listener thread (a daemon thread, asleep for its poll) out of
        the threads DBOS.destroy() joins. True when it was found (its default thread name ends
        with its target's name, "(run_notification_listener)")."""
        from dbos import _dbos

        instance = _dbos._dbos_global_instance
        threads = getattr(instance, "_background_threads", None)
        if not threads:
            return False
        listeners = [t for t in threads if t.name.endswith("(run_notification_listener)") and t.daemon]
        for thread in listeners:
            threads.remove(thread)
        return bool(listeners)

    @staticmethod
    def internal_queue_poll(seconds: float) -> None:
        """How often DBOS's internal queue (recovery, resumes) is polled from now on: fast for the
        launch's recovery, then slower (RECOVERY_POLL_S, 1 s, INTERNAL_QUEUE_POLL_S)."""
        from dbos import _dbos

        instance = _dbos._dbos_global_instance
        if instance is not None:
            instance._registry.get_internal_queue()._polling_interval_sec = seconds

    @staticmethod
    async def nothing_to_recover(executor_id: str) -> bool:
        """True when this executor has no PENDING workflow of this build (launch's recovery hands
        those to the internal queue) and the internal queue holds none ENQUEUED (a resume)."""
        from dbos import _dbos, _utils

        instance = _dbos._dbos_global_instance
        if instance is None or instance._sys_db.get_pending_workflows(executor_id, REPLAY_VERSION):
            return False
        queued = await DBOS.list_queued_workflows_async(queue_name=_utils.INTERNAL_QUEUE_NAME, status="ENQUEUED",
                                                        limit=1, load_input=False, load_output=False)
        return not queued

    @staticmethod
    def idle_pending(executor_id: str) -> list[str]:
        """This executor's PENDING workflows of this build that nothing in this process runs."""
        from dbos import _dbos

        instance = _dbos._dbos_global_instance
        if instance is None:
            return []
        active = set(instance._active_workflows_set.activeList())
        pending = instance._sys_db.get_pending_workflows(executor_id, REPLAY_VERSION)
        return [w.workflow_id for w in pending if w.workflow_id not in active]

    @staticmethod
    def requeue(workflow_id: str, executor_id: str) -> bool:
        """Hand a PENDING workflow back to DBOS's internal queue, as recovery does (it replays from its
        checkpoints); False when it is no longer PENDING under this executor."""
        from dbos import _dbos, _utils

        instance = _dbos._dbos_global_instance
        return bool(instance and instance._sys_db.reenqueue_for_recovery(workflow_id, [executor_id],
                                                                          _utils.INTERNAL_QUEUE_NAME))

    @staticmethod
    def wake_waiter(workflow: str, topic: str) -> bool:
        """End this process's recv on (workflow, topic) now instead of at DBOS's next poll.

        DBOS 3.4 on SQLite delivers messages by polling, even a send from the same process. The
        message is already committed when this runs; setting the waiter's in-memory event only
        makes recv look at once. If it does nothing, the poll still delivers the message.
        (IWO_WAKE_NUDGE=0 turns it off, for the benchmark's baseline.)
        """
        if os.environ.get("IWO_WAKE_NUDGE") == "0":
            return False
        from dbos import _dbos

        instance = _dbos._dbos_global_instance
        if instance is None:
            return False
        sys_db = instance._sys_db
        key, _ = sys_db._waiter(workflow, topic)
        event = sys_db.notifications_map.get(key)
        if event is None:
            return False
        event.set()
        return True


def check_internals() -> list[str]:
    """What is missing of the internals `Internals` uses; [] when all are there."""
    from dbos import _dbos, _sys_db

    missing = []
    if not callable(getattr(DBOS, "_recover_pending_workflows", None)):
        missing.append("DBOS._recover_pending_workflows")
    if not hasattr(_dbos, "_dbos_global_instance"):
        missing.append("dbos._dbos._dbos_global_instance")
    system_db = getattr(_sys_db, "SystemDatabase", None)
    if system_db is None or not callable(getattr(system_db, "_waiter", None)):
        missing.append("SystemDatabase._waiter")
    for method in ("get_pending_workflows", "reenqueue_for_recovery"):
        if system_db is None or not callable(getattr(system_db, method, None)):
            missing.append(f"SystemDatabase.{method}")
    from dbos import _core, _utils

    if not callable(getattr(getattr(_core, "ActiveWorkflowById", None), "activeList", None)):
        missing.append("ActiveWorkflowById.activeList")
    if not isinstance(getattr(_utils, "INTERNAL_QUEUE_NAME", None), str):
        missing.append("dbos._utils.INTERNAL_QUEUE_NAME")
    if system_db is not None and "notifications_map" not in getattr(system_db.__init__, "__code__", None).co_names:
        missing.append("SystemDatabase.notifications_map")
    from dbos import _queue, _scheduler, _workflow_commands

    if not isinstance(getattr(_workflow_commands, "_BACKGROUND_JOBS_INTERVAL_SEC", None), (int, float)):
        missing.append("dbos._workflow_commands._BACKGROUND_JOBS_INTERVAL_SEC")
    if not isinstance(getattr(_scheduler, "_STARTUP_FAST_POLL_DURATION_SEC", None), (int, float)):
        missing.append("dbos._scheduler._STARTUP_FAST_POLL_DURATION_SEC")
    if "_polling_interval_sec" not in getattr(_queue.Queue.__init__, "__code__", None).co_names:
        missing.append("Queue._polling_interval_sec")
    if "_background_threads" not in getattr(_dbos.DBOS.__init__, "__code__", None).co_names:
        missing.append("DBOS._background_threads")
    if not callable(getattr(system_db, "run_notification_listener", None)):
        missing.append("SystemDatabase.run_notification_listener")
    events = getattr(_sys_db, "ThreadSafeEventDict", None)
    if events is None or not callable(getattr(events, "get", None)):
        missing.append("ThreadSafeEventDict.get")
    return missing
