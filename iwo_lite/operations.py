"""Workflow management from the shell: cancel, resume, fork.

Owns the three operations on a spec's DBOS workflow (through DBOSClient, so they work with
the daemon running or not) and the matching changes to iwo_specs. Unknown ids and impossible
operations are a UserError (exit 2) that changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.db import FINAL_STATES, QUEUE_NAME, REPLAY_VERSION, Home, open_db, utc_now
from iwo_lite.dispatch import RunDir
from iwo_lite.errors import EXIT_OK, UserError
from iwo_lite.handoff import write_once
from iwo_lite.roles import ROLES
from iwo_lite.submit import SPEC_ID


def _spec_state(config: Config, spec_id: str) -> str:
    db_path = config.db_path
    if db_path is not None and not db_path.exists():
        raise UserError(f"{spec_id}: no such spec")
    with contextlib.closing(open_db(config.database_url)) as conn:
        row = conn.execute("SELECT state FROM iwo_specs WHERE id = ?", (spec_id,)).fetchone()
    if row is None:
        raise UserError(f"{spec_id}: no such spec")
    return row["state"]


def _set_state(config: Config, spec_id: str, state: str) -> None:
    with contextlib.closing(open_db(config.database_url)) as conn:
        conn.execute("UPDATE iwo_specs SET state = ?, updated_at = ? WHERE id = ?", (state, utc_now(), spec_id))


def cancel(config: Config, args: argparse.Namespace) -> int:
    from iwo_lite.engine import open_client, prepare_database

    state = _spec_state(config, args.spec_id)
    if state in FINAL_STATES:
        raise UserError(f"{args.spec_id}: already {state}; nothing to cancel")
    prepare_database(config)
    client = open_client(config)
    try:
        client.cancel_workflow(args.spec_id)
    finally:
        client.destroy()
    _set_state(config, args.spec_id, "cancelled")
    stopped = _stop_live_runs(config, args.spec_id)
    print(f"cancelled {args.spec_id}" + (f"; stopped {stopped} agent run(s)" if stopped else ""))
    return EXIT_OK


def _stop_live_runs(config: Config, spec_id: str) -> int:
    with contextlib.closing(open_db(config.database_url)) as conn:
        run_dirs = [row["run_dir"] for row in conn.execute(
            "SELECT run_dir FROM iwo_attempts WHERE spec_id = ? AND finished_at IS NULL", (spec_id,))]
    stopped = 0
    for run_dir in run_dirs:
        run = RunDir(Path(run_dir))
        recorded = run.recorded_pid()
        if recorded and run.exit_code() is None and run.is_live():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(recorded[0], signal.SIGTERM)
                stopped += 1
    return stopped


def resume(config: Config, args: argparse.Namespace) -> int:
    from iwo_lite.engine import open_client, prepare_database

    state = _spec_state(config, args.spec_id)
    if state not in ("cancelled", "failed"):
        raise UserError(f"{args.spec_id}: is {state}; only a cancelled or failed spec can be resumed")
    prepare_database(config)
    with contextlib.closing(open_db(config.database_url)) as conn:
        failed_step = conn.execute(
            "SELECT MIN(function_id) FROM operation_outputs WHERE workflow_uuid = ? AND error IS NOT NULL",
            (args.spec_id,)).fetchone()[0]
    client = open_client(config)
    try:
        if state == "failed" and failed_step is not None:
            # A failed step's error is recorded and would replay: rewind to it and run it again.
            client.rewind_workflow(args.spec_id, start_step=failed_step, application_version=REPLAY_VERSION,
                                   queue_name=QUEUE_NAME)
        else:
            client.resume_workflow(args.spec_id)
    finally:
        client.destroy()
    with contextlib.closing(open_db(config.database_url)) as conn:
        open_gate = conn.execute("SELECT 1 FROM iwo_gates WHERE spec_id = ? AND answer IS NULL",
                                 (args.spec_id,)).fetchone()
    _set_state(config, args.spec_id, "waiting" if open_gate else "queued")
    print(f"resumed {args.spec_id}: it continues from its last finished step")
    return EXIT_OK


def _last_dispatch(conn, spec_id: str, role: str) -> dict | None:
    """{function_id, step} of the role's most recent recorded dispatch step (outputs are portable JSON)."""
    for function_id, output in conn.execute(
            "SELECT function_id, output FROM operation_outputs WHERE workflow_uuid = ? AND function_name = 'dispatch'"
            " AND output IS NOT NULL ORDER BY function_id DESC", (spec_id,)).fetchall():
        recorded = json.loads(output)
        if isinstance(recorded, dict) and recorded.get("role") == role:
            return {"function_id": function_id, "step": recorded.get("step") or 0}
    return None


def fork(config: Config, args: argparse.Namespace) -> int:
    """Re-run from ROLE's most recent dispatch, on the recorded state, as a new spec."""
    from iwo_lite.engine import open_client, prepare_database

    if args.from_role not in ROLES:
        raise UserError(f"--from {args.from_role!r}: expected one of {', '.join(ROLES)}")
    _spec_state(config, args.spec_id)
    with contextlib.closing(open_db(config.database_url)) as conn:
        row = _last_dispatch(conn, args.spec_id, args.from_role)
        if row is None:
            raise UserError(f"{args.spec_id}: the {args.from_role} has not run yet; nothing to fork from")
        forks = conn.execute("SELECT COUNT(*) FROM iwo_specs WHERE parent_id = ?", (args.spec_id,)).fetchone()[0]
        original = conn.execute("SELECT title, source FROM iwo_specs WHERE id = ?", (args.spec_id,)).fetchone()
        new_id = f"{args.spec_id[:54]}-fork{forks + 1}"
        assert SPEC_ID.match(new_id)
        now = utc_now()
        conn.execute(
            "INSERT INTO iwo_specs (id, title, state, role, source, parent_id, created_at, updated_at)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
            (new_id, original["title"], args.from_role, original["source"], args.spec_id, now, now))
    home = Home(config.home)
    spec_md = home.spec_dir(args.spec_id) / "spec.md"
    if spec_md.exists():
        write_once(home.spec_dir(new_id) / "spec.md", spec_md.read_text(encoding="utf-8"))
    prepare_database(config)
    from dbos import SetWorkflowID

    client = open_client(config)
    try:
        with SetWorkflowID(new_id):
            client.fork_workflow(args.spec_id, row["function_id"], application_version=REPLAY_VERSION,
                                 queue_name=QUEUE_NAME)
    finally:
        client.destroy()
    print(f"forked {args.spec_id} from its {args.from_role} (dispatch {row['step']:02d}) as:")
    print(new_id)
    return EXIT_OK
