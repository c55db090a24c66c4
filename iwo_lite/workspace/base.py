"""The workspace interface: where a spec's dispatches run, what follows each, how the spec ends.

A kind is chosen per spec at admission (`settings_for`: config `workspace`, and whether the
workdir is a repository with a commit) and recorded in the spec's settings, so a spec keeps its
kind to its end; `of(settings)` gives it back. The loop calls only these methods, from its DBOS
steps (so each is idempotent: a step may run again after a kill -9) and branches only on the
kind's two capabilities: `commits` (a commit step after each dispatch, a repair step when that
cannot be made) and `ends` (an end step after the last role). Every method takes the daemon's
runtime (`ctx`: its config, home and store).

    shared     workspace/shared.py    the workdir itself: nothing to make, commit or end
    worktree   workspace/worktree.py  its own branch iwo/<id> and git worktree, a commit per
                                      dispatch, keep / merge / done command at the end

A new kind (a container, say) is one module with a class like these and one line in KINDS (and
its name in config.WORKSPACES); the OS sandbox (sandbox.py) confines the agent to whatever
directory `prepare` gives.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

# kind -> "module:Class" implementing it (imported when a spec of that kind runs)
KINDS: dict[str, str] = {
    "shared": "iwo_lite.workspace.shared:Shared",
    "worktree": "iwo_lite.workspace.worktree:Worktree",
}


class Workspace(Protocol):
    name: str
    commits: bool  # the loop runs the `commit` step after each dispatch (and `repair_worktree` when it fails)
    ends: bool  # the loop runs the `finish_workspace` step after the last role

    def settings(self, config, spec_row: dict) -> dict | None:
        """At admission: this kind's settings for the spec ({"workspace": name, "repo", "prefix", "base",
        "base_branch"}), or None when the kind cannot serve it here."""

    async def admitted(self, ctx, spec_id: str, settings: dict) -> None:
        """Right after admission (recording what this home owns, e.g. the spec's branch)."""

    async def prepare(self, ctx, spec_id: str, settings: dict, head: str | None) -> dict:
        """Before a dispatch: {"cwd": where the agent runs, "start": the commit it starts from or None,
        "blocked": a question for the human when it cannot run there (else None), "foreign": True when
        the question is about something this home did not make}."""

    async def adopt(self, ctx, spec_id: str) -> None:
        """A human's yes to a foreign `blocked`: take it as the spec's own."""

    async def commit(self, ctx, spec_id: str, step: int, role: str, summary: str, settings: dict,
                     start: str | None) -> dict:
        """After a dispatch: {"commit": sha or None, "head": the tip now} or {"error": the question}."""

    async def repair(self, ctx, spec_id: str, settings: dict, head: str | None) -> dict:
        """After a human's yes to a failed commit: made usable again; {"head", "repaired"} or {"error"}."""

    async def finish(self, ctx, spec_id: str, state: str, settings: dict, title: str) -> dict:
        """The spec ended in `state`: {"ok": True} when all is done (and cleaned up), else {"ok": False,
        "question"} to ask (approve tries again)."""


_made: dict[str, Any] = {}


def of(settings: dict) -> Workspace:
    """The kind a spec's settings name (the one fixed at its admission)."""
    name = settings.get("workspace") or "shared"
    if name not in _made:
        module, cls = KINDS[name].split(":")
        _made[name] = getattr(importlib.import_module(module), cls)()
    return _made[name]


def settings_for(config, spec_row: dict) -> dict:
    """The workspace a new spec gets: config `workspace` when set ("worktree" refuses a workdir that is
    not a repository with a commit), else a worktree where the workdir is such a repository, else
    the shared workdir."""
    from iwo_lite.workspace.git import WorkspaceError

    wanted = config.workspace
    if wanted is not None and wanted != "worktree":
        return of({"workspace": wanted}).settings(config, spec_row)
    chosen = of({"workspace": "worktree"}).settings(config, spec_row)
    if chosen is not None:
        return chosen
    if wanted == "worktree":
        raise WorkspaceError(f"workspace = \"worktree\", but workdir {config.workdir} is not a git "
                             "repository with a commit")
    return of({"workspace": "shared"}).settings(config, spec_row)
