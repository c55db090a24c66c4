"""Running git for iwo-lite, and reading a repository: the one runner, its rules, what a path is.

Owns `_git` (a clean environment, every hook off, no prompts, the C locale; a lock held by someone
else waited for, one of our own left by a dead git removed), the per-repository thread locks, what
the workdir is at submit (repository, HEAD, branch), a spec's branch name and its dispatches' tags
and messages, and the read-only questions (a branch's tip, ancestry, worktrees, changed files).
`WorkspaceError`: one line naming the repository, branch or path, and the cause. The rules every
function of the package keeps are in workspace/__init__.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
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


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _common_of(gitdir: str) -> str:
    common = _read(os.path.join(gitdir, "commondir"))
    return os.path.realpath(os.path.join(gitdir, common)) if common else gitdir


def _ref_lock(info: dict, branch: str) -> str:
    return os.path.join(info["common"], "refs", "heads", *branch.split("/")) + ".lock"
