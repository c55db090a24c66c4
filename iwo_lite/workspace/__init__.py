"""Where a dispatch runs, its commit, the merge and the cleanup: the workspace kinds and git.

The kinds (`KINDS`, the `Workspace` interface in workspace/base.py): "shared" (the workdir
itself, workspace/shared.py) and "worktree" (each spec its own branch and git worktree,
workspace/worktree.py). The loop asks the spec's kind (`of(settings)`) and holds no git code;
adding a kind (a container, say) is one module and one line in KINDS.

Below the kinds, this package owns every `git` command iwo-lite runs (git.py: the runner and
the reads; trees.py: worktrees; commits.py: the commit per dispatch; ending.py: merge and done
command; remotes.py: push and fetch): recording the workdir's HEAD at submit, the
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

from iwo_lite.workspace.base import KINDS, Workspace, of, settings_for
from iwo_lite.workspace.commits import commit_dispatch, find_dispatch_commit, fork_point
from iwo_lite.workspace.ending import done_command_argv, merge_branch, run_done_command
from iwo_lite.workspace.git import (
    BRANCH_PREFIX,
    DEFAULT_AUTHOR,
    DISPATCH_TRAILER,
    LOCK_WAIT_S,
    MAX_FILES,
    MAX_OUTPUT,
    MERGE_TRAILER,
    SEARCH_DEPTH,
    STALE_LOCK_S,
    WorkspaceError,
    _repo_cache,
    branch_head,
    changed_files,
    current_branch,
    describe_repo,
    dispatch_message,
    dispatch_tag,
    git_available,
    git_version,
    head_commit,
    is_repository,
    list_worktrees,
    spec_branch,
    unmerged,
)
from iwo_lite.workspace.remotes import fetch_branch, push_branch
from iwo_lite.workspace.trees import delete_branch, ensure_worktree, probe_worktree, remove_worktree, set_aside

__all__ = [
    "KINDS", "Workspace", "of", "settings_for",
    "BRANCH_PREFIX", "DEFAULT_AUTHOR", "DISPATCH_TRAILER", "LOCK_WAIT_S", "MAX_FILES", "MAX_OUTPUT", "MERGE_TRAILER",
    "SEARCH_DEPTH", "STALE_LOCK_S", "WorkspaceError", "branch_head", "changed_files", "commit_dispatch",
    "current_branch", "delete_branch", "describe_repo", "dispatch_message", "dispatch_tag", "done_command_argv",
    "ensure_worktree", "fetch_branch", "find_dispatch_commit", "fork_point", "git_available", "git_version",
    "head_commit", "is_repository", "list_worktrees", "merge_branch", "probe_worktree", "push_branch",
    "remove_worktree", "run_done_command", "set_aside", "spec_branch", "unmerged", "_repo_cache",
]
