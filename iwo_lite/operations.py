"""Workflow management from the shell: cancel, resume, fork; clean (finished specs' worktrees and branches).

Owns the three operations on a spec's DBOS workflow (through durable.Client, so they work with
the daemon running or not) and the matching state changes (store/specs.py's state machine).
Unknown ids and impossible operations are a UserError (exit 2) that changes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from iwo_lite.config import Config
from iwo_lite.errors import EXIT_FAILURE, EXIT_OK, UserError
from iwo_lite.roles import ROLES
from iwo_lite.gates import poke_daemon
from iwo_lite.home import Home
from iwo_lite.store import Store, checkpoints
from iwo_lite.store.locks import spec_lock
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


def _current_state(config: Config, spec_id: str) -> str | None:
    from iwo_lite.store import readonly

    with readonly(config.database_url) as store:
        return store.run(spec_rows.state(spec_id)) if store is not None else None


def _locked(config: Config, spec_id: str):
    """The spec's lock (store/locks.py): one shell command at a time on a spec."""
    return spec_lock(config.database_url, config.home, spec_id)


def cancel(config: Config, args: argparse.Namespace) -> int:
    """Cancel the spec's workflow and stop its agent (cancel.py, with DBOS's client). The worktree
    stays (a cancelled spec can be resumed); `clean` removes it."""
    from iwo_lite import durable
    from iwo_lite.cancel import cancel_spec

    def cancel_workflow(spec_id: str) -> None:
        durable.prepare_database(config)
        with durable.Client(config) as client:
            client.cancel(spec_id)

    report, all_gone = cancel_spec(config, args.spec_id, cancel_workflow)
    poke_daemon(Home(config.home).lock)  # its slot is free: the next queued spec starts now, not at a poll
    print(report)
    return EXIT_OK if all_gone else 1


def resume(config: Config, args: argparse.Namespace) -> int:
    """Resume a cancelled spec, or re-run a failed one from its failing step. Its worktree is made
    again from its branch first when it is missing or half-made; the state change is claimed by one
    guarded UPDATE (a second resume at the same instant is refused), and put back if DBOS refuses."""
    from iwo_lite import durable

    with _locked(config, args.spec_id):
        state = _spec_state(config, args.spec_id)
        if state not in ("cancelled", "failed"):
            raise UserError(f"{args.spec_id}: is {state}; only a cancelled or failed spec can be resumed")
        durable.prepare_database(config)
        with Store.open(config.database_url) as store:
            failed_step = store.run(checkpoints.first_failed_step(args.spec_id))
            elsewhere = store.run(checkpoints.resumed_elsewhere(args.spec_id))
            where = store.run(spec_rows.workspace_of(args.spec_id))
        if elsewhere is not None and not (state == "failed" and failed_step is not None):
            raise UserError(elsewhere)  # a rewind re-runs the failed step under this build's version; a resume would not
        repaired = _remake_worktree(config, args.spec_id, where)
        with Store.open(config.database_url) as store:
            if not store.run(spec_rows.resumed(args.spec_id)):
                raise UserError(f"{args.spec_id}: is {store.run(spec_rows.state(args.spec_id))} now; not resumed")
        try:
            with durable.Client(config) as client:
                if state == "failed" and failed_step is not None:
                    client.rewind(args.spec_id, failed_step)  # a failed step's error would replay: run it again
                else:
                    client.resume(args.spec_id)
        except BaseException:
            with Store.open(config.database_url) as store:
                store.run(spec_rows.unresumed(args.spec_id, state))
            raise
    for line in repaired:
        print(f"worktree of {args.spec_id}: {line}")
    print(f"resumed {args.spec_id}: it continues from its last finished step")
    return EXIT_OK


def _remake_worktree(config: Config, spec_id: str, where: dict | None) -> list[str]:
    """Worktree mode: make the spec's worktree again from its branch `iwo/<id>` (commits intact)
    when it is missing or half-made, so the step that resumes finds it. UserError when it cannot be
    (the branch was deleted): nothing is resumed. Returns what was repaired, one line each."""
    from iwo_lite import workspace

    if not where or not where.get("branch"):
        return []  # shared mode, or no dispatch made a worktree yet (the prepare step makes it)
    repo = workspace.describe_repo(str(config.workdir))
    if not repo["repository"]:
        return []  # another machine's spec, or the workdir moved: the prepare step asks (a gate)
    branch = where["branch"]
    tip = workspace.branch_head(repo["toplevel"], branch)
    if tip is None:
        head = where.get("head")
        restore = f" (`git branch {branch} {head}` restores it if that commit is still there)" if head else ""
        raise UserError(f"{spec_id}: its branch {branch} is gone from {repo['toplevel']}{restore}; resume needs it"
                        f" to make the worktree again. Restore the branch and resume, or fork {spec_id} --from ROLE")
    try:
        made = workspace.ensure_worktree(repo["toplevel"], str(Home(config.home).worktree(spec_id)), branch,
                                         where.get("base_commit"), head=tip)
    except workspace.WorkspaceError as error:
        raise UserError(f"{spec_id}: cannot make its worktree again: {error}") from None
    return (["made again from branch " + branch] if made["created"] else []) + list(made["repaired"])


def fork(config: Config, args: argparse.Namespace) -> int:
    """Re-run from ROLE's most recent dispatch, on the recorded state, as a new spec. The new id is
    claimed by inserting its row (forks at the same instant get -fork1, -fork2, ...)."""
    from iwo_lite import durable

    if args.from_role not in ROLES:
        raise UserError(f"--from {args.from_role!r}: expected one of {', '.join(ROLES)}")
    _spec_state(config, args.spec_id)
    with Store.open(config.database_url) as store:
        # no DBOS tables yet (no daemon ever ran here): nothing has run, so nothing to fork from
        row = store.run(checkpoints.fork_point(args.spec_id, args.from_role)) \
            if store.has_table("operation_outputs") else None
        if row is None:
            raise UserError(f"{args.spec_id}: the {args.from_role} has not run yet; nothing to fork from")
        new_id = store.run(spec_rows.forked(args.spec_id, args.from_role, config.budget.spec_cap_usd))
    if new_id is None:
        raise UserError(f"{args.spec_id}: no such spec")
    try:
        durable.prepare_database(config)
        with durable.Client(config) as client:
            client.fork(args.spec_id, row["function_id"], new_id)
    except BaseException:
        with Store.open(config.database_url) as store:
            store.run(spec_rows.unforked(new_id))
        raise
    print(f"forked {args.spec_id} from its {args.from_role} (dispatch {row['step']:02d}) as:")
    print(new_id)
    return EXIT_OK


def clean(config: Config, args: argparse.Namespace) -> int:
    """Remove the worktrees (`<home>/worktrees/<id>`) of finished specs and, with --branches, their
    branches `iwo/<id>` in the workdir's repository. A spec that is queued, running or waiting is
    never touched; nor is anything that is not a spec of this database (another home's branch, a
    directory moved aside to worktrees/.orphaned). With IDs, only those specs (each must exist and
    be finished, else exit 2 and nothing is removed). Prints one line per thing removed."""
    from iwo_lite import workspace
    from iwo_lite.store import readonly

    spec_ids = list(dict.fromkeys(args.spec_ids or []))
    with readonly(config.database_url) as store:
        specs = {row["id"]: row for row in store.run(spec_rows.listed())[0]} if store is not None else {}
    for spec_id in spec_ids:
        if spec_id not in specs:
            raise UserError(f"{spec_id}: no such spec")
        if specs[spec_id]["state"] not in spec_rows.FINAL_STATES:
            raise UserError(f"{spec_id}: is {specs[spec_id]['state']}; only a finished spec's worktree and branch "
                            "can be removed (cancel it first)")
    wanted = set(spec_ids) if spec_ids else set(specs)
    finished = {spec_id for spec_id in wanted if specs[spec_id]["state"] in spec_rows.FINAL_STATES}
    repo = workspace.describe_repo(str(config.workdir))
    if args.branches and not repo["repository"]:
        raise UserError(f"--branches: workdir {config.workdir} is not a git repository; there are no branches to"
                        " delete")
    home = Home(config.home)
    root = home.worktrees
    # each spec's worktree: its directory, one left half-removed, or a registration whose directory is gone
    names = set()
    if root.is_dir():
        for entry in root.iterdir():
            name = entry.name
            if name.startswith(".") and name.endswith(".removing"):
                name = name[1:-len(".removing")]
            names.add(name)
    if repo["repository"]:
        for entry in workspace.list_worktrees(repo["toplevel"]):
            path = os.path.realpath(entry["path"])
            if os.path.dirname(path) == os.path.realpath(root):
                names.add(os.path.basename(path))
    removed = 0
    kept: list[str] = []
    unmerged: list[str] = []
    failed: list[str] = []
    for name in sorted(names & wanted):
        if name not in finished:
            kept.append(f"{name} ({specs[name]['state']})")
            continue
        path = home.worktree(name)
        with _locked(config, name):  # a resume at the same instant needs this worktree
            now = _current_state(config, name)
            if now not in spec_rows.FINAL_STATES:
                kept.append(f"{name} ({now})")
                continue
            try:
                result = workspace.remove_worktree(repo["toplevel"] if repo["repository"] else str(config.workdir),
                                                   str(path))
            except workspace.WorkspaceError as error:
                failed.append(f"worktree {path}: {error}")
                continue
        if result["removed"]:
            removed += 1
            print(f"removed worktree {path} (spec {name}, {specs[name]['state']})")
    if args.branches:
        for spec_id in sorted(finished):
            branch = specs[spec_id]["branch"] or workspace.spec_branch(spec_id)
            with _locked(config, spec_id):
                if _current_state(config, spec_id) not in spec_rows.FINAL_STATES:
                    continue  # resumed meanwhile: its branch is in use again
                with Store.open(config.database_url) as store:
                    into = (store.run(spec_rows.workspace_of(spec_id)) or {}).get("base_branch")
                if not args.force and workspace.unmerged(repo["toplevel"], branch, into):
                    unmerged.append(f"{branch} (not merged into {into or 'its base branch'})")
                    continue
                try:
                    deleted = workspace.delete_branch(repo["toplevel"], branch)
                except workspace.WorkspaceError as error:
                    failed.append(f"branch {branch}: {error}")
                    continue
            if deleted["deleted"]:
                removed += 1
                print(f"deleted branch {branch} (was {deleted['sha'][:12]}; `git branch {branch} {deleted['sha']}`"
                      " restores it)")
    if kept:
        print(f"kept the worktree(s) of {len(kept)} unfinished spec(s): {', '.join(kept)}")
    if unmerged:
        print(f"kept {len(unmerged)} branch(es) whose work is not merged (their only copy): {', '.join(unmerged)};"
              " --force deletes them too")
    for line in failed:
        print(f"iwo-lite: clean: could not remove {line}", file=sys.stderr)
    if not removed and not failed:
        print("nothing to clean")
    return EXIT_FAILURE if failed else EXIT_OK
