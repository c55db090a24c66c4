"""DBOS settings shared by the daemon and the writing commands, in one place.

Owns: the DBOS config dict (pinned application_version, portable JSON serializer, polling
intervals), preparing a database before first use (our migrations and DBOS's), and the
DBOSClient the shell commands use when the daemon may not be running. Importing this module
imports DBOS (~0.6 s), so only commands that need DBOS import it, and lazily.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig
from dbos._serialization import DBOSPortableJSON

from iwo_lite.config import Config
from iwo_lite.db import (APP_NAME, QUEUE_NAME, REPLAY_VERSION, WORKFLOW_NAME, Home, is_postgres, prepare_home,
                         prepare_postgres)

# recv() and queue dequeues are polled on SQLite, each waiter queried at every poll, so idle
# CPU grows with open gates x poll rate. Every answer reaches a gate through the daemon, which
# wakes the waiting recv at once (daemon.nudge_local_waiter), so the poll is only a fallback:
# DBOS's default 1 s keeps 50 open gates at a few % of a core. 0.2 s for the queue: a spec
# waits that long at most before its first step. Measured in bench/ (BENCHMARKS.md).
# $IWO_NOTIFICATION_POLL_S overrides the first (the benchmark compares 0.1 s and 1 s).
NOTIFICATION_POLL_S = 1.0
QUEUE_POLL_S = 0.2


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
        "serializer": DBOSPortableJSON,
        "notification_listener_polling_interval_sec": notification_poll_s(),
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
    prepare_home(Home(config.home), config.db_path)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    if not is_postgres(config.database_url):
        DBOS.migrate(config.database_url)
        return
    from iwo_lite import pg

    pg.check_reachable(config.database_url)  # one clear error, before DBOS logs its own
    DBOS.migrate(config.database_url)  # creates the database when it is missing
    prepare_postgres(config.database_url)


def open_client(config: Config) -> DBOSClient:
    return DBOSClient(
        system_database_url=config.database_url,
        serializer=DBOSPortableJSON,
        application_name=APP_NAME,
        system_database_pool_size=2,
    )


def enqueue_options(spec_id: str) -> dict:
    """The spec's workflow, under the spec's own id: the same id again attaches, never re-runs."""
    return {
        "workflow_name": WORKFLOW_NAME,
        "queue_name": QUEUE_NAME,
        "workflow_id": spec_id,
        "app_version": REPLAY_VERSION,
        "application_name": APP_NAME,
    }


def enqueue_spec(client: DBOSClient, spec: dict) -> str:
    """Queue from outside the daemon (the shell's `submit`)."""
    return client.enqueue(enqueue_options(spec["id"]), spec).get_workflow_id()


async def enqueue_spec_in_daemon(spec: dict) -> str:
    """Queue from inside the launched daemon (the inbox)."""
    handle = await DBOS.enqueue_workflow_with_options_async(enqueue_options(spec["id"]), spec)
    return handle.get_workflow_id()
