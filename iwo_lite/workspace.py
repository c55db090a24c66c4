"""Each spec's git branch and worktree: everything iwo-lite does to a repository.

This module owns every `git` command iwo-lite runs: recording the workdir's HEAD at submit, the
spec's branch `iwo/<spec id>` and worktree `<home>/worktrees/<spec id>`, the commit after each
dispatch, the merge (or done command) at the end, removing worktrees and branches, and pushing /
fetching a spec's branch for several machines.

Rules every function here keeps, because the daemon calls them from DBOS steps (through
`asyncio.to_thread`) that may be re-run after a kill -9 at any moment:

- Idempotent: calling again after a kill at any point inside a function, or between its git
  commands, finishes the job or finds it already done; it never makes a second branch, a second
  commit for the same dispatch, an empty commit, or a second merge.
- Plain JSON-able results (dicts, lists, str, int, bool, None): step outputs are JSON.
- Standard library only; git is run as a subprocess with a clean environment (no GIT_DIR & co.
  leaking in from a hook, no prompts, C locale) and with every hook switched off
  (`core.hooksPath=/dev/null`: `--no-verify` alone still runs prepare-commit-msg, post-commit,
  post-checkout and reference-transaction), no signing, no auto-gc.
- The user's checkout (the workdir) is only ever written by `merge_branch`.
- A broken environment (git missing, not a repository, a lock that never goes away, a state a
  human must look at) raises `WorkspaceError` with one line naming the repository, branch or
  path and the cause. Outcomes a caller reports (a merge conflict, a failed push or command)
  come back as data with `ok: False`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

BRANCH_PREFIX = "iwo/"
DEFAULT_AUTHOR = "iwo-lite <iwo-lite@localhost>"
DISPATCH_TRAILER = "Iwo-Dispatch"
MERGE_TRAILER = "Iwo-Merge"
LOCK_WAIT_S = 10.0       # how long a git lock held by someone else is waited for
STALE_LOCK_S = 10.0      # a lock file of our own (worktree index, spec branch) this old is a dead git's
SEARCH_DEPTH = 200       # commits searched for a dispatch's commit when its start is not known
MAX_FILES = 200          # file lists in results are clipped to this many names (with a count)
MAX_OUTPUT = 4000        # characters of a done command's output kept

# Per-repository environment that a hook (or a git alias) may leak into our process
# (`git rev-parse --local-env-vars`, plus identity and editor variables we set ourselves).
_LEAKY_ENV = {
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE",
    "GIT_QUARANTINE_PATH", "GIT_INDEX_VERSION", "GIT_REFLOG_ACTION", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE",
}
# Config for every command: no hooks at all, no signing, no background gc/maintenance, no
# fsmonitor daemons per worktree, no rerere auto-resolution in merges.
_CONFIG = (
    "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
    "-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "core.fsmonitor=false",
    "-c", "rerere.enabled=false", "-c", "advice.detachedHead=false",
)
_LOCK_RE = re.compile(r"'([^']+\.lock)'|could not lock config file (\S+\.lock)")
# A worktree registration being written by a concurrent `git worktree add` (another process)
# makes commands that read every worktree fail for a moment: retried like a lock.
_TRANSIENT_RE = re.compile(r"failed to read \S*worktrees/[^/\s]+/")
_IN_PROGRESS = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply")


class WorkspaceError(Exception):
    """A repository problem a human has to look at; the message is one line naming the repo,
    branch or path and the cause."""


# ---------------------------------------------------------------------------------------------
# running git

def _environ(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in _LEAKY_ENV and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_", "GIT_TRACE"))}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_EDITOR=":", GIT_PAGER="cat",
               GCM_INTERACTIVE="never")
    if extra:
        env.update(extra)
    return env


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("hint:"):
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "no message"


class _Result:
    __slots__ = ("rc", "out", "err")

    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err


def _git(args: list[str], cwd: str, *, input: str | None = None, check: bool = True,
         env: dict | None = None, owned_locks: tuple[str, ...] = (), timeout: float | None = None,
         what: str = "") -> _Result:
    """Run one git command. A failure because a `.lock` file exists is retried for up to
    LOCK_WAIT_S; a lock in `owned_locks` (files only our own, possibly killed, git writes) is
    removed once it is STALE_LOCK_S old. Other failures raise WorkspaceError when `check`."""
    argv = ["git", *_CONFIG, *args]
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.02
    owned = {os.path.realpath(p) for p in owned_locks}
    while True:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=_environ(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                    start_new_session=True, encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            if shutil.which("git") is None:
                raise WorkspaceError("git is not installed (no `git` on PATH)") from None
            raise WorkspaceError(f"{cwd}: no such directory") from None
        except NotADirectoryError:
            raise WorkspaceError(f"{cwd}: not a directory") from None
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise WorkspaceError(f"git {args[0]} in {cwd}: timed out after {timeout:g}s") from None
        if proc.returncode == 0:
            return _Result(0, out, err)
        if _TRANSIENT_RE.search(err) and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        match = _LOCK_RE.search(err)
        if match is None or "File exists" not in err:
            if not check:
                return _Result(proc.returncode, out, err)
            raise WorkspaceError(f"{what or 'git ' + args[0]} in {cwd}: {_first_line(err or out)}")
        lock = match.group(1) or match.group(2)
        if not os.path.isabs(lock):
            lock = os.path.join(cwd, lock)
        if os.path.realpath(lock) in owned and _remove_if_stale(lock):
            continue
        if time.monotonic() > deadline:
            raise WorkspaceError(f"{what or 'git ' + args[0]} in {cwd}: {lock} exists (another git is running,"
                                 " or a dead one left it: remove it if no git is running)")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill a child started in its own session with everything it started (ssh, helpers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _remove_if_stale(lock: str) -> bool:
    """Remove a lock file of ours older than STALE_LOCK_S; True when it is gone."""
    try:
        age = time.time() - os.stat(lock).st_mtime
    except FileNotFoundError:
        return True
    if age < STALE_LOCK_S:
        return False
    try:
        os.unlink(lock)
    except FileNotFoundError:
        pass
    return True


def _wait_lock(lock: str) -> None:
    """Wait until a lock file of ours is gone (a git still finishing) or stale (removed)."""
    deadline = time.monotonic() + STALE_LOCK_S + 1
    delay = 0.02
    while os.path.lexists(lock) and not _remove_if_stale(lock):
        if time.monotonic() > deadline:
            raise WorkspaceError(f"{lock} is held by a running git")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _split_z(text: str) -> list[str]:
    return [part for part in text.split("\0") if part]


def _clip_files(files: list[str]) -> dict:
    return {"files": files[:MAX_FILES], "file_count": len(files)}


def _author(author: str | None) -> dict:
    text = (author or DEFAULT_AUTHOR).strip()
    match = re.fullmatch(r"(.*?)\s*<([^<>\s]*)>", text)
    if not match or not match.group(1).strip() or not match.group(2):
        raise WorkspaceError(f"git.author {text!r} must look like 'Name <email>'")
    name, email = match.group(1).strip(), match.group(2)
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


# Per-repository lock for the operations that change the repository's shared state (worktree
# registrations, branches, the workdir): two specs' steps in two threads never race each other.
# Other processes (the user's git, another iwo-lite) are handled by the lock retries in _git.
_locks_guard = threading.Lock()
_locks: dict[str, threading.RLock] = {}
_repo_cache: dict[str, dict] = {}


def _repo_lock(info: dict) -> threading.RLock:
    with _locks_guard:
        return _locks.setdefault(info["common"], threading.RLock())


def _repo(repo: str) -> dict:
    """toplevel, git dir and common git dir of the repository containing `repo` (cached)."""
    key = os.path.realpath(repo)
    info = _repo_cache.get(key)
    if info and os.path.isdir(info["common"]) and os.path.isdir(info["toplevel"]):
        return info
    if not os.path.isdir(repo):
        raise WorkspaceError(f"{repo}: no such directory")
    res = _git(["rev-parse", "--is-inside-work-tree", "--show-toplevel", "--git-dir", "--git-common-dir"],
               repo, check=False)
    lines = res.out.splitlines()
    if res.rc != 0 or len(lines) < 4 or lines[0] != "true":
        raise WorkspaceError(f"{repo}: not a git repository with a working tree"
                             + (f" ({_first_line(res.err)})" if res.err.strip() else ""))
    info = {"toplevel": os.path.realpath(lines[1]),
            "gitdir": os.path.realpath(os.path.join(repo, lines[2])),
            "common": os.path.realpath(os.path.join(repo, lines[3]))}
    _repo_cache[key] = info
    return info


# ---------------------------------------------------------------------------------------------
# recording at submit

def git_available() -> bool:
    """True when a `git` executable is on PATH."""
    return shutil.which("git") is not None


def git_version() -> str | None:
    """`git --version`'s version (e.g. "2.39.5"), None when git is missing."""
    if not git_available():
        return None
    res = _git(["--version"], os.getcwd(), check=False)
    return res.out.strip().removeprefix("git version ") or None


def is_repository(path: str) -> bool:
    """True when `path` is inside a git working tree (False when git is missing)."""
    if not git_available() or not os.path.isdir(path):
        return False
    res = _git(["rev-parse", "--is-inside-work-tree"], path, check=False)
    return res.rc == 0 and res.out.strip() == "true"


def head_commit(repo: str) -> str | None:
    """The full sha HEAD points at; None when not a repository, git is missing, or HEAD is unborn."""
    if not git_available() or not os.path.isdir(repo):
        return None
    res = _git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], repo, check=False)
    return res.out.strip() or None if res.rc == 0 else None


def current_branch(repo: str) -> str | None:
    """The branch checked out (short name); None when detached, unborn, or not a repository."""
    if head_commit(repo) is None:
        return None
    res = _git(["symbolic-ref", "-q", "HEAD"], repo, check=False)
    ref = res.out.strip()
    return ref.removeprefix("refs/heads/") if res.rc == 0 and ref.startswith("refs/heads/") else None


def describe_repo(path: str) -> dict:
    """What submit records: {"repository": bool, "toplevel", "prefix" (path of `path` inside
    the repository, "" at its top: run agents in <worktree>/<prefix>), "head", "branch"}."""
    out = {"repository": False, "toplevel": None, "prefix": "", "head": None, "branch": None}
    if not git_available() or not os.path.isdir(path):
        return out
    res = _git(["rev-parse", "--is-inside-work-tree", "--show-toplevel", "--show-prefix"], path, check=False)
    lines = res.out.splitlines() + ["", "", ""]
    if res.rc != 0 or lines[0] != "true":
        return out
    head = _git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], path, check=False).out.strip() or None
    ref = _git(["symbolic-ref", "-q", "HEAD"], path, check=False).out.strip() if head else ""
    out.update(repository=True, toplevel=lines[1], prefix=lines[2].rstrip("/"), head=head,
               branch=ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None)
    return out


def spec_branch(spec_id: str) -> str:
    """The branch of a spec: `iwo/<spec id>`."""
    return BRANCH_PREFIX + spec_id


def dispatch_tag(spec_id: str, number: int) -> str:
    """What identifies one dispatch's commit: `<spec id>#NN` (in an `Iwo-Dispatch:` trailer)."""
    return f"{spec_id}#{number:02d}"


def dispatch_message(number: int, role: str, summary: str) -> str:
    """`NN-role: <first line of the summary>`, the rest of the summary as the body."""
    lines = (summary or "").strip().splitlines() or ["(no summary)"]
    subject = lines[0].strip()
    if len(subject) > 100:
        subject = subject[:99] + "…"
    body = "\n".join(lines[1:]).strip()
    head = f"{number:02d}-{role}: {subject}"
    return f"{head}\n\n{body}" if body else head


# ---------------------------------------------------------------------------------------------
# reading the repository

def branch_head(repo: str, branch: str) -> str | None:
    """The sha a local branch points at, None when it does not exist."""
    res = _git(["rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}"], repo, check=False)
    return res.out.strip() or None if res.rc == 0 else None


def _commit_exists(repo: str, sha: str) -> bool:
    return _git(["cat-file", "-e", f"{sha}^{{commit}}"], repo, check=False).rc == 0


def _is_ancestor(repo: str, older: str, newer: str) -> bool:
    return _git(["merge-base", "--is-ancestor", older, newer], repo, check=False).rc == 0


def unmerged(repo: str, branch: str, into: str | None) -> bool:
    """True when `branch` holds commits that branch `into` (e.g. the spec's base branch) does not:
    deleting it would lose work. A missing `into` counts as unmerged; a missing `branch` not."""
    tip = branch_head(repo, branch)
    if tip is None:
        return False
    target = branch_head(repo, into) if into else None
    return target is None or not _is_ancestor(repo, tip, target)


def list_worktrees(repo: str) -> list[dict]:
    """The repository's registered worktrees: [{"path", "head", "branch" (short name or None),
    "detached", "bare", "locked" (reason or None), "prunable" (bool)}], the main one first."""
    res = _git(["worktree", "list", "--porcelain"], _repo(repo)["toplevel"])
    entries, cur = [], None
    for line in res.out.splitlines():
        key, _, value = line.partition(" ")
        if key == "worktree":
            cur = {"path": value, "head": None, "branch": None, "detached": False, "bare": False,
                   "locked": None, "prunable": False}
            entries.append(cur)
        elif cur is None:
            continue
        elif key == "HEAD":
            cur["head"] = value
        elif key == "branch":
            cur["branch"] = value.removeprefix("refs/heads/")
        elif key in ("detached", "bare"):
            cur[key] = True
        elif key == "locked":
            cur["locked"] = value or "locked"
        elif key == "prunable":
            cur["prunable"] = True
    return entries


def changed_files(worktree: str) -> list[str]:
    """Paths (relative to the worktree's top) that `git add -A` would commit: modified, deleted
    and untracked-but-not-ignored files; [] when clean."""
    res = _git(["status", "--porcelain", "-z", "--untracked-files=all", "--no-renames",
                "--ignore-submodules=dirty"], worktree)
    return sorted({entry[3:] for entry in _split_z(res.out) if len(entry) > 3})


def _dirty_tracked(cwd: str) -> list[str]:
    """Modified/staged tracked files, without writing the index (GIT_OPTIONAL_LOCKS=0)."""
    res = _git(["status", "--porcelain", "-z", "--untracked-files=no", "--no-renames"], cwd,
               env={"GIT_OPTIONAL_LOCKS": "0"})
    return sorted({entry[3:] for entry in _split_z(res.out) if len(entry) > 3})


def _worktree_gitdir(worktree: str) -> str:
    """The private git dir of a linked worktree, read from its `.git` file."""
    dotgit = os.path.join(worktree, ".git")
    try:
        with open(dotgit, encoding="utf-8") as f:
            text = f.read().strip()
    except IsADirectoryError:
        return os.path.realpath(dotgit)
    except (FileNotFoundError, NotADirectoryError):
        raise WorkspaceError(f"{worktree}: not a git worktree (no .git)") from None
    if not text.startswith("gitdir:"):
        raise WorkspaceError(f"{dotgit}: not a gitdir file")
    return os.path.realpath(os.path.join(worktree, text[len("gitdir:"):].strip()))


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _check_not_checkout(info: dict, path: str) -> None:
    """Refuse a worktree path that is (or contains) the user's checkout or the git dir."""
    real = os.path.realpath(path)
    for protected in (info["toplevel"], info["common"]):
        if real == protected or protected.startswith(real.rstrip(os.sep) + os.sep):
            raise WorkspaceError(f"{path}: is or contains the repository {protected}; refusing to use it as a worktree")


# ---------------------------------------------------------------------------------------------
# the spec's worktree

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


def _ref_lock(info: dict, branch: str) -> str:
    return os.path.join(info["common"], "refs", "heads", *branch.split("/")) + ".lock"


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


# ---------------------------------------------------------------------------------------------
# the commit after each dispatch

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


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _common_of(gitdir: str) -> str:
    common = _read(os.path.join(gitdir, "commondir"))
    return os.path.realpath(os.path.join(gitdir, common)) if common else gitdir


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


# ---------------------------------------------------------------------------------------------
# the end of a spec

def merge_branch(repo: str, branch: str, into_branch: str, message: str, author: str | None) -> dict:
    """Merge `branch` into `into_branch` in the user's checkout `repo` with a merge commit
    (`--no-ff`, message + trailer `Iwo-Merge: <branch>`), only when that checkout is on
    `into_branch`, has no modified tracked files and no operation in progress. `branch` is kept.

    Returns {"ok": bool, "commit": the merge commit (None when there was nothing to merge),
    "already": True when an earlier run (or someone) had merged it, "reason": None | "conflict" |
    "dirty" | "untracked" | "other-branch" | "busy" | "locked" (an index.lock, HEAD.lock or the
    branch's ref lock exists: never removed here) | "missing-branch" | "error",
    "files": [...], "detail": one line}. On any failure the checkout is left exactly as it was
    (a conflicting merge is aborted, ORIG_HEAD restored). Untracked files are allowed unless the
    merge would overwrite them ("untracked"). A merge of ours interrupted by a kill (MERGE_HEAD
    and our trailer in MERGE_MSG) is aborted and redone.
    """
    info = _repo(repo)
    identity = _author(author)
    cwd = info["toplevel"]
    result = {"ok": False, "commit": None, "already": False, "reason": None, "files": [], "detail": ""}

    def fail(reason: str, detail: str, files: list[str] | None = None) -> dict:
        return {**result, "reason": reason, "detail": detail, **_clip_files(files or [])}

    with _repo_lock(info):
        tip = branch_head(repo, branch)
        into_tip = branch_head(repo, into_branch)
        if tip is None or into_tip is None:
            missing = branch if tip is None else into_branch
            return fail("missing-branch", f"branch {missing} does not exist in {cwd}")
        trailer = f"{MERGE_TRAILER}: {branch}"
        gitdir = info["gitdir"]
        merge_msg = _read(os.path.join(gitdir, "MERGE_MSG")) or ""
        if os.path.exists(os.path.join(gitdir, "MERGE_HEAD")) and trailer in merge_msg.splitlines():
            _git(["merge", "--abort"], cwd, what=f"aborting an interrupted merge of {branch}")
        if _is_ancestor(cwd, tip, into_tip):
            res = _git(["rev-list", "--first-parent", "--merges", "--parents", "--max-count=1000", into_tip], cwd)
            commit = next((line.split()[0] for line in res.out.splitlines() if tip in line.split()[2:]), None)
            note = "already merged" if commit else f"nothing to merge: {branch} is already in {into_branch}"
            return {**result, "ok": True, "commit": commit, "already": commit is not None, "detail": note}
        current = _git(["symbolic-ref", "-q", "HEAD"], cwd, check=False).out.strip()
        if current != f"refs/heads/{into_branch}":
            shown = current.removeprefix("refs/heads/") or "a detached HEAD"
            return fail("other-branch", f"{cwd} has {shown} checked out, not {into_branch}")
        busy = [name for name in _IN_PROGRESS if os.path.exists(os.path.join(gitdir, name))]
        if busy:
            return fail("busy", f"{cwd} has an operation in progress ({', '.join(busy)})")
        locks = [path for path in (os.path.join(gitdir, "index.lock"), os.path.join(gitdir, "HEAD.lock"),
                                   _ref_lock(info, into_branch)) if os.path.exists(path)]
        if locks:  # a git running there, or a lock a killed one left: never ours to remove
            return fail("locked", f"{', '.join(locks)} exists: a git command is running in {cwd}, or one was killed"
                                  " and left it (remove it when no git runs there)")
        left_before = {name for name in _MERGE_FILES if os.path.exists(os.path.join(gitdir, name))}
        dirty = _dirty_tracked(cwd)
        if dirty:
            return fail("dirty", f"{cwd} has uncommitted changes to tracked files", dirty)
        orig = _git(["rev-parse", "-q", "--verify", "ORIG_HEAD"], cwd, check=False).out.strip() or None
        text = (message.rstrip() or f"Merge {branch}") + f"\n\n{trailer}\n"
        res = _git(["merge", "-q", "--no-ff", "--no-edit", "--no-verify", "--no-gpg-sign", "--no-log",
                    "--no-squash", "--no-autostash", "--no-signoff", "-m", text, f"refs/heads/{branch}"],
                   cwd, env=identity, check=False)
        if res.rc == 0:
            commit = _git(["rev-parse", "HEAD"], cwd).out.strip()
            return {**result, "ok": True, "commit": commit, "detail": f"merged {branch} into {into_branch}"}
        if os.path.exists(os.path.join(gitdir, "MERGE_HEAD")):
            conflicted = _split_z(_git(["diff", "--name-only", "--diff-filter=U", "-z"], cwd, check=False).out)
            aborted = _git(["merge", "--abort"], cwd, check=False)
            if aborted.rc != 0 and not _dirty_tracked(cwd):  # e.g. a lock appeared: nothing was merged in
                _undo_merge_files(gitdir, left_before)
                _restore_orig_head(cwd, orig)
                return fail("error", f"git merge {branch} in {cwd} failed and could not be aborted:"
                                     f" {_first_line(aborted.err or res.err)}")
            if aborted.rc != 0:
                raise WorkspaceError(f"{cwd}: the merge of {branch} failed and `git merge --abort` too:"
                                     f" {_first_line(aborted.err)}; run it there yourself")
            _restore_orig_head(cwd, orig)
            left = _dirty_tracked(cwd)
            if left or os.path.exists(os.path.join(gitdir, "MERGE_HEAD")):
                raise WorkspaceError(f"{cwd}: aborting the merge of {branch} left changes ({', '.join(left[:5])})")
            return fail("conflict", f"merging {branch} into {into_branch} conflicts in {len(conflicted)} file(s)",
                        sorted(conflicted))
        _undo_merge_files(gitdir, left_before)
        _restore_orig_head(cwd, orig)
        listed = [line.strip() for line in res.err.splitlines() if line.startswith("\t")]
        if "untracked working tree files would be overwritten" in res.err:
            return fail("untracked", f"untracked files in {cwd} would be overwritten by the merge", listed)
        if "local changes to the following files would be overwritten" in res.err:
            return fail("dirty", f"{cwd} has uncommitted changes the merge would overwrite", listed)
        return fail("error", f"git merge {branch} in {cwd}: {_first_line(res.err or res.out)}")


_MERGE_FILES = ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE")


def _undo_merge_files(gitdir: str, left_before: set[str]) -> None:
    """Drop what a merge that never began wrote (MERGE_HEAD, MERGE_MSG, ...): not what was there before."""
    for name in _MERGE_FILES:
        if name not in left_before:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(gitdir, name))


def _restore_orig_head(cwd: str, orig: str | None) -> None:
    if orig:
        _git(["update-ref", "--no-deref", "ORIG_HEAD", orig], cwd, check=False)
    else:
        _git(["update-ref", "--no-deref", "-d", "ORIG_HEAD"], cwd, check=False)


_PLACEHOLDER = re.compile(r"\{(branch|spec_id|title)\}")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish", "ash", "busybox"}


def done_command_argv(template: str | list[str], branch: str, spec_id: str, title: str) -> list[str]:
    """The argv of `git.done_command`: the template is split like a POSIX shell would split it
    (shlex; a list is taken as the argv), THEN `{branch}`, `{spec_id}`, `{title}` are replaced
    inside each word, in one pass. No shell runs it, so quotes, `$(...)`, `;` or backticks in a
    title are plain text. Raises WorkspaceError for a template that cannot be split."""
    if isinstance(template, str):
        try:
            words = shlex.split(template)
        except ValueError as exc:
            raise WorkspaceError(f"git.done_command {template!r}: {exc}") from None
    else:
        words = [str(word) for word in template]
    if not words:
        raise WorkspaceError("git.done_command is empty")
    if os.path.basename(words[0]) in _SHELLS:
        for flag, script in zip(words[1:], words[2:]):
            if re.fullmatch(r"-[a-z]*c[a-z]*", flag) and _PLACEHOLDER.search(script):
                raise WorkspaceError(f"git.done_command: a placeholder inside `{words[0]} {flag} '...'` would be"
                                     " run as shell code; use \"$IWO_BRANCH\", \"$IWO_SPEC_ID\", \"$IWO_TITLE\" there")
    values = {"branch": branch, "spec_id": spec_id, "title": (title or "").replace("\0", "")}
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in words]


def run_done_command(template: str | list[str], cwd: str, branch: str, spec_id: str, title: str,
                     timeout: float = 600) -> dict:
    """Run `git.done_command` (see done_command_argv) in `cwd` (the workdir), without a shell,
    stdin closed, with IWO_BRANCH, IWO_SPEC_ID and IWO_TITLE in its environment (use those,
    quoted, in an explicit `sh -c '...'` when shell features are needed). Its whole process group
    is killed at `timeout` seconds.

    Returns {"ok", "exit_code" (None when it could not start or timed out), "timed_out", "argv",
    "output" (stdout and stderr interleaved, clipped to MAX_OUTPUT characters)}. Not idempotent by
    nature: a re-run after a kill runs the command again, so the command should tolerate that."""
    argv = done_command_argv(template, branch, spec_id, title)
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", IWO_BRANCH=branch, IWO_SPEC_ID=spec_id, IWO_TITLE=title or "")
    out = {"ok": False, "exit_code": None, "timed_out": False, "argv": argv, "output": ""}
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return {**out, "output": f"cannot run {argv[0]}: {exc.strerror or exc}"}
    try:
        data, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        data, _ = proc.communicate()
        out["timed_out"] = True
    text = data.decode("utf-8", errors="replace")
    if len(text) > MAX_OUTPUT:
        half = MAX_OUTPUT // 2
        text = text[:half] + f"\n[... {len(text) - MAX_OUTPUT} characters cut ...]\n" + text[-half:]
    out["output"] = text
    if not out["timed_out"]:
        out["exit_code"] = proc.returncode
        out["ok"] = proc.returncode == 0
    return out


# ---------------------------------------------------------------------------------------------
# several machines

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
