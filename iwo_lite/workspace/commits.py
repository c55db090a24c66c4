"""The commit after each dispatch: what the agent left uncommitted, one commit `NN-role: summary`.

Owns `commit_dispatch` (never a second commit for the same dispatch: each carries an
`Iwo-Dispatch` trailer that a re-run finds) and finding a dispatch's commit again (`fork_point`).
"""

from __future__ import annotations

import os
import re

from iwo_lite.workspace.git import (
    DISPATCH_TRAILER,
    SEARCH_DEPTH,
    WorkspaceError,
    _author,
    _clip_files,
    _common_of,
    _git,
    _read,
    _ref_lock,
    _split_z,
    _wait_lock,
    _worktree_gitdir,
)


def commit_dispatch(worktree: str, message: str, author: str | None, dispatch_tag: str, *,
                    since: str | None = None, branch: str | None = None) -> dict:
    """Commit whatever the dispatch left uncommitted in `worktree`, with `message` plus a trailer
    `Iwo-Dispatch: <dispatch_tag>`, as `author` (also committer), hooks and signing off.

    `since`: the commit the dispatch started from (bounds the search for an earlier run's
    commit; without it the last SEARCH_DEPTH commits are searched). `branch`: when given, the
    worktree must be on it (an agent that switched branches is an error, not a silent commit
    elsewhere).

    Returns {"commit": sha of this dispatch's commit or None (nothing left uncommitted),
    "changed": the dispatch changed the branch (our commit, or the agent's own commits since
    `since`), "head": the branch tip now, "files": [...] (clipped), "file_count", "existing": True
    when the commit had already been made by an earlier (killed) run}. Never an empty commit; a
    re-run after a kill anywhere finds and returns the same commit.
    """
    wt = os.path.abspath(worktree)
    identity = _author(author)
    gitdir = _worktree_gitdir(wt)
    index_lock = os.path.join(gitdir, "index.lock")
    _wait_lock(index_lock)  # a git from before the kill still finishing (then we find its commit)
    head_ref = _read(os.path.join(gitdir, "HEAD")) or ""
    on_branch = head_ref.removeprefix("ref: refs/heads/") if head_ref.startswith("ref: refs/heads/") else None
    if branch is not None:
        if on_branch != branch:
            raise WorkspaceError(f"worktree {wt} is not on branch {branch} ({head_ref or 'no HEAD'}); "
                                 "did the agent switch branches?")
    head = _git(["rev-parse", "HEAD"], wt).out.strip()
    # an earlier (killed) run's commit can only exist if HEAD moved since the dispatch started
    found = None if since and head == since else find_dispatch_commit(wt, dispatch_tag, since=since)
    if found is not None:
        res = _git(["diff-tree", "--no-commit-id", "--name-only", "-r", "-z", "--no-renames", "--root", found], wt)
        return {"commit": found, "changed": True, "head": head, **_clip_files(sorted(_split_z(res.out))),
                "existing": True}
    owned = (index_lock,) + ((_ref_lock({"common": _common_of(gitdir)}, on_branch),) if on_branch else ())
    _git(["add", "-A"], wt, owned_locks=owned, what=f"git add in {wt}")
    staged = _git(["diff", "--cached", "--name-only", "-z", "--no-renames", "--ignore-submodules=dirty"], wt)
    files = sorted(_split_z(staged.out))
    if not files:  # nothing left uncommitted: never an empty commit
        return {"commit": None, "changed": bool(since) and head != since, "head": head, "files": [],
                "file_count": 0, "existing": False}
    text = (message.rstrip() or dispatch_tag) + f"\n\n{DISPATCH_TRAILER}: {dispatch_tag}\n"
    _git(["commit", "-q", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace", "-F", "-"], wt,
         input=text, env=identity, owned_locks=owned, what=f"commit of dispatch {dispatch_tag} in {wt}")
    head = _git(["rev-parse", "HEAD"], wt).out.strip()
    return {"commit": head, "changed": True, "head": head, **_clip_files(files), "existing": False}


def find_dispatch_commit(repo: str, dispatch_tag: str, *, rev: str = "HEAD", since: str | None = None) -> str | None:
    """The newest commit in `since..rev` (or the last SEARCH_DEPTH commits of `rev`) whose message
    has the trailer line `Iwo-Dispatch: <dispatch_tag>`; None when there is none."""
    wanted = f"{DISPATCH_TRAILER}: {dispatch_tag}"
    args = ["log", "-z", "--format=%H%n%B", "--fixed-strings", f"--grep={wanted}"]
    res = _git(args + [f"{since}..{rev}"], repo, check=False) if since else None
    if res is None or res.rc != 0:
        res = _git(args + [f"--max-count={SEARCH_DEPTH}", rev], repo, check=False)
        if res.rc != 0:
            return None  # e.g. an unborn branch
    for record in _split_z(res.out):
        sha, _, body = record.partition("\n")
        if any(line.strip() == wanted for line in body.splitlines()):
            return sha.strip()
    return None


def fork_point(repo: str, branch: str, spec_id: str, number: int, *, since: str | None = None) -> str | None:
    """Best-effort commit just before dispatch `number` of `spec_id`, read from the dispatch
    trailers on `branch` (first-parent, back to `since`, the spec's base): the last commit tagged
    with an earlier dispatch, else `since`. Exact only when every dispatch before it ended with a
    commit of ours; prefer the start commit recorded per dispatch."""
    rng = [f"{since}..refs/heads/{branch}"] if since else [f"--max-count={SEARCH_DEPTH * 5}", f"refs/heads/{branch}"]
    res = _git(["log", "-z", "--first-parent", "--reverse", "--format=%H%n%B", *rng], repo)
    pattern = re.compile(rf"^{DISPATCH_TRAILER}: {re.escape(spec_id)}#(\d+)\s*$", re.M)
    before = since
    for record in _split_z(res.out):
        sha, _, body = record.partition("\n")
        tags = [int(n) for n in pattern.findall(body)]
        if tags and max(tags) >= number:
            break
        if tags:
            before = sha.strip()
    return before
