"""Workflow management from the shell: cancel, resume, fork.

Owns the three operations on a spec's DBOS workflow (through durable.Client, so they work with
the daemon running or not) and the matching state changes (store/specs.py's state machine).
Unknown ids and impossible operations are a UserError (exit 2) that changes nothing.
"""

from __future__ import annotations

import argparse

from iwo_lite.config import Config
from iwo_lite.errors import EXIT_OK, UserError
from iwo_lite.roles import ROLES
from iwo_lite.home import Home
from iwo_lite.runs.launcher import stop_runs
from iwo_lite.store import Store, checkpoints
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows


def _spec_state(config: Config, spec_id: str) -> str:
    db_path = config.db_path
    if db_path is not None and not db_path.exists():
        raise UserError(f"{spec_id}: no such spec")
    with Store.open(config.database_url) as store:
        state = store.run(spec_rows.state(spec_id))
    if state is None:
        raise UserError(f"{spec_id}: no such spec")
    return state


def cancel(config: Config, args: argparse.Namespace) -> int:
    from iwo_lite import durable
    from iwo_lite.daemon import remove_spec_worktree

    state = _spec_state(config, args.spec_id)
    if state in spec_rows.FINAL_STATES:
        raise UserError(f"{args.spec_id}: already {state}; nothing to cancel")
    durable.prepare_database(config)
    with durable.Client(config) as client:
        client.cancel(args.spec_id)
    with Store.open(config.database_url) as store:
        store.run(spec_rows.cancelled(args.spec_id))
        run_dirs = store.run(run_rows.unfinished_run_dirs(args.spec_id))
    stopped = stop_runs(run_dirs)
    remove_spec_worktree(config, Home(config.home), args.spec_id)
    print(f"cancelled {args.spec_id}" + (f"; stopped {stopped} agent run(s)" if stopped else ""))
    return EXIT_OK


def resume(config: Config, args: argparse.Namespace) -> int:
    from iwo_lite import durable

    state = _spec_state(config, args.spec_id)
    if state not in ("cancelled", "failed"):
        raise UserError(f"{args.spec_id}: is {state}; only a cancelled or failed spec can be resumed")
    durable.prepare_database(config)
    with Store.open(config.database_url) as store:
        failed_step = store.run(checkpoints.first_failed_step(args.spec_id))
    with durable.Client(config) as client:
        if state == "failed" and failed_step is not None:
            client.rewind(args.spec_id, failed_step)  # a failed step's error would replay: run it again
        else:
            client.resume(args.spec_id)
    with Store.open(config.database_url) as store:
        store.run(spec_rows.resumed(args.spec_id))
    print(f"resumed {args.spec_id}: it continues from its last finished step")
    return EXIT_OK


def fork(config: Config, args: argparse.Namespace) -> int:
    """Re-run from ROLE's most recent dispatch, on the recorded state, as a new spec."""
    from iwo_lite import durable

    if args.from_role not in ROLES:
        raise UserError(f"--from {args.from_role!r}: expected one of {', '.join(ROLES)}")
    _spec_state(config, args.spec_id)
    with Store.open(config.database_url) as store:
        row = store.run(checkpoints.fork_point(args.spec_id, args.from_role))
        if row is None:
            raise UserError(f"{args.spec_id}: the {args.from_role} has not run yet; nothing to fork from")
        new_id = store.run(spec_rows.forked(args.spec_id, args.from_role))
    durable.prepare_database(config)
    with durable.Client(config) as client:
        client.fork(args.spec_id, row["function_id"], new_id)
    print(f"forked {args.spec_id} from its {args.from_role} (dispatch {row['step']:02d}) as:")
    print(new_id)
    return EXIT_OK
