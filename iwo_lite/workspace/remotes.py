"""A spec's branch on a remote (git.remote): pushed after each dispatch, fetched on another machine."""

from __future__ import annotations



from iwo_lite.workspace.git import (
    WorkspaceError,
    _first_line,
    _git,
    _ref_lock,
    _repo,
    _repo_lock,
    branch_head,
)


def push_branch(repo: str, remote: str, branch: str, timeout: float = 120) -> dict:
    """Push the branch to the same name on `remote` (fast-forward only; an already pushed tip is
    a no-op). Returns {"ok", "sha" (local tip), "detail"}; hooks (pre-push) do not run."""
    info = _repo(repo)
    sha = branch_head(repo, branch)
    if sha is None:
        return {"ok": False, "sha": None, "detail": f"branch {branch} does not exist in {info['toplevel']}"}
    try:
        res = _git(["push", "--porcelain", "--no-verify", remote, f"refs/heads/{branch}:refs/heads/{branch}"],
                   info["toplevel"], check=False, timeout=timeout)
    except WorkspaceError as exc:
        return {"ok": False, "sha": sha, "detail": str(exc)}
    if res.rc == 0:
        return {"ok": True, "sha": sha, "detail": f"pushed {branch} to {remote}"}
    rejected = "[rejected]" in res.out or "non-fast-forward" in res.err or "fetch first" in res.err
    return {"ok": False, "sha": sha, "detail": ("rejected (the remote branch has commits this one lacks): "
                                                if rejected else "") + _first_line(res.err or res.out)}


def fetch_branch(repo: str, remote: str, branch: str, timeout: float = 120) -> dict:
    """Fetch `branch` from `remote` into the local branch of the same name (fast-forward only:
    local commits are never thrown away). Returns {"ok", "sha" (local tip after), "reason": None |
    "missing" (not on the remote) | "diverged" | "checked-out" | "error", "detail"}."""
    info = _repo(repo)
    with _repo_lock(info):
        try:
            res = _git(["fetch", "--no-tags", "--no-write-fetch-head", "-q", remote,
                        f"refs/heads/{branch}:refs/heads/{branch}"], info["toplevel"], check=False, timeout=timeout,
                       owned_locks=(_ref_lock(info, branch),))
        except WorkspaceError as exc:
            return {"ok": False, "sha": branch_head(repo, branch), "reason": "error", "detail": str(exc)}
    sha = branch_head(repo, branch)
    if res.rc == 0:
        return {"ok": True, "sha": sha, "reason": None, "detail": f"fetched {branch} from {remote}"}
    err = res.err
    reason = ("missing" if "couldn't find remote ref" in err else
              "diverged" if "non-fast-forward" in err or "[rejected]" in err else
              "checked-out" if "refusing to fetch into" in err else "error")
    return {"ok": False, "sha": sha, "reason": reason, "detail": _first_line(err)}
