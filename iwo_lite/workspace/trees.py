"""A spec's git worktree: made on its branch, repaired, set aside, removed; branches deleted.

Owns `ensure_worktree` (the worktree `<home>/worktrees/<id>` on branch `iwo/<id>` from the spec's
base, made again or switched back when a kill or an agent left it half-made or elsewhere),
`set_aside`, `probe_worktree` (can worktrees be made here at all), `remove_worktree` and
`delete_branch`. Idempotent: a second call after a kill at any point finishes the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time

from iwo_lite.workspace.git import (
    WorkspaceError,
    _check_not_checkout,
    _commit_exists,
    _first_line,
    _git,
    _is_ancestor,
    _read,
    _ref_lock,
    _repo,
    _repo_lock,
    _same_path,
    _wait_lock,
    _worktree_gitdir,
    branch_head,
    changed_files,
    list_worktrees,
)


def ensure_worktree(repo: str, worktree_path: str, branch: str, base_sha: str | None, *,
                    head: str | None = None) -> dict:
    """Make (or repair) the worktree at `worktree_path` checked out on `branch`, the branch made
    from `base_sha` if it does not exist. An existing branch is reused and never moved backwards.

    `head` (optional): the spec's head as last recorded (e.g. on another machine). If the branch is
    missing here but that commit is present, the branch is re-made there; if the local branch
    lacks it, a fast-forward is made when possible, else WorkspaceError (fetch it first).

    Returns {"path", "branch", "head" (sha checked out), "base", "created" (bool),
    "repaired": [what was fixed, one line each]}.

    Repairs: a half-made worktree (`git worktree add` killed: registered, locked "initializing");
    a registered worktree whose directory was deleted; the branch present but no worktree; a
    directory at the path that is not a registered worktree (moved aside to
    `<parent>/.orphaned/<name>-<time>`, never deleted); a worktree switched to another branch
    (switched back when clean, else WorkspaceError); a stale index.lock left by a killed git.
    """
    info = _repo(repo)
    path = os.path.abspath(worktree_path)
    _check_not_checkout(info, path)
    repaired: list[str] = []
    with _repo_lock(info):
        for _ in range(6):
            entries = list_worktrees(repo)
            mine = next((e for e in entries if _same_path(e["path"], path)), None)
            holder = next((e for e in entries if e["branch"] == branch and not _same_path(e["path"], path)), None)
            if holder is not None:
                if holder["prunable"] or not os.path.exists(holder["path"]):
                    _unregister(info, holder["path"])
                    repaired.append(f"dropped stale registration of {holder['path']} (its directory is gone)")
                    continue
                raise WorkspaceError(f"branch {branch} is already checked out at {holder['path']}"
                                     f" (repository {info['toplevel']}); switch that checkout away from it")
            if mine is not None:
                if mine["locked"] == "initializing":
                    _unregister(info, path)
                    repaired.append("re-made a half-made worktree (git worktree add was interrupted)")
                    continue
                if mine["prunable"] or not os.path.exists(os.path.join(path, ".git")):
                    _unregister(info, path)
                    repaired.append("re-made a registered worktree whose directory was gone")
                    continue
                gitdir = _worktree_gitdir(path)
                _wait_lock(os.path.join(gitdir, "index.lock"))
                if mine["branch"] != branch:
                    _switch_back(info, path, mine, branch, base_sha, repaired)
                    continue
                tip = _reach_head(info, path, branch, mine["head"], head, repaired, checked_out=True)
                return {"path": path, "branch": branch, "head": tip, "base": base_sha,
                        "created": False, "repaired": repaired}
            # not registered here: the path must be free (or an empty directory)
            if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)
                                               and not os.listdir(path)):
                aside = _move_aside(path)
                repaired.append(f"moved an unregistered directory at the worktree path to {aside}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tip = branch_head(repo, branch)
            if tip is None and head is not None and head != base_sha:
                if not _commit_exists(repo, head):
                    raise WorkspaceError(f"branch {branch} is not in {info['toplevel']} and its head {head[:12]}"
                                         " is not here either (made on another machine? set git.remote)")
                _git(["branch", "--no-track", branch, head], info["toplevel"], what=f"creating branch {branch}")
                repaired.append(f"re-made branch {branch} at the recorded head {head[:12]}")
                continue
            if tip is None:
                if not base_sha:
                    raise WorkspaceError(f"branch {branch}: no base commit recorded"
                                         " (the workdir had no commit at submit)")
                res = _git(["worktree", "add", "-q", "--no-track", "-b", branch, path, base_sha], info["toplevel"],
                           check=False, owned_locks=(_ref_lock(info, branch),))
            else:
                _reach_head(info, None, branch, tip, head, repaired, checked_out=False)
                res = _git(["worktree", "add", "-q", path, branch], info["toplevel"], check=False,
                           owned_locks=(_ref_lock(info, branch),))
            if res.rc != 0:
                if tip is None and not _commit_exists(repo, base_sha):
                    raise WorkspaceError(f"branch {branch}: base commit {base_sha[:12]} is not in {info['toplevel']}")
                # a race or a half-done step: look again (the loop re-reads the state)
                repaired.append(f"retried after: {_first_line(res.err)}")
                continue
            sha = _git(["rev-parse", "HEAD"], path).out.strip()
            return {"path": path, "branch": branch, "head": sha, "base": base_sha,
                    "created": True, "repaired": repaired}
    raise WorkspaceError(f"worktree {path} for branch {branch}: could not be made ({'; '.join(repaired[-2:])})")


def _unregister(info: dict, path: str) -> None:
    """Drop one worktree registration (and its checkout if valid), even when locked. When git
    refuses (e.g. the directory lost its .git file), only the registration is dropped, the way
    `git worktree prune` drops it, but for this one entry: other worktrees are never pruned."""
    res = _git(["worktree", "remove", "--force", "--force", path], info["toplevel"], check=False)
    if res.rc == 0:
        return
    admin_root = os.path.join(info["common"], "worktrees")
    target = os.path.realpath(os.path.join(path, ".git"))
    for name in os.listdir(admin_root) if os.path.isdir(admin_root) else []:
        gitdir = _read(os.path.join(admin_root, name, "gitdir"))
        if gitdir and os.path.realpath(gitdir) == target:
            _rmtree(os.path.join(admin_root, name))
            return
    raise WorkspaceError(f"worktree {path}: cannot drop its registration ({_first_line(res.err)})")


def set_aside(repo: str, worktree_path: str) -> str | None:
    """Move a worktree that cannot be mended aside (to `<parent>/.orphaned/<name>-<time>`, never
    deleted: what the agent left there stays readable) and drop its registration, so that
    ensure_worktree makes it again from its branch. Where it went, or None when there was nothing."""
    info = _repo(repo)
    path = os.path.abspath(worktree_path)
    _check_not_checkout(info, path)
    with _repo_lock(info):
        aside = _move_aside(path) if os.path.lexists(path) else None
        if any(_same_path(entry["path"], path) for entry in list_worktrees(repo)):
            with contextlib.suppress(WorkspaceError):
                _unregister(info, path)
    return aside


def _move_aside(path: str) -> str:
    parent = os.path.join(os.path.dirname(path), ".orphaned")
    os.makedirs(parent, exist_ok=True)
    target = os.path.join(parent, f"{os.path.basename(path)}-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 0
    while os.path.lexists(target + (f"-{n}" if n else "")):
        n += 1
    target += f"-{n}" if n else ""
    os.rename(path, target)
    return target


def _switch_back(info: dict, path: str, entry: dict, branch: str, base_sha: str | None, repaired: list) -> None:
    was = entry["branch"] or f"detached {str(entry['head'])[:12]}"
    dirty = changed_files(path)
    if dirty:
        raise WorkspaceError(f"worktree {path} is on {was}, not {branch}, with uncommitted changes"
                             f" ({', '.join(dirty[:5])}); commit or discard them there")
    if branch_head(path, branch) is None:
        if not base_sha:
            raise WorkspaceError(f"branch {branch}: no base commit recorded")
        _git(["checkout", "-q", "--no-track", "-b", branch, base_sha], path, what=f"creating branch {branch}")
    else:
        _git(["checkout", "-q", branch], path, what=f"switching {path} to {branch}")
    repaired.append(f"switched the worktree from {was} back to {branch} ({was} is left as it was)")


def _reach_head(info: dict, worktree: str | None, branch: str, tip: str | None, head: str | None,
                repaired: list, *, checked_out: bool) -> str | None:
    """Make sure the branch contains the recorded head: fast-forward to it when it is ahead,
    refuse when the branch lacks it and cannot reach it."""
    if head is None or tip is None or tip == head:
        return tip
    top = info["toplevel"]
    if _commit_exists(top, head) and _is_ancestor(top, head, tip):
        return tip  # the branch already contains it (e.g. commits after the record)
    if _commit_exists(top, head) and _is_ancestor(top, tip, head):
        if checked_out:
            if changed_files(worktree):
                raise WorkspaceError(f"worktree {worktree}: cannot fast-forward {branch} to {head[:12]}"
                                     " over uncommitted changes")
            _git(["merge", "-q", "--ff-only", head], worktree, what=f"fast-forwarding {branch}")
        else:
            _git(["update-ref", f"refs/heads/{branch}", head, tip], top, what=f"fast-forwarding {branch}")
        repaired.append(f"fast-forwarded {branch} from {tip[:12]} to the recorded head {head[:12]}")
        return head
    raise WorkspaceError(f"branch {branch} here is at {tip[:12]} and lacks the spec's head {head[:12]}"
                         " (made on another machine? fetch it from git.remote)")


def probe_worktree(repo: str, parent: str) -> str | None:
    """Can a worktree be made under `parent` (a home's worktrees/)? Makes a detached one without a
    checkout at `<parent>/.probe-<pid>` and removes it again (for `doctor`). None when it can,
    else the cause in one line. A `parent` inside the repository's own working tree that git
    does not ignore is a cause too: every spec's files would show there as untracked."""
    try:
        info = _repo(repo)
        top = info["toplevel"]
        real = os.path.realpath(parent)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            ignored = _git(["check-ignore", "-q", "--no-index", os.path.relpath(real, top) + "/"], top, check=False)
            if ignored.rc != 0:
                return (f"{parent} is inside the repository {top} and not ignored there: each spec's worktree"
                        " would show up in its `git status` as untracked files")
        path = os.path.join(os.path.abspath(parent), f".probe-{os.getpid()}")
        _check_not_checkout(info, path)
        made = []  # folders made for the probe, removed after it (doctor leaves no trace)
        folder = os.path.abspath(parent)
        while not os.path.lexists(folder):
            made.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(made):
            os.mkdir(folder, 0o700)
        try:
            res = _git(["worktree", "add", "-q", "--detach", "--no-checkout", path, "HEAD"], top, check=False)
            return None if res.rc == 0 else f"git worktree add {path}: {_first_line(res.err or res.out)}"
        finally:
            remove_worktree(top, path)
            for folder in made:
                os.rmdir(folder)
    except OSError as exc:
        return f"{exc.filename or parent}: {exc.strerror or exc}"
    except WorkspaceError as exc:
        return str(exc)


def remove_worktree(repo: str, worktree_path: str) -> dict:
    """Remove a spec's worktree, uncommitted files included; tolerates it being missing or
    half-removed. The directory is renamed aside first (atomic), so a kill never leaves a
    registered worktree with half its files. Returns {"path", "removed": bool}."""
    path = os.path.abspath(worktree_path)
    aside = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.removing")
    removed = False
    try:
        info = _repo(repo)
    except WorkspaceError:  # the repository (or git) is gone: the files are still ours to remove
        info = {"toplevel": os.path.realpath(repo), "common": os.path.realpath(os.path.join(repo, ".git"))}
        _check_not_checkout(info, path)
        info = None
    else:
        _check_not_checkout(info, path)
    if os.path.lexists(aside):
        _rmtree(aside)
    if info is None:  # no repository any more (or no git): just the files
        if os.path.lexists(path):
            _rmtree(path)
            removed = True
        return {"path": path, "removed": removed}
    with _repo_lock(info):
        if os.path.lexists(path):
            os.rename(path, aside)
            removed = True
        if any(_same_path(e["path"], path) for e in list_worktrees(repo)):
            _unregister(info, path)
            removed = True
        if os.path.lexists(aside):
            _rmtree(aside)
    return {"path": path, "removed": removed}


def _rmtree(path: str) -> None:
    """Remove a directory tree (read-only parts included), or a file or symlink at `path`."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    elif sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_force_remove)
    else:
        shutil.rmtree(path, onerror=_force_remove)


def _force_remove(func, target, _exc) -> None:
    try:
        os.chmod(os.path.dirname(target), 0o700)
        os.chmod(target, 0o700)
        func(target)
    except FileNotFoundError:
        pass


def delete_branch(repo: str, branch: str) -> dict:
    """Delete a local branch (even unmerged). Returns {"branch", "deleted": bool, "sha" (its last
    tip, to restore it with `git branch <branch> <sha>`) }. Missing: deleted False. A branch
    checked out in an existing worktree raises WorkspaceError (remove that worktree first); a
    registration left by a worktree whose directory is gone is dropped."""
    info = _repo(repo)
    with _repo_lock(info):
        sha = branch_head(repo, branch)
        if sha is None:
            return {"branch": branch, "deleted": False, "sha": None}
        for entry in list_worktrees(repo):
            if entry["branch"] == branch:
                if not entry["prunable"] and os.path.exists(entry["path"]):
                    raise WorkspaceError(f"branch {branch} is checked out at {entry['path']}; remove that worktree first")
                _unregister(info, entry["path"])
        _git(["branch", "-D", "-q", branch], info["toplevel"], owned_locks=(_ref_lock(info, branch),),
             what=f"deleting branch {branch}")
    return {"branch": branch, "deleted": True, "sha": sha}
