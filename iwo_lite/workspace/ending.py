"""The end of a spec's branch: the merge into the branch it started from, or the done command.

Owns `merge_branch` (--no-ff, in the user's checkout, the only writer of it; a conflict undone and
reported as data) and `run_done_command` (the `git.done_command` template filled and run without
a shell, its output kept short).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess

from iwo_lite.config_checks import PLACEHOLDER, Bad, template_words
from iwo_lite.workspace.git import (
    MAX_OUTPUT,
    MERGE_TRAILER,
    WorkspaceError,
    _IN_PROGRESS,
    _LEAKY_ENV,
    _author,
    _clip_files,
    _dirty_tracked,
    _first_line,
    _git,
    _is_ancestor,
    _read,
    _ref_lock,
    _repo,
    _repo_lock,
    _split_z,
    branch_head,
)


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


def done_command_argv(template: str | list[str], branch: str, spec_id: str, title: str) -> list[str]:
    """The argv of `git.done_command`: the template is split like a POSIX shell would split it
    (shlex; a list is taken as the argv), THEN `{branch}`, `{spec_id}`, `{title}` are replaced
    inside each word, in one pass. No shell runs it, so quotes, `$(...)`, `;` or backticks in a
    title are plain text. Raises WorkspaceError for a template that cannot be split."""
    line = template if isinstance(template, str) else shlex.join(str(word) for word in template)
    try:
        words = template_words(line)  # the checks config loading makes (config_checks), for a list too
    except Bad as bad:
        raise WorkspaceError(f"git.done_command: {bad}") from None
    values = {"branch": branch, "spec_id": spec_id, "title": (title or "").replace("\0", "")}
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in words]


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
