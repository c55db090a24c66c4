"""Cancelling a spec: the one path for the shell (`iwo-lite cancel`), a notifier's /cancel and the web.

Owns the order of a cancel, under the spec's lock (store/locks.py: one command at a time on a
spec): the spec must exist and be unfinished; its DBOS workflow is cancelled (by the caller's
`cancel_workflow`: DBOS's client from the shell, the daemon's own DBOS inside it); the state
change is one guarded UPDATE (a spec that finished meanwhile stays finished, and says so); then
its agent runs are stopped and anything their dead wrappers left is swept. The worktree stays: a
cancelled spec can be resumed; `clean` removes it. A refusal is a UserError (one line, exit 2).
"""

from __future__ import annotations

from typing import Callable

from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.home import Home
from iwo_lite.runs.launcher import cancel_report, stop_runs, sweep_spec
from iwo_lite.store import Store
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.store.locks import spec_lock


def cancel_spec(config: Config, spec_id: str, cancel_workflow: Callable[[str], None]) -> tuple[str, bool]:
    """(the report line, whether every process of the spec is gone)."""
    db_path = config.db_path
    if db_path is not None and not db_path.exists():
        raise UserError(f"{spec_id}: no such spec")
    with spec_lock(config.database_url, config.home, spec_id):
        with Store.open(config.database_url) as store:
            state = store.run(spec_rows.state(spec_id))
        if state is None:
            raise UserError(f"{spec_id}: no such spec")
        if state in spec_rows.FINAL_STATES:
            raise UserError(f"{spec_id}: already {state}; nothing to cancel")
        cancel_workflow(spec_id)
        with Store.open(config.database_url) as store:
            if not store.run(spec_rows.cancelled(spec_id)):  # it finished meanwhile
                raise UserError(f"{spec_id}: already {store.run(spec_rows.state(spec_id))}; nothing to cancel")
            run_dirs = store.run(run_rows.unfinished_run_dirs(spec_id))
        stopped = stop_runs(run_dirs)
        swept = sweep_spec(Home(config.home).runs / spec_id)  # an agent its dead wrapper left behind, too
    return cancel_report(spec_id, stopped, swept), not swept[1]
