"""iwo_lite.workspace against real git in temporary directories (no mocks).

A kill -9 in the middle of an operation is simulated by doing its first half by hand (the
branch only, a locked half-made worktree, an index.lock, a commit the caller never recorded,
a merge left in progress) and calling the function again: one branch, one commit, same sha.

Every test runs with a hostile global git config (signing on, no identity allowed from guesses,
untracked files hidden from status, fast-forward-only merges) so that nothing here depends on
the machine's own ~/.gitconfig and the functions prove they override what could break them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iwo_lite import workspace as ws
from iwo_lite.workspace import WorkspaceError

# No daemon: the unit tier (`pytest -m unit`), though each test runs git.
pytestmark = [pytest.mark.skipif(not ws.git_available(), reason="git is not installed"), pytest.mark.unit]

ROOT = Path(__file__).resolve().parent.parent
AUTHOR = "Iwo Test <iwo-test@example.invalid>"
HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout",
         "reference-transaction", "pre-merge-commit", "post-merge", "pre-push")


@pytest.fixture(autouse=True)
def hostile_global_config(tmp_path, monkeypatch):
    config = tmp_path / "global.gitconfig"
    config.write_text("[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n[user]\n\tuseConfigOnly = true\n"
                      "[status]\n\tshowUntrackedFiles = no\n[merge]\n\tff = only\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


def g(cwd, *args, check=True) -> str:
    """git as the test's own hand (identity and no signing given explicitly)."""
    proc = subprocess.run(["git", "-c", "user.name=Hand", "-c", "user.email=hand@example.invalid",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout.strip()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    g(root, "init", "-q", "-b", "main")
    write(root / "README.md", "hello\n")
    write(root / "src" / "app.py", "print('v1')\n")
    write(root / ".gitignore", "*.log\n")
    g(root, "add", "-A")
    g(root, "commit", "-q", "-m", "first")
    return root


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    (path / "worktrees").mkdir(parents=True)
    return path


def snapshot(checkout: Path) -> dict:
    """What a user sees of their checkout: branch, HEAD, status (untracked too), file contents."""
    files = {str(p.relative_to(checkout)): p.read_bytes() for p in sorted(checkout.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(checkout).parts}
    return {"head": g(checkout, "rev-parse", "HEAD"), "branch": g(checkout, "symbolic-ref", "-q", "HEAD", check=False),
            "status": g(checkout, "status", "--porcelain", "--untracked-files=all"), "files": files,
            "merge_head": (checkout / ".git" / "MERGE_HEAD").exists(),
            "orig_head": g(checkout, "rev-parse", "-q", "--verify", "ORIG_HEAD", check=False)}


def branches(repo: Path) -> list[str]:
    return g(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/iwo/").split()


def count(repo: Path, rev: str) -> int:
    return int(g(repo, "rev-list", "--count", rev))


def make(repo: Path, home: Path, spec: str, base: str | None = None) -> dict:
    base = base or g(repo, "rev-parse", "HEAD")
    return ws.ensure_worktree(str(repo), str(home / "worktrees" / spec), ws.spec_branch(spec), base)


def dispatch(wt: str, spec: str, number: int, role: str = "builder", summary: str = "work", since=None) -> dict:
    return ws.commit_dispatch(wt, ws.dispatch_message(number, role, summary), AUTHOR,
                              ws.dispatch_tag(spec, number), since=since, branch=ws.spec_branch(spec))


# --- recording at submit -------------------------------------------------------------------

def test_recording_at_submit(repo, tmp_path):
    head = g(repo, "rev-parse", "HEAD")
    assert ws.is_repository(str(repo)) and ws.head_commit(str(repo)) == head
    assert ws.current_branch(str(repo)) == "main"
    desc = ws.describe_repo(str(repo / "src"))
    assert desc == {"repository": True, "toplevel": str(repo.resolve()), "prefix": "src", "head": head,
                    "branch": "main"}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not ws.is_repository(str(plain)) and ws.head_commit(str(plain)) is None
    assert ws.current_branch(str(plain)) is None and ws.describe_repo(str(plain))["repository"] is False
    unborn = tmp_path / "unborn"
    unborn.mkdir()
    g(unborn, "init", "-q", "-b", "trunk")
    assert ws.is_repository(str(unborn)) and ws.head_commit(str(unborn)) is None
    assert ws.current_branch(str(unborn)) is None
    g(repo, "checkout", "-q", "--detach")
    assert ws.current_branch(str(repo)) is None and ws.head_commit(str(repo)) == head


def test_git_missing_is_a_clear_error(repo, home, tmp_path, monkeypatch):
    empty = tmp_path / "nobin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert not ws.git_available() and not ws.is_repository(str(repo)) and ws.head_commit(str(repo)) is None
    ws._repo_cache.clear()
    with pytest.raises(WorkspaceError, match="git is not installed"):
        ws.ensure_worktree(str(repo), str(home / "worktrees" / "s1"), "iwo/s1", "0" * 40)


def test_not_a_repository_and_bad_author(tmp_path, repo, home):
    with pytest.raises(WorkspaceError, match="not a git repository"):
        ws.ensure_worktree(str(tmp_path), str(home / "worktrees" / "s1"), "iwo/s1", "0" * 40)
    wt = make(repo, home, "s1")["path"]
    write(Path(wt) / "x.txt", "x\n")
    with pytest.raises(WorkspaceError, match="git.author"):
        ws.commit_dispatch(wt, "01-builder: x", "no email here", "s1#01")
    assert ws.changed_files(wt) == ["x.txt"]


def test_leaked_git_environment_is_ignored(repo, home, tmp_path, monkeypatch):
    base = g(repo, "rev-parse", "HEAD")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "bogus-index"))
    made = make(repo, home, "s1", base)
    write(Path(made["path"]) / "new.txt", "n\n")
    assert dispatch(made["path"], "s1", 1)["commit"]
    assert not (tmp_path / "bogus-index").exists() and not (tmp_path / "elsewhere").exists()


# --- the worktree ----------------------------------------------------------------------------

def test_worktree_from_the_submit_commit_and_idempotent(repo, home):
    base = g(repo, "rev-parse", "HEAD")
    write(repo / "later.txt", "the user kept working\n")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", "later")
    before = snapshot(repo)
    made = make(repo, home, "s1", base)
    wt = Path(made["path"])
    assert made["created"] and made["head"] == base and made["branch"] == "iwo/s1" and made["repaired"] == []
    assert (wt / "src" / "app.py").read_text() == "print('v1')\n" and not (wt / "later.txt").exists()
    assert g(wt, "symbolic-ref", "HEAD") == "refs/heads/iwo/s1"
    again = make(repo, home, "s1", base)
    assert not again["created"] and again["head"] == base and again["path"] == made["path"]
    assert branches(repo) == ["iwo/s1"] and snapshot(repo) == before
    assert json.loads(json.dumps(again)) == again


def test_existing_branch_is_reused_never_reset(repo, home):
    """Killed after the branch was made (and even after commits on it): the branch keeps them."""
    base = g(repo, "rev-parse", "HEAD")
    g(repo, "branch", "iwo/s1", base)
    made = make(repo, home, "s1", base)
    assert made["created"] and made["head"] == base and branches(repo) == ["iwo/s1"]
    write(Path(made["path"]) / "a.txt", "a\n")
    tip = dispatch(made["path"], "s1", 1)["commit"]
    ws.remove_worktree(str(repo), made["path"])
    again = make(repo, home, "s1", base)
    assert again["head"] == tip and (Path(again["path"]) / "a.txt").read_text() == "a\n"
    assert g(repo, "rev-parse", "iwo/s1") == tip and branches(repo) == ["iwo/s1"]


def test_registered_worktree_whose_directory_was_deleted(repo, home):
    made = make(repo, home, "s1")
    write(Path(made["path"]) / "a.txt", "a\n")
    tip = dispatch(made["path"], "s1", 1)["commit"]
    subprocess.run(["rm", "-rf", made["path"]], check=True)
    again = make(repo, home, "s1")
    assert again["head"] == tip and again["repaired"] and (Path(again["path"]) / "a.txt").exists()
    assert len([e for e in ws.list_worktrees(str(repo)) if e["branch"] == "iwo/s1"]) == 1


def test_half_made_worktree_is_remade(repo, home):
    """`git worktree add` killed mid-checkout: registered, locked "initializing", files missing."""
    path = home / "worktrees" / "s1"
    g(repo, "worktree", "add", "-q", "-b", "iwo/s1", str(path), "HEAD")
    admin = Path(g(path, "rev-parse", "--absolute-git-dir"))
    (admin / "locked").write_text("initializing")
    (path / "src" / "app.py").unlink()
    made = make(repo, home, "s1")
    assert made["repaired"] and (path / "src" / "app.py").exists()
    assert ws.changed_files(made["path"]) == []
    assert not any(e["locked"] for e in ws.list_worktrees(str(repo)))
    assert branches(repo) == ["iwo/s1"]


def test_unregistered_directory_is_moved_aside_not_deleted(repo, home):
    path = home / "worktrees" / "s1"
    write(path / "notes.txt", "someone's files\n")
    made = make(repo, home, "s1")
    assert made["created"] and any("moved" in line for line in made["repaired"])
    aside = list((home / "worktrees" / ".orphaned").iterdir())
    assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "someone's files\n"
    assert not (path / "notes.txt").exists() and (path / "README.md").exists()
    empty = home / "worktrees" / "s2"
    empty.mkdir()
    assert make(repo, home, "s2")["repaired"] == [] and (empty / "README.md").exists()


def test_directory_whose_git_file_is_gone(repo, home):
    made = make(repo, home, "s1")
    (Path(made["path"]) / ".git").unlink()
    again = make(repo, home, "s1")
    assert (Path(again["path"]) / ".git").is_file() and again["repaired"]
    assert g(again["path"], "symbolic-ref", "HEAD") == "refs/heads/iwo/s1"


def test_worktree_on_another_branch_is_switched_back(repo, home):
    made = make(repo, home, "s1")
    g(made["path"], "checkout", "-q", "-b", "agent-side-branch")
    again = make(repo, home, "s1")
    assert any("switched" in line for line in again["repaired"])
    assert g(made["path"], "symbolic-ref", "HEAD") == "refs/heads/iwo/s1"
    assert "agent-side-branch" in g(repo, "branch", "--list", "agent-side-branch")
    g(made["path"], "checkout", "-q", "agent-side-branch")
    write(Path(made["path"]) / "README.md", "uncommitted\n")
    with pytest.raises(WorkspaceError, match="uncommitted changes"):
        make(repo, home, "s1")
    assert (Path(made["path"]) / "README.md").read_text() == "uncommitted\n"


def test_branch_checked_out_elsewhere_is_refused(repo, home, tmp_path):
    g(repo, "worktree", "add", "-q", "-b", "iwo/s1", str(tmp_path / "users-own"), "HEAD")
    with pytest.raises(WorkspaceError, match="already checked out at .*users-own"):
        make(repo, home, "s1")


def test_worktree_path_may_not_be_the_checkout(repo):
    with pytest.raises(WorkspaceError, match="refusing"):
        ws.ensure_worktree(str(repo), str(repo), "iwo/s1", g(repo, "rev-parse", "HEAD"))
    with pytest.raises(WorkspaceError, match="refusing"):
        ws.remove_worktree(str(repo), str(repo.parent))
    assert (repo / "README.md").exists()


def test_recorded_head_from_another_machine(repo, home):
    base = g(repo, "rev-parse", "HEAD")
    with pytest.raises(WorkspaceError, match="another machine"):
        ws.ensure_worktree(str(repo), str(home / "worktrees" / "s1"), "iwo/s1", base, head="1" * 40)
    made = make(repo, home, "s1")
    write(Path(made["path"]) / "a.txt", "a\n")
    tip = dispatch(made["path"], "s1", 1)["commit"]
    ws.remove_worktree(str(repo), made["path"])
    g(repo, "branch", "-D", "iwo/s1")  # the branch is gone but its commit is still here
    again = ws.ensure_worktree(str(repo), made["path"], "iwo/s1", base, head=tip)
    assert again["head"] == tip and (Path(again["path"]) / "a.txt").exists()


def test_concurrent_ensure_from_threads_and_processes(repo, home):
    base = g(repo, "rev-parse", "HEAD")
    results, errors = {}, []

    def one(spec):
        try:
            results[spec] = ws.ensure_worktree(str(repo), str(home / "worktrees" / spec), f"iwo/{spec}", base)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=one, args=(f"t{i}",)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(results) == 8
    code = ("import sys; from iwo_lite import workspace as ws; "
            "print(ws.ensure_worktree(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])['head'])")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(repo), str(home / "worktrees" / f"p{i}"), f"iwo/p{i}",
                               base], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outs
    assert sorted(branches(repo)) == sorted([f"iwo/t{i}" for i in range(8)] + [f"iwo/p{i}" for i in range(6)])
    assert len(ws.list_worktrees(str(repo))) == 15


# --- the commit per dispatch ------------------------------------------------------------------

def test_commit_per_dispatch_and_no_empty_commits(repo, home):
    made = make(repo, home, "s1")
    wt = Path(made["path"])
    write(wt / "src" / "app.py", "print('v2')\n")
    write(wt / "src" / "new module.py", "x = 1\n")
    write(wt / "debug.log", "ignored\n")
    (wt / "README.md").unlink()
    first = dispatch(str(wt), "s1", 1, "builder", "Add the thing\nand explain it", since=made["head"])
    assert first["changed"] and not first["existing"] and first["head"] == first["commit"]
    assert first["files"] == ["README.md", "src/app.py", "src/new module.py"] and first["file_count"] == 3
    assert g(wt, "log", "-1", "--format=%s") == "01-builder: Add the thing"
    assert g(wt, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == f"{AUTHOR}|{AUTHOR}"
    assert "Iwo-Dispatch: s1#01" in g(wt, "log", "-1", "--format=%B")
    assert g(wt, "log", "-1", "--format=%G?") == "N"  # not signed despite commit.gpgsign=true
    assert g(wt, "rev-parse", "iwo/s1") == first["commit"] and ws.changed_files(str(wt)) == []
    assert g(wt, "status", "--porcelain", "--untracked-files=all", "--ignored") == "!! debug.log"
    n = count(repo, "iwo/s1")
    second = dispatch(str(wt), "s1", 2, "reviewer", "looks fine", since=first["head"])
    assert second == {"commit": None, "changed": False, "head": first["commit"], "files": [], "file_count": 0,
                      "existing": False}
    assert count(repo, "iwo/s1") == n


def test_commit_is_found_again_after_a_kill(repo, home):
    made = make(repo, home, "s1")
    wt = made["path"]
    write(Path(wt) / "a.txt", "a\n")
    done = dispatch(wt, "s1", 1, since=made["head"])
    n = count(repo, "iwo/s1")
    # the caller was killed before recording it; later an orphan tool touched a file
    write(Path(wt) / "late.txt", "written after the commit\n")
    again = dispatch(wt, "s1", 1, since=made["head"])
    assert again["commit"] == done["commit"] and again["existing"] and again["files"] == ["a.txt"]
    assert count(repo, "iwo/s1") == n
    # without the start commit the recent history is searched
    assert dispatch(wt, "s1", 1)["commit"] == done["commit"]


def test_kill_between_add_and_commit(repo, home):
    made = make(repo, home, "s1")
    wt = made["path"]
    write(Path(wt) / "a.txt", "a\n")
    write(Path(wt) / "b.txt", "b\n")
    g(wt, "add", "a.txt")  # git add done (partly), git commit never ran
    done = dispatch(wt, "s1", 1, since=made["head"])
    assert done["files"] == ["a.txt", "b.txt"] and count(repo, "iwo/s1") == count(repo, made["head"]) + 1
    assert g(wt, "status", "--porcelain", "--untracked-files=all") == ""


def test_commit_made_by_a_killed_run_is_returned(repo, home):
    made = make(repo, home, "s1")
    wt = made["path"]
    write(Path(wt) / "a.txt", "a\n")
    g(wt, "add", "-A")
    g(wt, "commit", "-q", "-m", "01-builder: work\n\nIwo-Dispatch: s1#01")
    sha = g(wt, "rev-parse", "HEAD")
    assert dispatch(wt, "s1", 1, since=made["head"])["commit"] == sha
    assert count(repo, "iwo/s1") == count(repo, made["head"]) + 1
    # a tag that merely starts the same way is another dispatch
    write(Path(wt) / "b.txt", "b\n")
    other = ws.commit_dispatch(wt, "10-builder: x", AUTHOR, "s1#010", since=made["head"])
    assert other["commit"] != sha and not other["existing"]


def test_agent_commits_of_its_own(repo, home):
    made = make(repo, home, "s1")
    wt = made["path"]
    write(Path(wt) / "a.txt", "a\n")
    g(wt, "add", "-A")
    g(wt, "commit", "-q", "-m", "agent's own commit")
    own = g(wt, "rev-parse", "HEAD")
    result = dispatch(wt, "s1", 1, since=made["head"])
    assert result["commit"] is None and result["changed"] and result["head"] == own
    write(Path(wt) / "b.txt", "b\n")
    g(wt, "add", "-A")
    g(wt, "commit", "-q", "-m", "agent again")
    write(Path(wt) / "c.txt", "left over\n")
    mixed = dispatch(wt, "s1", 2, since=own)
    assert mixed["files"] == ["c.txt"] and g(wt, "log", "-1", "--format=%P", mixed["commit"]) == g(wt, "rev-parse", "HEAD~1")


def test_agent_that_switched_branches_is_an_error(repo, home):
    made = make(repo, home, "s1")
    g(made["path"], "checkout", "-q", "-b", "elsewhere")
    write(Path(made["path"]) / "a.txt", "a\n")
    with pytest.raises(WorkspaceError, match="not on branch iwo/s1"):
        dispatch(made["path"], "s1", 1)
    assert count(repo, "elsewhere") == count(repo, "main")


def test_hooks_do_not_run_and_signing_config_is_ignored(repo, home, tmp_path):
    marker = tmp_path / "hooks-ran"
    for hooks_dir in (repo / ".git" / "hooks", tmp_path / "custom-hooks"):
        hooks_dir.mkdir(exist_ok=True)
        for hook in HOOKS:
            write(hooks_dir / hook, f"#!/bin/sh\necho {hook} >> '{marker}'\nexit 1\n")
            (hooks_dir / hook).chmod(0o755)
    g(repo, "config", "commit.gpgsign", "true")
    g(repo, "config", "gpg.program", "false")
    made = make(repo, home, "s1")
    write(Path(made["path"]) / "a.txt", "a\n")
    assert dispatch(made["path"], "s1", 1)["commit"]
    assert ws.merge_branch(str(repo), "iwo/s1", "main", "Merge s1", AUTHOR)["ok"]
    g(repo, "config", "core.hooksPath", str(tmp_path / "custom-hooks"))
    made2 = make(repo, home, "s2")
    write(Path(made2["path"]) / "b.txt", "b\n")
    assert dispatch(made2["path"], "s2", 1)["commit"]
    assert not marker.exists(), marker.read_text()
    # the check can fail: the same hooks do run for a plain commit
    g(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", "plain", check=False)
    assert marker.exists()


def test_two_specs_write_the_same_file(repo, home):
    before = snapshot(repo)
    one, two = make(repo, home, "s1"), make(repo, home, "s2")
    write(Path(one["path"]) / "shared.txt", "from s1\n")
    write(Path(two["path"]) / "shared.txt", "from s2\n")
    c1, c2 = dispatch(one["path"], "s1", 1), dispatch(two["path"], "s2", 1)
    assert g(repo, "show", f"{c1['commit']}:shared.txt") == "from s1"
    assert g(repo, "show", f"{c2['commit']}:shared.txt") == "from s2"
    assert g(repo, "diff", "--name-only", "main", "iwo/s1") == "shared.txt"
    assert g(repo, "diff", "--name-only", "main", "iwo/s2") == "shared.txt"
    assert snapshot(repo) == before and not (repo / "shared.txt").exists()


def test_stale_and_live_locks(repo, home):
    made = make(repo, home, "s1")
    wt = made["path"]
    admin = Path(g(wt, "rev-parse", "--absolute-git-dir"))
    lock = admin / "index.lock"
    lock.write_text("")
    old = time.time() - 600
    os.utime(lock, (old, old))
    write(Path(wt) / "a.txt", "a\n")
    assert dispatch(wt, "s1", 1)["commit"] and not lock.exists()
    # a stale lock on the spec's own branch ref (git killed while updating it)
    ref_lock = repo / ".git" / "refs" / "heads" / "iwo" / "s1.lock"
    ref_lock.write_text("")
    os.utime(ref_lock, (old, old))
    write(Path(wt) / "b.txt", "b\n")
    assert dispatch(wt, "s1", 2)["commit"] and not ref_lock.exists()
    # a fresh lock held by a git that is still finishing: waited for, not removed
    lock.write_text("")
    threading.Timer(0.4, lock.unlink).start()
    write(Path(wt) / "c.txt", "c\n")
    start = time.monotonic()
    assert dispatch(wt, "s1", 3)["commit"]
    assert time.monotonic() - start >= 0.35
    # and ensure_worktree clears a stale one too
    lock.write_text("")
    os.utime(lock, (old, old))
    make(repo, home, "s1")
    assert not lock.exists()


# --- fork ----------------------------------------------------------------------------------

def test_fork_starts_from_the_commit_before_a_dispatch(repo, home):
    made = make(repo, home, "s1")
    wt = made["path"]
    starts = {1: made["head"]}
    write(Path(wt) / "one.txt", "1\n")
    d1 = dispatch(wt, "s1", 1, since=starts[1])
    starts[2] = d1["head"]
    d2 = dispatch(wt, "s1", 2, "reviewer", since=starts[2])  # no change: no commit
    starts[3] = d2["head"]
    write(Path(wt) / "three.txt", "3\n")
    dispatch(wt, "s1", 3, "builder", since=starts[3])
    assert starts[3] == d1["commit"]
    fork = ws.ensure_worktree(str(repo), str(home / "worktrees" / "f1"), "iwo/f1", starts[3])
    assert fork["head"] == d1["commit"]
    assert (Path(fork["path"]) / "one.txt").exists() and not (Path(fork["path"]) / "three.txt").exists()
    assert ws.fork_point(str(repo), "iwo/s1", "s1", 3, since=made["head"]) == d1["commit"]
    assert ws.fork_point(str(repo), "iwo/s1", "s1", 1, since=made["head"]) == made["head"]
    write(Path(fork["path"]) / "three.txt", "other\n")
    assert dispatch(fork["path"], "f1", 3)["commit"]
    assert g(repo, "show", "iwo/s1:three.txt") == "3"


# --- the end of a spec -------------------------------------------------------------------------

def spec_with_change(repo, home, spec="s1", name="feature.txt", text="feature\n") -> dict:
    made = make(repo, home, spec)
    write(Path(made["path"]) / name, text)
    return dispatch(made["path"], spec, 1)


def test_merge_clean_and_again(repo, home):
    tip = spec_with_change(repo, home)["commit"]
    main_before = g(repo, "rev-parse", "main")
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge spec s1", AUTHOR)
    assert result["ok"] and result["reason"] is None and not result["already"]
    assert g(repo, "log", "-1", "--format=%P", result["commit"]).split() == [main_before, tip]  # --no-ff
    assert g(repo, "log", "-1", "--format=%an <%ae>|%s") == f"{AUTHOR}|Merge spec s1"
    assert (repo / "feature.txt").read_text() == "feature\n" and g(repo, "status", "--porcelain") == ""
    assert g(repo, "rev-parse", "iwo/s1") == tip
    g(repo, "commit", "-q", "--allow-empty", "-m", "the user goes on")
    again = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge spec s1", AUTHOR)
    assert again["ok"] and again["already"] and again["commit"] == result["commit"]
    assert count(repo, "main") == count(repo, main_before) + 3


def test_merge_with_nothing_to_merge(repo, home):
    make(repo, home, "s1")
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert result["ok"] and result["commit"] is None and "nothing to merge" in result["detail"]


def test_merge_conflict_leaves_the_checkout_as_it_was(repo, home):
    spec_with_change(repo, home, name="src/app.py", text="print('spec')\n")
    write(repo / "src" / "app.py", "print('user')\n")
    g(repo, "commit", "-q", "-am", "user change")
    write(repo / "scratch.txt", "untracked stuff\n")
    g(repo, "update-ref", "ORIG_HEAD", "HEAD~1")
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert not result["ok"] and result["reason"] == "conflict" and result["files"] == ["src/app.py"]
    assert snapshot(repo) == before
    for name in ("MERGE_HEAD", "MERGE_MSG", "AUTO_MERGE"):
        assert not (repo / ".git" / name).exists()


def test_interrupted_merge_of_ours_is_aborted_and_redone(repo, home):
    spec_with_change(repo, home, name="src/app.py", text="print('spec')\n")
    write(repo / "src" / "app.py", "print('user')\n")
    g(repo, "commit", "-q", "-am", "user change")
    head = g(repo, "rev-parse", "HEAD")
    g(repo, "merge", "--no-ff", "-m", "Merge\n\nIwo-Merge: iwo/s1", "iwo/s1", check=False)  # killed before abort
    assert (repo / ".git" / "MERGE_HEAD").exists()
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert result["reason"] == "conflict" and not (repo / ".git" / "MERGE_HEAD").exists()
    assert g(repo, "rev-parse", "HEAD") == head and g(repo, "status", "--porcelain") == ""


def test_someone_elses_merge_in_progress_is_left_alone(repo, home):
    spec_with_change(repo, home, name="src/app.py", text="print('spec')\n")
    g(repo, "checkout", "-q", "-b", "topic")
    write(repo / "src" / "app.py", "print('topic')\n")
    g(repo, "commit", "-q", "-am", "topic")
    g(repo, "checkout", "-q", "main")
    write(repo / "src" / "app.py", "print('user')\n")
    g(repo, "commit", "-q", "-am", "user change")
    g(repo, "merge", "--no-ff", "topic", check=False)
    assert (repo / ".git" / "MERGE_HEAD").exists()
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert not result["ok"] and result["reason"] == "busy" and snapshot(repo) == before


def test_merge_into_a_dirty_checkout(repo, home):
    spec_with_change(repo, home)
    write(repo / "README.md", "edited by the user\n")
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert not result["ok"] and result["reason"] == "dirty" and result["files"] == ["README.md"]
    assert snapshot(repo) == before


def test_merge_would_overwrite_an_untracked_file(repo, home):
    spec_with_change(repo, home, name="feature.txt")
    write(repo / "feature.txt", "the user's own untracked file\n")
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert result["reason"] == "untracked" and result["files"] == ["feature.txt"]
    assert snapshot(repo) == before


def test_merge_when_another_branch_is_checked_out(repo, home):
    spec_with_change(repo, home)
    g(repo, "checkout", "-q", "-b", "experiment")
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert not result["ok"] and result["reason"] == "other-branch" and "experiment" in result["detail"]
    assert snapshot(repo) == before and count(repo, "main") == 1
    missing = ws.merge_branch(str(repo), "iwo/nope", "main", "Merge", AUTHOR)
    assert missing["reason"] == "missing-branch"


def test_done_command_placeholders_are_never_shell(repo, tmp_path):
    out = tmp_path / "argv.json"
    title = 'He said "hi" & it\'s $(touch pwned) `touch pwned2`; rm -rf /nothing {branch}'
    template = (f"{sys.executable} -c 'import json,sys; json.dump(sys.argv[1:], open(sys.argv[1], \"w\"))' "
                f"{out} --head {{branch}} --title {{title}} \"spec: {{spec_id}}!\" '{{a: .b}}'")
    result = ws.run_done_command(template, str(repo), "iwo/s1", "s1", title, timeout=30)
    assert result["ok"] and result["exit_code"] == 0, result
    assert json.loads(out.read_text()) == [str(out), "--head", "iwo/s1", "--title", title, "spec: s1!", "{a: .b}"]
    assert not (repo / "pwned").exists() and not (repo / "pwned2").exists()
    assert not list(tmp_path.rglob("pwned*"))


def test_done_command_output_failure_timeout(repo):
    shown = ws.run_done_command(["sh", "-c", 'echo "pr for $IWO_BRANCH ($IWO_TITLE)"; echo oops >&2; exit 3'],
                                str(repo), "iwo/s1", "s1", "A title", timeout=30)
    assert not shown["ok"] and shown["exit_code"] == 3
    assert "pr for iwo/s1 (A title)" in shown["output"] and "oops" in shown["output"]
    slow = ws.run_done_command("sleep 30", str(repo), "b", "s", "t", timeout=0.3)
    assert slow["timed_out"] and not slow["ok"] and slow["exit_code"] is None
    missing = ws.run_done_command("no-such-program-xyz {branch}", str(repo), "b", "s", "t")
    assert not missing["ok"] and "cannot run" in missing["output"]
    noisy = ws.run_done_command(["sh", "-c", "yes x | head -c 100000"], str(repo), "b", "s", "t")
    assert noisy["ok"] and len(noisy["output"]) < ws.MAX_OUTPUT + 100
    with pytest.raises(WorkspaceError, match="done_command"):
        ws.run_done_command("gh pr create --title 'unbalanced", str(repo), "b", "s", "t")
    with pytest.raises(WorkspaceError, match="IWO_TITLE"):
        ws.run_done_command("sh -c 'gh pr create --title {title}'", str(repo), "b", "s", "$(touch pwned)")
    assert not (repo / "pwned").exists()


def test_remove_worktree_and_branches(repo, home):
    made = make(repo, home, "s1")
    write(Path(made["path"]) / "uncommitted.txt", "x\n")
    assert ws.remove_worktree(str(repo), made["path"]) == {"path": made["path"], "removed": True}
    assert not Path(made["path"]).exists() and len(ws.list_worktrees(str(repo))) == 1
    assert ws.remove_worktree(str(repo), made["path"])["removed"] is False
    # half-removed: renamed aside, registration still there (killed between the two)
    made = make(repo, home, "s1")
    aside = home / "worktrees" / ".s1.removing"
    os.rename(made["path"], aside)
    assert ws.remove_worktree(str(repo), made["path"])["removed"]
    assert not aside.exists() and len(ws.list_worktrees(str(repo))) == 1
    tip = g(repo, "rev-parse", "iwo/s1")
    assert ws.delete_branch(str(repo), "iwo/s1") == {"branch": "iwo/s1", "deleted": True, "sha": tip}
    assert ws.delete_branch(str(repo), "iwo/s1")["deleted"] is False and branches(repo) == []
    held = make(repo, home, "s2")
    with pytest.raises(WorkspaceError, match="iwo/s2"):
        ws.delete_branch(str(repo), "iwo/s2")
    assert Path(held["path"]).exists()
    subprocess.run(["rm", "-rf", held["path"]], check=True)  # its directory deleted by hand
    assert ws.delete_branch(str(repo), "iwo/s2")["deleted"] and branches(repo) == []
    assert len(ws.list_worktrees(str(repo))) == 1


# --- several machines ---------------------------------------------------------------------------

def test_push_and_take_over_on_another_machine(repo, home, tmp_path):
    remote = tmp_path / "remote.git"
    g(tmp_path, "init", "-q", "--bare", str(remote))
    g(repo, "remote", "add", "origin", str(remote))
    g(repo, "push", "-q", "origin", "main")
    other = tmp_path / "machine2"
    g(tmp_path, "clone", "-q", str(remote), str(other))
    made = make(repo, home, "s1")
    write(Path(made["path"]) / "a.txt", "a\n")
    d1 = dispatch(made["path"], "s1", 1)
    pushed = ws.push_branch(str(repo), "origin", "iwo/s1")
    assert pushed["ok"] and g(remote, "rev-parse", "iwo/s1") == d1["commit"]
    assert ws.push_branch(str(repo), "origin", "iwo/s1")["ok"]  # again: nothing to do
    home2 = tmp_path / "home2"
    with pytest.raises(WorkspaceError, match="another machine"):
        ws.ensure_worktree(str(other), str(home2 / "worktrees" / "s1"), "iwo/s1", made["base"], head=d1["commit"])
    fetched = ws.fetch_branch(str(other), "origin", "iwo/s1")
    assert fetched == {"ok": True, "sha": d1["commit"], "reason": None, "detail": "fetched iwo/s1 from origin"}
    taken = ws.ensure_worktree(str(other), str(home2 / "worktrees" / "s1"), "iwo/s1", made["base"], head=d1["commit"])
    assert taken["head"] == d1["commit"] and (Path(taken["path"]) / "a.txt").exists()
    assert ws.fetch_branch(str(other), "origin", "iwo/nope")["reason"] == "missing"
    # the branches diverge: fetch refuses to throw local commits away, push is rejected
    write(Path(taken["path"]) / "b.txt", "b\n")
    dispatch(taken["path"], "s1", 2)
    write(Path(made["path"]) / "c.txt", "c\n")
    dispatch(made["path"], "s1", 2)
    assert ws.push_branch(str(repo), "origin", "iwo/s1")["ok"]
    mine = g(other, "rev-parse", "iwo/s1")
    diverged = ws.fetch_branch(str(other), "origin", "iwo/s1")
    assert not diverged["ok"] and g(other, "rev-parse", "iwo/s1") == mine
    rejected = ws.push_branch(str(other), "origin", "iwo/s1")
    assert not rejected["ok"] and "rejected" in rejected["detail"]


def test_dispatch_message_format():
    assert ws.dispatch_message(3, "tester", "All green\n\ndetails here") == "03-tester: All green\n\ndetails here"
    assert ws.dispatch_message(12, "docs", "") == "12-docs: (no summary)"
    assert ws.dispatch_tag("spec-a", 7) == "spec-a#07" and ws.spec_branch("x") == "iwo/x"


def test_recorded_head_ahead_of_the_local_branch_is_fast_forwarded(repo, home):
    made = make(repo, home, "s1")
    base = made["base"]
    # the spec's later head exists here (e.g. fetched by another name) but the branch lags
    g(repo, "branch", "elsewhere", base)
    g(repo, "worktree", "add", "-q", str(home / "scratch"), "elsewhere")
    write(home / "scratch" / "later.txt", "later\n")
    g(home / "scratch", "add", "-A")
    g(home / "scratch", "commit", "-q", "-m", "later work")
    later = g(home / "scratch", "rev-parse", "HEAD")
    again = ws.ensure_worktree(str(repo), made["path"], "iwo/s1", base, head=later)
    assert again["head"] == later and (Path(made["path"]) / "later.txt").exists()
    assert g(repo, "rev-parse", "iwo/s1") == later
    # not checked out: the ref itself is moved forward
    ws.remove_worktree(str(repo), made["path"])
    g(repo, "update-ref", "refs/heads/iwo/s1", base)
    third = ws.ensure_worktree(str(repo), made["path"], "iwo/s1", base, head=later)
    assert third["head"] == later and any("fast-forwarded" in line for line in third["repaired"])
    # a local branch with commits the recorded head lacks is never moved
    write(Path(made["path"]) / "mine.txt", "local\n")
    local = dispatch(made["path"], "s1", 2)["commit"]
    g(home / "scratch", "commit", "-q", "--allow-empty", "-m", "diverged")
    diverged = g(home / "scratch", "rev-parse", "HEAD")
    with pytest.raises(WorkspaceError, match="lacks the spec's head"):
        ws.ensure_worktree(str(repo), made["path"], "iwo/s1", base, head=diverged)
    assert g(repo, "rev-parse", "iwo/s1") == local


@pytest.mark.parametrize("lock", ["index.lock", "HEAD.lock", "refs/heads/main.lock"])
def test_merge_with_a_lock_in_the_checkout_touches_nothing(repo, home, lock):
    """A lock a killed git left (or a git running now): the merge never begins, the lock stays (never
    ours to remove), and nothing of a merge (MERGE_HEAD, ORIG_HEAD) is written."""
    spec_with_change(repo, home)
    path = repo / ".git" / lock
    path.write_text("")
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert not result["ok"] and result["reason"] == "locked" and lock.split("/")[-1] in result["detail"], result
    assert snapshot(repo) == before and path.exists() and count(repo, "main") == 1
    for name in ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE"):
        assert not (repo / ".git" / name).exists()
    path.unlink()
    assert ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)["ok"]


def test_merge_with_a_detached_head_touches_nothing(repo, home):
    spec_with_change(repo, home)
    g(repo, "checkout", "-q", "--detach", "HEAD")
    before = snapshot(repo)
    result = ws.merge_branch(str(repo), "iwo/s1", "main", "Merge", AUTHOR)
    assert not result["ok"] and result["reason"] == "other-branch" and "detached" in result["detail"], result
    assert snapshot(repo) == before and count(repo, "main") == 1
