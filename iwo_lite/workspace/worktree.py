"""The "worktree" workspace kind: each spec on its own branch `iwo/<id>`, in its own git worktree.

Owns what the loop's steps do in worktree mode: the settings fixed at admission (the repository,
the commit and branch the spec starts from), which branches are this home's (recorded before a
branch is made, so a branch another home made is never built on without a yes), the worktree made
or repaired before each dispatch (fetched from git.remote when it was made on another machine),
the commit after each dispatch (pushed to git.remote), and the end: keep the branch, merge it, or
run git.done_command, then remove the worktree. Each method is idempotent: the git functions
below it find what an earlier run of theirs did.
"""

from __future__ import annotations

import asyncio
import logging
import os

from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.workspace.commits import commit_dispatch
from iwo_lite.workspace.ending import merge_branch, run_done_command
from iwo_lite.workspace.git import (WorkspaceError, branch_head, describe_repo, dispatch_message, dispatch_tag,
                                    is_repository, spec_branch)
from iwo_lite.workspace.remotes import fetch_branch, push_branch
from iwo_lite.workspace.trees import ensure_worktree, remove_worktree, set_aside

log = logging.getLogger("iwo_lite")


class Worktree:
    name = "worktree"
    commits = True
    ends = True

    def settings(self, config, spec_row: dict) -> dict | None:
        """The repository and the commit the spec starts from: the HEAD recorded at submit and the
        branch it was on then (None: a detached HEAD, not the branch checked out now); nothing
        recorded (the workdir was not a repository then): the HEAD now. None when the workdir is no
        repository with a commit. (A fork never comes here: it replays its parent's admit and starts
        from the commit its prepare is given.)"""
        repo = describe_repo(str(config.workdir))
        if not repo["repository"] or not repo["head"]:
            return None
        if spec_row.get("base_commit"):
            base, base_branch = spec_row["base_commit"], spec_row.get("base_branch")
        else:
            base, base_branch = repo["head"], repo["branch"]
        return {"workspace": "worktree", "repo": repo["toplevel"], "prefix": repo["prefix"], "base": base,
                "base_branch": base_branch}

    async def admitted(self, ctx, spec_id: str, settings: dict) -> None:
        """The branch recorded as ours when it is free; else prepare asks."""
        await _claim_branch(ctx, spec_id, spec_branch(spec_id), settings, settings["base"])

    async def prepare(self, ctx, spec_id: str, settings: dict, head: str | None) -> dict:
        """The spec's worktree made or repaired on its branch at `head` (the commit after the previous
        dispatch); a branch this home did not make is a question, not built on."""
        cwd = str(ctx.config.workdir)
        branch = spec_branch(spec_id)  # a fork's own branch, though its settings are its parent's
        foreign = await _claim_branch(ctx, spec_id, branch, settings, head)
        if foreign:  # not ours: never built on without a yes (adopt)
            return {"cwd": cwd, "start": None, "blocked": foreign, "foreign": True}
        made = await asyncio.to_thread(_ensure_worktree, ctx, spec_id, branch, settings, head)
        if "error" in made:
            return {"cwd": cwd, "start": None, "blocked": made["error"]}
        await ctx.store.run(spec_rows.on_branch(spec_id, branch, made["head"]))
        return {"cwd": os.path.join(made["path"], settings["prefix"]), "start": made["head"], "blocked": None}

    async def adopt(self, ctx, spec_id: str) -> None:
        await ctx.store.run(spec_rows.on_branch(spec_id, spec_branch(spec_id), None))

    async def commit(self, ctx, spec_id: str, step: int, role: str, summary: str, settings: dict,
                     start: str | None) -> dict:
        """What the dispatch left uncommitted, one commit `NN-role: summary`; pushed when git.remote is set."""
        git = ctx.config.git
        path = str(ctx.home.worktree(spec_id))
        branch = spec_branch(spec_id)
        try:
            made = await asyncio.to_thread(commit_dispatch, path, dispatch_message(step, role, summary), git.author,
                                           dispatch_tag(spec_id, step), since=start, branch=branch)
        except WorkspaceError as error:  # the agent broke its worktree: a retry cannot mend it, a human can
            return {"commit": None, "head": start, "error": (
                f"After the {role}'s dispatch {step:02d} its worktree {path} cannot be committed: {error} (did the"
                f" agent switch the worktree's branch, delete the worktree or break its .git?). The branch {branch}"
                " still holds every earlier commit. Approve to make the worktree again from the branch and go on (a"
                " worktree that cannot be mended is moved aside to worktrees/.orphaned/, not deleted); reject ends"
                " the spec.")}
        # the dispatch's commit: ours, else the agent's own last commit when it committed by itself
        shown = made["commit"] or (made["head"] if made["changed"] else None)
        await ctx.store.run(run_rows.step_commits(spec_id, step, None, shown))
        await ctx.store.run(spec_rows.on_branch(spec_id, None, made["head"]))
        if git.remote:
            pushed = await asyncio.to_thread(push_branch, path, git.remote, branch)
            if not pushed["ok"]:
                log.warning("%s: pushing %s to %s failed: %s", spec_id, branch, git.remote, pushed.get("detail"))
        return {"commit": made["commit"], "head": made["head"]}

    async def repair(self, ctx, spec_id: str, settings: dict, head: str | None) -> dict:
        """The worktree made again from its branch (a broken or missing one moved aside or re-made; a
        switched branch switched back)."""
        branch, path = spec_branch(spec_id), str(ctx.home.worktree(spec_id))
        made = await asyncio.to_thread(_ensure_worktree, ctx, spec_id, branch, settings, head)
        if "error" in made:  # e.g. switched to another branch with changes: set it aside, make it anew
            aside = await asyncio.to_thread(set_aside, _spec_repo(ctx, settings), path)
            log.warning("%s: worktree %s set aside to %s, made again from %s", spec_id, path, aside, branch)
            made = await asyncio.to_thread(_ensure_worktree, ctx, spec_id, branch, settings, head)
        return {"error": made["error"]} if "error" in made else {"head": made["head"], "repaired": made["repaired"]}

    async def finish(self, ctx, spec_id: str, state: str, settings: dict, title: str) -> dict:
        """git.on_done (keep / merge / command) when it is done; the worktree removed once nothing more
        is to be done there."""
        git = ctx.config.git
        repo, branch = await asyncio.to_thread(_spec_repo, ctx, settings), spec_branch(spec_id)
        result: dict = {"ok": True, "question": ""}
        if state == "done" and git.on_done == "merge" and not settings["base_branch"]:
            # submitted on a detached HEAD: no branch to merge into, and asking could never succeed
            result["note"] = f"not merged: the workdir was on no branch (a detached HEAD) at submit; {branch} is kept"
            log.warning("%s: %s", spec_id, result["note"])
        elif state == "done" and git.on_done == "merge":
            result = await _merge(ctx, repo, branch, settings["base_branch"], title)
        elif state == "done" and git.on_done == "command" and git.done_command:
            result = await _done_command(ctx, spec_id, branch, title)
        if result["ok"]:
            await asyncio.to_thread(remove_worktree, repo, str(ctx.home.worktree(spec_id)))
        return result


async def _merge(ctx, repo: str, branch: str, into: str, title: str) -> dict:
    try:
        merged = await asyncio.to_thread(merge_branch, repo, branch, into, f"Merge {branch}: {title}",
                                         ctx.config.git.author)
    except WorkspaceError as error:  # the checkout is in a state only its owner can mend: ask
        merged = {"ok": False, "reason": "error", "files": [], "detail": str(error)}
    if merged["ok"]:
        return {"ok": True, "question": ""}
    files = ", ".join(merged["files"][:10])
    return {"ok": False, "question": (
        f"Merging {branch} into {into} in {repo} failed: {merged['reason']}" + (f" ({files})" if files else "")
        + f". {merged['detail']} Fix it (the workdir must be clean and on {into}), then approve to merge again;"
        " reject leaves the branch unmerged.")}


async def _done_command(ctx, spec_id: str, branch: str, title: str) -> dict:
    git = ctx.config.git
    ran = await asyncio.to_thread(run_done_command, git.done_command, str(ctx.config.workdir), branch, spec_id, title)
    log.info("%s: git.done_command exited %s: %s", spec_id, ran["exit_code"], ran["output"][-500:].strip())
    result = {"ok": True, "question": "",
              "done_command": {"argv": ran["argv"], "exit_code": ran["exit_code"], "output": ran["output"]}}
    if not ran["ok"]:
        result.update(ok=False, question=(
            f"git.done_command failed (exit {ran['exit_code']}{', timed out' if ran['timed_out'] else ''}): "
            f"{ran['output'][-500:]} Approve to run it again, reject to leave it."))
    return result


async def _claim_branch(ctx, spec_id: str, branch: str, settings: dict, head: str | None) -> str | None:
    """The durable record of which branches this home made: the spec's `branch` column, written
    before the branch is made (so a kill between the two leaves it ours). A spec without it whose
    `iwo/<id>` already exists at another commit than the one it would start from — made by another
    home meanwhile, or one since deleted — gets the question to ask instead (None: the branch is ours)."""
    row = await ctx.store.run(spec_rows.base(spec_id))
    if row is None or row.get("branch"):
        return None
    repo = _spec_repo(ctx, settings)
    tip = await asyncio.to_thread(branch_head, repo, branch) if repo else None
    if tip is not None and tip != head:
        start = (head or "")[:12] or "its base"
        return (f"Branch {branch} already exists in {repo} (at {tip[:12]}) and this home did not make it (another"
                f" home's spec with the same id, or one from a deleted home). Approve to build on its commits; or"
                f" delete or rename it first (git branch -m {branch} {branch}-old) and approve to start afresh"
                f" from {start}; reject ends the spec.")
    await ctx.store.run(spec_rows.on_branch(spec_id, branch, None))
    return None


def _spec_repo(ctx, settings: dict) -> str:
    """The repository a worktree spec works in here: the one recorded at admission while it is a
    repository on this machine, else this worker's own workdir's (a spec taken over from a worker
    on another machine, whose path does not exist here)."""
    recorded = settings["repo"]
    if recorded and is_repository(recorded):
        return recorded
    local = describe_repo(str(ctx.config.workdir))
    return local["toplevel"] if local["repository"] else recorded


def _ensure_worktree(ctx, spec_id: str, branch: str, settings: dict, head: str | None) -> dict:
    """ensure_worktree; when it cannot (e.g. the branch was made on another machine) and git.remote
    is set, fetch the branch from there and try again. {"error": question} when it still cannot:
    the spec asks the human instead of failing."""
    repo, path = _spec_repo(ctx, settings), str(ctx.home.worktree(spec_id))
    remote = ctx.config.git.remote
    try:
        return ensure_worktree(repo, path, branch, settings["base"], head=head)
    except WorkspaceError as error:
        cause = str(error)
    fetched = ""
    if remote:
        try:
            fetched = fetch_branch(repo, remote, branch)["detail"]
            made = ensure_worktree(repo, path, branch, settings["base"], head=head)
            log.info("%s: fetched %s from %s to continue it here", spec_id, branch, remote)
            return made
        except WorkspaceError as error:
            cause = str(error)
    how = (f"fetching it from git.remote {remote} did not help ({fetched or cause})" if remote else
           "git.remote is not set, so it cannot be fetched (set it: the branch is pushed there after each dispatch)")
    return {"error": f"Cannot continue branch {branch} in {repo}: {cause}; {how}. Fix it (e.g. fetch the branch "
                     f"into {repo}), then approve to try again; reject ends the spec."}
