"""Each spec in its own git worktree and branch, end to end: real git, the real daemon (killed with
SIGKILL where a test says so), the fake `claude` writing files in its cwd (tests/fake_claude.py,
entry keys "write" and "git_commit").

Every home's workdir is a fresh repository (branch main, one commit). The daemon and the CLI run
with a hostile global git config (signing on with a failing gpg, no identity guessed, merges
fast-forward only, untracked files hidden from status), so nothing depends on this machine's
~/.gitconfig and iwo-lite has to override what would break it. The test's own git commands
(`Work.git`) use the same config with an explicit identity.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEFAULT_ROLE_COUNTS, IwoHome, pid_alive, wait_for
import fake_claude

REAL_GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(REAL_GIT is None, reason="git is not installed")

AUTHOR = "Iwo Bot <iwo-bot@example.invalid>"
HOSTILE_GITCONFIG = ("[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n[user]\n\tuseConfigOnly = true\n"
                     "[merge]\n\tff = only\n[status]\n\tshowUntrackedFiles = no\n[init]\n\tdefaultBranch = main\n")


class Work:
    """The user's repository (the homes' workdir), seen through the test's own git."""

    def __init__(self, path: Path, env: dict):
        self.path = path
        self.env = env

    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([REAL_GIT, "-c", "user.name=Hand", "-c", "user.email=hand@example.invalid",
                               "-c", "commit.gpgsign=false", *args], cwd=self.path, env=self.env,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.rev("HEAD")

    def rev(self, rev: str) -> str:
        return self.git("rev-parse", "--verify", "-q", rev)

    def branches(self) -> list[str]:
        return self.git("for-each-ref", "--format=%(refname:short)", "refs/heads/iwo/").split()

    def commits(self, rng: str) -> list[dict]:
        """first-parent commits of `rng`, oldest first: sha, parents, subject, body, author, committer."""
        out = self.git("log", "--first-parent", "--reverse", "-z", "--format=%H%n%P%n%an <%ae>%n%cn <%ce>%n%s%n%b",
                       rng)
        commits = []
        for record in filter(None, out.split("\0")):
            sha, parents, author, committer, subject, *body = record.strip("\n").split("\n")
            commits.append({"sha": sha, "parents": parents.split(), "author": author, "committer": committer,
                            "subject": subject, "body": "\n".join(body)})
        return commits

    def show(self, rev: str, path: str) -> str | None:
        return self.git("show", f"{rev}:{path}", check=False) or None

    def worktrees(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.git("worktree", "list", "--porcelain").splitlines()
                if line.startswith("worktree ")]

    def snapshot(self) -> dict:
        """What a user sees of their checkout: HEAD, branch, status (untracked too), files, merge state."""
        files = {str(p.relative_to(self.path)): p.read_bytes() for p in sorted(self.path.rglob("*"))
                 if p.is_file() and ".git" not in p.relative_to(self.path).parts}
        return {"head": self.rev("HEAD"), "branch": self.git("symbolic-ref", "-q", "HEAD", check=False),
                "status": self.git("status", "--porcelain", "--untracked-files=all"), "files": files,
                "merge_head": (self.path / ".git" / "MERGE_HEAD").exists(),
                "stash": self.git("stash", "list")}


_MADE: list[IwoHome] = []


@pytest.fixture(autouse=True)
def _cleanup_homes():
    """Every home make_home made in a test: its daemons killed, its agents too, after the test."""
    yield
    while _MADE:
        _MADE.pop().cleanup()


def make_home(tmp_path: Path, name: str = "home", *, top: str = "", git: str = "", repo: bool = True,
              **configure) -> tuple[IwoHome, Work]:
    """A home whose workdir (<home>/work) is a new repository on main with one commit."""
    home = IwoHome(tmp_path / name)
    _MADE.append(home)
    gitconfig = home.root / "global.gitconfig"
    gitconfig.write_text(HOSTILE_GITCONFIG)
    home.env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1")
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
                "GIT_DIR", "GIT_WORK_TREE"):
        home.env.pop(key, None)
    configure_home(home, top=top, git=git, **configure)
    work = Work(home.root / "work", dict(home.env))
    if repo:
        work.git("init", "-q", "-b", "main")
        work.commit({"README.md": "# project\n", "src/app.py": "print('v1')\n"}, "first")
    return home, work


def configure_home(home: IwoHome, *, top: str = "", git: str = "", workdir: Path | None = None,
                   **configure) -> None:
    """IwoHome.configure plus [git] (author AUTHOR), top-level lines and another workdir."""
    home.configure(f'[git]\nauthor = "{AUTHOR}"\n{git}\n', **configure)
    config = home.root / "config.toml"
    text = config.read_text()
    if workdir is not None:
        text = text.replace(f'workdir = "{home.root / "work"}"', f'workdir = "{workdir}"', 1)
    config.write_text(top + "\n" + text)


def spec_text(title: str) -> str:
    return f"# {title}\nDo the {title} thing.\n"


def submit(home: IwoHome, spec_id: str, title: str | None = None) -> str:
    return home.submit(home.spec_file(f"{spec_id}.md", spec_text(title or spec_id)), spec_id=spec_id)


def same(a, b) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def log_lines(home: IwoHome, spec: str, event: str = "start") -> list[dict]:
    return [line for line in fake_claude.read_log(home.log) if line["event"] == event and line["spec"] == spec]


def wait_question(home: IwoHome, spec_id: str, needle: str, timeout: float = 60) -> dict:
    def ready():
        spec = home.spec(spec_id)
        return spec if spec["state"] == "waiting" and needle in (spec["question"] or "") else None
    return wait_for(ready, timeout, lambda: f"{spec_id} waiting on a question with {needle!r}; it is "
                    f"{home.spec(spec_id)['state']}: {home.spec(spec_id)['question']}\n{home.daemon_logs()}")


# --- 1. two specs in parallel, one repository ---------------------------------------------------

def test_two_specs_in_parallel_each_on_its_own_branch(tmp_path):
    home, work = make_home(tmp_path, max_concurrent=2)
    ids = ("alpha", "beta")
    home.scenario({"specs": {sid: {"roles": {"builder": [{
        "write": {"shared.txt": f"made by {sid}\n"}, "sleep": 1.5,
        "summary": f"write shared.txt for {sid}\nThe body line of {sid}."}]}} for sid in ids}})
    base = work.rev("HEAD")
    for sid in ids:
        submit(home, sid)
    before = work.snapshot()
    home.start()
    for sid in ids:
        home.wait_state(sid, "done")

    # they really ran at the same time: the two builders' runs overlap
    spans = {sid: (log_lines(home, sid)[1]["t"], log_lines(home, sid, "end")[1]["t"]) for sid in ids}
    assert [line["role"] for line in log_lines(home, "alpha")][1] == "builder"
    assert spans["alpha"][0] < spans["beta"][1] and spans["beta"][0] < spans["alpha"][1], spans
    # the user's checkout: not one byte, ref or status line changed
    assert work.snapshot() == before
    assert work.branches() == ["iwo/alpha", "iwo/beta"]
    assert [same(p, work.path) for p in work.worktrees()] == [True]  # keep: the worktrees are gone
    listed = {spec["id"]: spec for spec in home.specs()}
    for sid in ids:
        branch = f"iwo/{sid}"
        tip = work.rev(branch)
        # one commit: the builder's (the planner, reviewer, tester, deployer, docs changed nothing)
        (commit,) = work.commits(f"{base}..{branch}")
        assert commit["parents"] == [base]
        assert commit["subject"] == f"02-builder: write shared.txt for {sid}"
        assert f"The body line of {sid}." in commit["body"] and f"Iwo-Dispatch: {sid}#02" in commit["body"]
        assert commit["author"] == AUTHOR and commit["committer"] == AUTHOR
        assert work.git("diff", "--name-only", base, branch) == "shared.txt"
        assert work.show(branch, "shared.txt") == f"made by {sid}"
        # every role ran in the spec's own worktree
        assert all(same(line["cwd"], home.root / "worktrees" / sid) for line in log_lines(home, sid))
        assert len(log_lines(home, sid)) == 6
        assert not (home.root / "worktrees" / sid).exists()
        # status --json: the branch and its tip, in the list and for one spec
        spec = home.spec(sid)
        assert (spec["branch"], spec["head"]) == (branch, tip) == (listed[sid]["branch"], listed[sid]["head"])
        assert [step["commit_sha"] for step in spec["steps"]] == [None, tip, None, None, None, None]
        # status ID: the short sha on the builder's row, no commit on the others
        rows = [line for line in home.cli("status", sid, check=True).stdout.splitlines() if line.startswith("│ 0")]
        assert len(rows) == 6
        assert f"commit {tip[:8]}" in rows[1] and all("commit " not in row for row in rows[:1] + rows[2:])


# --- 2. kill -9 while git makes the worktree, and while it commits ------------------------------

GIT_WRAPPER = r"""#!/bin/sh
# git, slowed down once at one moment: MARKS/<what>.before sleeps before running git,
# MARKS/<what>.after runs git, then sleeps. <what>: worktree (`git worktree add`) or commit.
words=""; skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in -c) skip=1; continue;; esac
  words="$words $a"
done
case "$words" in
  " worktree add "*) what=worktree;;
  " commit "*) what=commit;;
  *) exec "@REAL@" "$@";;
esac
if mv "@MARKS@/$what.before" "@MARKS@/$what.taken" 2>/dev/null; then
  echo $$ > "@MARKS@/$what.sleeping"; sleep 60
fi
if mv "@MARKS@/$what.after" "@MARKS@/$what.taken" 2>/dev/null; then
  "@REAL@" "$@"; rc=$?
  echo $$ > "@MARKS@/$what.sleeping"; sleep 60; exit $rc
fi
exec "@REAL@" "$@"
"""


def slow_git(home: IwoHome) -> Path:
    """A `git` first on the daemon's PATH that sleeps at the moment a test marks (see GIT_WRAPPER)."""
    folder, marks = home.root / "slow-git", home.root / "marks"
    folder.mkdir()
    marks.mkdir()
    script = folder / "git"
    script.write_text(GIT_WRAPPER.replace("@REAL@", REAL_GIT).replace("@MARKS@", str(marks)))
    script.chmod(0o755)
    home.env["PATH"] = f"{folder}{os.pathsep}{home.env['PATH']}"
    return marks


def kill_when_sleeping(home: IwoHome, daemon, marks: Path, what: str) -> None:
    """Wait until git sleeps at `what`, then kill -9 the daemon and that git (its own session)."""
    sleeping = marks / f"{what}.sleeping"
    wait_for(lambda: sleeping.exists() and sleeping.read_text().strip(), 60,
             lambda: f"git never slept at {what}\n{home.daemon_logs()}")
    pid = int(sleeping.read_text())
    daemon.kill9()
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, "the slowed git to die")
    sleeping.unlink()


@pytest.mark.parametrize("when", ["before", "after"])
def test_kill9_while_making_the_worktree_and_while_committing(tmp_path, when):
    home, work = make_home(tmp_path, max_concurrent=1)
    marks = slow_git(home)
    (marks / f"worktree.{when}").touch()
    (marks / f"commit.{when}").touch()
    home.scenario({"roles": {"builder": [{"write": {"built.txt": "built\n"}, "summary": "build it"}]}})
    base = work.rev("HEAD")
    sid = submit(home, "slow")
    wt = home.root / "worktrees" / sid

    kill_when_sleeping(home, home.start(), marks, "worktree")
    assert home.invocations() == 0
    # "after": git made the worktree, the step that asked for it never recorded it
    assert (wt / ".git").exists() == (when == "after") and work.branches() == (["iwo/slow"] if when == "after" else [])

    kill_when_sleeping(home, home.start(), marks, "commit")
    assert home.role_counts(sid) == {"planner": 1, "builder": 1}
    # "after": the commit is made, the step never recorded it; "before": it is not made yet
    assert len(work.commits(f"{base}..iwo/slow")) == (1 if when == "after" else 0)

    home.start()
    home.wait_state(sid, "done")
    assert home.role_counts(sid) == DEFAULT_ROLE_COUNTS  # each role's agent ran once
    assert work.branches() == ["iwo/slow"]
    (commit,) = work.commits(f"{base}..iwo/slow")  # one commit for the builder's dispatch
    assert commit["subject"] == "02-builder: build it" and commit["author"] == AUTHOR
    assert work.show("iwo/slow", "built.txt") == "built"
    spec = home.spec(sid)
    assert spec["head"] == commit["sha"] and spec["steps"][1]["commit_sha"] == commit["sha"]
    assert [same(p, work.path) for p in work.worktrees()] == [True] and not wt.exists()
    assert not (home.root / "worktrees" / ".orphaned").exists()  # nothing had to be moved aside


# --- 3. the HEAD recorded at submit --------------------------------------------------------------

def test_branch_starts_from_the_commit_recorded_at_submit(tmp_path):
    home, work = make_home(tmp_path)
    home.scenario({"roles": {"builder": [{"write": {"feature.txt": "feature\n"}}]}})
    submitted = work.rev("HEAD")
    sid = submit(home, "recorded")
    later = work.commit({"later.txt": "after the submit\n"}, "a commit after the submit")
    home.start()
    home.wait_state(sid, "done")
    (commit,) = work.commits(f"{submitted}..iwo/recorded")
    assert commit["parents"] == [submitted]
    assert work.show("iwo/recorded", "later.txt") is None
    assert home.spec(sid)["steps"][0]["start_commit"] == submitted
    assert work.rev("HEAD") == later


# --- 4. fork from the reviewer -------------------------------------------------------------------

def test_fork_from_the_reviewer_starts_at_the_builders_commit(tmp_path):
    home, work = make_home(tmp_path)
    sid = "forked"
    home.scenario({"specs": {
        sid: {"roles": {"builder": [{"write": {"a.txt": "built\n"}, "summary": "build a"}],
                        "tester": [{"write": {"t.txt": "tested\n"}, "git_commit": "the tester's own commit"}]}},
        f"{sid}-fork1": {"roles": {"reviewer": [{"write": {"review.txt": "reviewed again\n"},
                                                 "summary": "review notes"}]}}}})
    base = work.rev("HEAD")
    submit(home, sid)
    home.start()
    home.wait_state(sid, "done")
    builder, tester = work.commits(f"{base}..iwo/{sid}")
    assert builder["subject"] == "02-builder: build a"
    # the tester committed by itself: no 04-tester commit of ours on top, and status shows its commit
    assert tester["subject"] == "the tester's own commit" and tester["author"].startswith("Fake Agent")
    (tester_end,) = [line for line in log_lines(home, sid, "end") if line["role"] == "tester"]
    assert tester_end["git_commit"] == tester["sha"]
    parent = home.spec(sid)
    assert [step["commit_sha"] for step in parent["steps"]] == [None, builder["sha"], None, tester["sha"], None, None]

    fork = home.cli("fork", sid, "--from", "reviewer", check=True).stdout.strip().splitlines()[-1]
    assert fork == f"{sid}-fork1"
    home.wait_state(fork, "done")
    # the fork's branch: the builder's commit, then the fork's reviewer's; never the old tester's
    first, review = work.commits(f"{base}..iwo/{fork}")
    assert first["sha"] == builder["sha"]
    assert review["parents"] == [builder["sha"]] and review["subject"] == "03-reviewer: review notes"
    assert work.show(f"iwo/{fork}", "t.txt") is None and work.show(f"iwo/{fork}", "review.txt") == "reviewed again"
    spec = home.spec(fork)
    assert spec["branch"] == f"iwo/{fork}" and spec["head"] == review["sha"]
    reviewer = next(step for step in spec["steps"] if step["step"] == 3)
    assert reviewer["role"] == "reviewer" and reviewer["start_commit"] == builder["sha"]
    # the reviewer (and what follows) ran again, in the fork's own worktree; planner and builder did not
    assert home.role_counts(fork) == {"reviewer": 1, "tester": 1, "deployer": 1, "docs": 1}
    assert all(same(line["cwd"], home.root / "worktrees" / fork) for line in log_lines(home, fork))
    assert work.rev(f"iwo/{sid}") == tester["sha"]  # the parent's branch is left as it was


# --- 5. git.on_done = "merge" ----------------------------------------------------------------------

def test_merge_clean_conflict_other_branch_and_dirty(tmp_path):
    home, work = make_home(tmp_path, git='on_done = "merge"')
    home.scenario({"specs": {
        "clean": {"roles": {"builder": [{"write": {"clean.txt": "clean\n"}, "summary": "add clean.txt"}]}},
        "clash": {"roles": {"builder": [{"write": {"README.md": "# project, by the spec\n"},
                                         "summary": "rewrite the README"}]}},
        "detached": {"roles": {"builder": [{"write": {"detached.txt": "x\n"}}]}}}})
    submitted = work.rev("HEAD")
    submit(home, "clean", "Clean merge")
    submit(home, "clash", "Clashing merge")
    work.git("checkout", "-q", "--detach")  # submitted on no branch: nothing to merge into
    submit(home, "detached")
    work.git("checkout", "-q", "main")
    human = work.commit({"README.md": "# project, by the human\n"}, "the human edits the README")
    home.start()

    # clean: a merge commit on main (two parents), the branch kept, the worktree gone
    home.wait_state("clean", "done")
    spec_tip = work.rev("iwo/clean")
    merges = [c for c in work.commits("main") if len(c["parents"]) == 2 and c["parents"][1] == spec_tip]
    assert len(merges) == 1 and merges[0]["author"] == AUTHOR
    assert merges[0]["subject"] == "Merge iwo/clean: Clean merge" and "Iwo-Merge: iwo/clean" in merges[0]["body"]
    assert (work.path / "clean.txt").read_text() == "clean\n"
    assert not (home.root / "worktrees" / "clean").exists()

    # detached: done without a merge or a gate, its branch kept (the daemon's log says why)
    home.wait_state("detached", "done")
    assert work.git("merge-base", "--is-ancestor", "iwo/detached", "main", check=False) == ""
    assert work.show("main", "detached.txt") is None and work.show("iwo/detached", "detached.txt") == "x"
    assert home.spec("detached")["gates"] == [] and "not merged: the workdir was on no branch" in home.daemon_logs()

    # clash: the README conflicts; the gate (reason merge) names the file; the checkout is left clean
    spec = wait_question(home, "clash", "README.md")
    assert spec["gate_reason"] == "merge" and "conflict" in spec["question"]
    checkout = work.snapshot()
    assert checkout["status"] == "" and not checkout["merge_head"] and checkout["branch"] == "refs/heads/main"
    assert (home.root / "worktrees" / "clash").exists()  # kept while the merge is not done

    # the human undoes their edit, but leaves another branch checked out: approve -> a new gate says so
    work.git("revert", "--no-edit", human)
    work.git("checkout", "-q", "-b", "topic")
    home.cli("approve", "clash", check=True)
    spec = wait_question(home, "clash", "topic")
    assert spec["gate_reason"] == "merge" and "checked out" in spec["question"]
    assert work.snapshot()["branch"] == "refs/heads/topic"

    # back on main, with an uncommitted change to a tracked file: approve -> a gate names the cause
    work.git("checkout", "-q", "main")
    (work.path / "src" / "app.py").write_text("print('edited, not committed')\n")
    home.cli("approve", "clash", check=True)
    spec = wait_question(home, "clash", "uncommitted changes")
    assert "src/app.py" in spec["question"] and spec["gate_reason"] == "merge"
    assert (work.path / "src" / "app.py").read_text() == "print('edited, not committed')\n"

    # clean again: approve -> merged, done
    work.git("checkout", "--", "src/app.py")
    home.cli("approve", "clash", check=True)
    home.wait_state("clash", "done")
    head = work.commits("main")[-1]
    assert len(head["parents"]) == 2 and head["parents"][1] == work.rev("iwo/clash")
    assert (work.path / "README.md").read_text() == "# project, by the spec\n"
    assert work.snapshot()["status"] == ""
    assert work.branches() == ["iwo/clash", "iwo/clean", "iwo/detached"]
    assert not (home.root / "worktrees" / "clash").exists()
    assert work.git("merge-base", "iwo/clash", "iwo/clean") == submitted
    assert [g["reason"] for g in home.spec("clash")["gates"]] == ["merge", "merge", "merge"]


# --- 6. git.on_done = "command" --------------------------------------------------------------------

def test_done_command_with_placeholders_failure_gate_and_retry(tmp_path):
    home, work = make_home(tmp_path)
    script = home.root / "make-pr.sh"
    script.write_text('#!/bin/sh\nprintf "%s|%s|%s|%s\\n" "$1" "$2" "$3" "$IWO_BRANCH" >> ../pr-args.txt\n'
                      'if [ -e ../forge-down ]; then echo "cannot reach the forge"; exit 1; fi\n'
                      'echo "made PR for $IWO_BRANCH" > ../pr.txt\necho "opened a pull request"\n')
    configure_home(home, git=f'on_done = "command"\ndone_command = "sh {script} {{branch}} {{spec_id}} {{title}}"')
    (home.root / "forge-down").touch()
    sid = submit(home, "pr", "Open a pull request")
    home.start()
    spec = wait_question(home, sid, "git.done_command failed")
    assert spec["gate_reason"] == "merge" and "exit 1" in spec["question"]
    assert "cannot reach the forge" in spec["question"]
    # the placeholders are words of their own: the title with its spaces is one argument
    assert (home.root / "pr-args.txt").read_text() == "iwo/pr|pr|Open a pull request|iwo/pr\n"
    assert not (home.root / "pr.txt").exists()

    (home.root / "forge-down").unlink()
    home.cli("approve", sid, check=True)
    home.wait_state(sid, "done")
    assert (home.root / "pr.txt").read_text() == "made PR for iwo/pr\n"
    assert (home.root / "pr-args.txt").read_text().count("\n") == 2  # run once more, not again after
    # the output is recorded: the finish_workspace steps' outputs, readable with SQL
    rows = home.query("SELECT output FROM operation_outputs WHERE workflow_uuid = ? AND function_name = "
                      "'finish_workspace' ORDER BY function_id", (sid,))
    outputs = [json.loads(row[0])["done_command"] for row in rows]
    assert [o["exit_code"] for o in outputs] == [1, 0]
    assert "cannot reach the forge" in outputs[0]["output"] and "opened a pull request" in outputs[1]["output"]
    assert work.branches() == ["iwo/pr"] and not (home.root / "worktrees" / sid).exists()


# --- 7. cancel, rejected, clean ---------------------------------------------------------------------

def test_cancel_and_reject_keep_the_branch_and_clean_removes_only_finished(tmp_path):
    home, work = make_home(tmp_path, max_concurrent=4)
    built = {"builder": [{"write": {"work.txt": "work\n"}}]}
    home.scenario({"specs": {
        "cancelled": {"roles": {**built, "tester": [{"mode": "hang"}]}},
        "rejected": {"roles": {**built, "reviewer": [{"verdict": "blocker", "question": "Ship it?"}]}},
        "waiting": {"roles": {**built, "reviewer": [{"verdict": "blocker", "question": "Really?"}]}},
        "finished": {"roles": built}}})
    for sid in ("cancelled", "rejected", "waiting", "finished"):
        submit(home, sid)
    stranger = work.git("branch", "iwo/not-a-spec-here")  # e.g. another home's spec: never touched
    assert stranger == ""
    home.start()
    worktrees = home.root / "worktrees"
    home.wait_state("finished", "done")
    wait_for(lambda: home.started("tester", "cancelled"), 60, "the tester of `cancelled` to start")
    home.wait_state("rejected", "waiting")
    home.wait_state("waiting", "waiting")
    assert (worktrees / "cancelled").is_dir() and (worktrees / "rejected").is_dir()

    home.cli("cancel", "cancelled", check=True)
    home.cli("reject", "rejected", check=True)
    home.wait_state("rejected", "rejected")
    wait_for(lambda: not (worktrees / "rejected").exists(), 30, "the worktree of rejected to go")
    assert not any(p.endswith("/worktrees/rejected") for p in work.worktrees())
    for sid in ("cancelled", "rejected"):
        assert work.show(f"iwo/{sid}", "work.txt") == "work"  # the branch stays, with the builder's commit
    assert home.state("cancelled") == "cancelled"
    assert (worktrees / "cancelled" / "work.txt").exists()  # a cancelled spec may be resumed: `clean` removes it

    # a finished spec's worktree left behind (e.g. by a spec that failed): made again by hand
    work.git("worktree", "add", "-q", str(worktrees / "finished"), "iwo/finished")
    (worktrees / "finished" / "scratch.txt").write_text("left over\n")
    assert (worktrees / "waiting").is_dir()

    out = home.cli("clean")
    assert out.returncode == 0, out.stderr
    assert f"removed worktree {worktrees / 'finished'} (spec finished, done)" in out.stdout
    assert f"removed worktree {worktrees / 'cancelled'} (spec cancelled, cancelled)" in out.stdout
    assert "waiting (waiting)" in out.stdout and "deleted branch" not in out.stdout
    assert not (worktrees / "finished").exists() and (worktrees / "waiting" / "work.txt").exists()
    assert sorted(os.path.basename(p) for p in work.worktrees()[1:]) == ["waiting"]
    assert work.branches() == ["iwo/cancelled", "iwo/finished", "iwo/not-a-spec-here", "iwo/rejected", "iwo/waiting"]

    bad = home.cli("clean", "waiting")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "waiting: is waiting" in bad.stderr
    bad = home.cli("clean", "no-such-spec", "--branches")
    assert bad.returncode == 2 and "no-such-spec: no such spec" in bad.stderr
    assert work.branches() == ["iwo/cancelled", "iwo/finished", "iwo/not-a-spec-here", "iwo/rejected", "iwo/waiting"]

    kept = home.cli("clean", "--branches")  # each holds the builder's commit, merged nowhere: kept
    assert kept.returncode == 0 and "not merged" in kept.stdout and "deleted branch" not in kept.stdout, kept.stdout
    assert work.branches() == ["iwo/cancelled", "iwo/finished", "iwo/not-a-spec-here", "iwo/rejected", "iwo/waiting"]
    out = home.cli("clean", "--branches", "--force")
    assert out.returncode == 0, out.stderr
    deleted = sorted(line.split()[2] for line in out.stdout.splitlines() if line.startswith("deleted branch"))
    assert deleted == ["iwo/cancelled", "iwo/finished", "iwo/rejected"]
    assert work.branches() == ["iwo/not-a-spec-here", "iwo/waiting"]
    assert (worktrees / "waiting" / "work.txt").exists()
    again = home.cli("clean", "--branches", "--force")
    assert again.returncode == 0 and "nothing to clean" in again.stdout
    # the waiting spec is unharmed: approve it and it finishes on its branch
    home.cli("approve", "waiting", check=True)
    home.wait_state("waiting", "done")
    assert work.show("iwo/waiting", "work.txt") == "work"


# --- 8. a workdir that is not a repository ----------------------------------------------------------

def test_not_a_repository_is_shared_by_default_and_an_error_when_worktree_is_asked(tmp_path):
    home, work = make_home(tmp_path, repo=False)
    sid = submit(home, "plain")
    daemon = home.start()
    home.wait_state(sid, "done")
    spec = home.spec(sid)
    assert spec["branch"] is None and spec["head"] is None
    assert all(same(line["cwd"], work.path) for line in log_lines(home, sid))
    assert not (home.root / "worktrees").exists() or not any((home.root / "worktrees").iterdir())
    daemon.kill9()

    configure_home(home, top='workspace = "worktree"')
    proc = subprocess.run([sys.executable, "-m", "iwo_lite", "run"], env=home.env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "workspace" in lines[0] and str(work.path) in lines[0], proc.stderr


# --- 9. doctor ---------------------------------------------------------------------------------------

def doctor(home: IwoHome, env: dict | None = None) -> tuple[int, list[str]]:
    env = dict(env or home.env, COLUMNS="2000")  # one check, one line
    proc = subprocess.run([sys.executable, "-m", "iwo_lite", "doctor"], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout.splitlines()


def test_doctor_checks_git_the_repository_and_the_worktrees(tmp_path):
    home, work = make_home(tmp_path)
    code, lines = doctor(home)
    ok = [line for line in lines if line.startswith("✓")]
    assert any(line.startswith("✓ git: ") for line in ok), lines
    assert any("workspace: worktree" in line and str(work.path) in line for line in ok), lines
    assert any(line.startswith(f"✓ worktrees: {home.root / 'worktrees'}") for line in ok), lines
    assert code == 0, lines
    assert not (home.root / "worktrees").exists() and [same(p, work.path) for p in work.worktrees()] == [True]

    # git missing: PATH without git
    nogit = tmp_path / "nogit"
    nogit.mkdir()
    code, lines = doctor(home, dict(home.env, PATH=str(nogit)))
    bad = [line for line in lines if line.startswith("✗")]
    assert code == 1 and len(bad) == 1 and "git: not installed" in bad[0] and "fix: install git" in bad[0], lines

    # worktrees cannot be made: the worktrees directory is a file
    (home.root / "worktrees").write_text("not a directory\n")
    code, lines = doctor(home)
    bad = [line for line in lines if line.startswith("✗")]
    assert code == 1 and len(bad) == 1 and "cannot make one" in bad[0] and "fix:" in bad[0], lines
    (home.root / "worktrees").unlink()

    # the home inside the workdir (and not ignored there)
    inside, _ = make_home(work.path / "nested", name="home", repo=False)
    configure_home(inside, workdir=work.path)
    code, lines = doctor(inside)
    bad = [line for line in lines if line.startswith("✗")]
    assert code == 1 and len(bad) == 1 and "is inside the repository" in bad[0] and "fix:" in bad[0], lines
    (work.path / ".gitignore").write_text("nested/\n")
    code, lines = doctor(inside)
    assert code == 0, lines

    # workspace = "worktree" with a workdir that is not a repository
    plain, _ = make_home(tmp_path, name="plain", repo=False, top='workspace = "worktree"')
    code, lines = doctor(plain)
    bad = [line for line in lines if line.startswith("✗")]
    assert code == 1 and len(bad) == 1 and 'workspace = "worktree"' in bad[0] and "not a git repository" in bad[0]
    assert str(plain.root / "work") in bad[0] and "fix:" in bad[0], lines
    # ... and unset: shared, fine
    configure_home(plain)
    code, lines = doctor(plain)
    assert code == 0 and any("workspace: shared" in line for line in lines), lines


# --- several workers (Postgres): a spec taken over by a worker on "another machine" -----------------

@pytest.mark.parametrize("remote", [True, False], ids=["with-remote", "without-remote"])
def test_takeover_fetches_the_branch_from_the_remote_or_asks(tmp_path, postgres_url, remote):
    """Worker 1 dies (kill -9) with a spec at a gate after its builder committed; its machine is gone
    (its workdir moved away). Worker 2, with its own clone, continues the branch from git.remote; without
    a remote the spec asks (a gate, reason agent_failed) instead of failing, and approve retries."""
    origin = tmp_path / "origin.git"
    seed, _ = make_home(tmp_path, name="seed")
    seed_work = Work(seed.root / "work", seed.env)
    seed_work.git("clone", "-q", "--bare", str(seed_work.path), str(origin))
    homes, works = [], []
    for number in (1, 2):
        home = IwoHome(tmp_path / f"worker-{number}", database_url=postgres_url, executor_id=f"worker-{number}",
                       like=homes[0] if homes else None)
        home.env.update({key: seed.env[key] for key in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")})
        configure_home(home, top='worker_timeout = "3s"\n', git='remote = "origin"' if remote else "")
        home.root.joinpath("work").rmdir()
        work = Work(home.root / "work", home.env)
        subprocess.run([REAL_GIT, "clone", "-q", str(origin), str(work.path)], env=home.env, check=True,
                       capture_output=True)
        homes.append(home)
        works.append(work)
    first, second = homes
    try:
        first.scenario({"roles": {"builder": [{"write": {"b.txt": "built on worker 1\n"}, "summary": "build"}],
                                  "reviewer": [{"verdict": "blocker", "question": "Go on?"}],
                                  "tester": [{"write": {"t.txt": "tested on worker 2\n"}, "summary": "test"}]}})
        base = works[0].rev("HEAD")
        sid = submit(first, "moved")
        doomed = first.start()
        first.wait_state(sid, "waiting")
        builder_commit = works[0].rev("iwo/moved")
        doomed.kill9()
        works[0].path.rename(tmp_path / "worker-1-gone")  # its machine is gone
        second.start()
        second.cli("approve", sid, check=True)
        if remote:
            second.wait_state(sid, "done", timeout=90)
            assert f"{sid}: fetched iwo/moved from origin to continue it here" in second.daemon_logs()
        else:
            spec = wait_question(second, sid, "git.remote is not set", timeout=90)
            assert spec["gate_reason"] == "agent_failed" and "iwo/moved" in spec["question"]
            assert second.role_counts(sid).get("tester") is None
            # the human brings the branch over by hand, then approves: the tester runs
            works[1].git("fetch", "-q", str(tmp_path / "worker-1-gone"), "iwo/moved:iwo/moved")
            second.cli("approve", sid, check=True)
            second.wait_state(sid, "done", timeout=90)
        assert second.role_counts(sid) == DEFAULT_ROLE_COUNTS
        first_commit, tester = works[1].commits(f"{base}..iwo/moved")
        assert first_commit["sha"] == builder_commit and tester["subject"] == "04-tester: test"
        assert works[1].show("iwo/moved", "t.txt") == "tested on worker 2"
        (tester_start,) = [line for line in log_lines(second, sid) if line["role"] == "tester"]
        assert same(tester_start["cwd"], second.root / "worktrees" / sid)
        pushed = subprocess.run([REAL_GIT, "rev-parse", "-q", "--verify", "refs/heads/iwo/moved"], cwd=origin,
                                capture_output=True, text=True).stdout.strip()
        assert pushed == (tester["sha"] if remote else "")
    finally:
        for home in homes:
            home.cleanup()
        seed.cleanup()


def test_a_stale_lock_in_the_users_checkout_asks_and_leaves_it_exactly_as_it_was(tmp_path):
    """on_done = "merge" with an index.lock (or HEAD.lock) left in the user's repository: the old
    merge wrote MERGE_HEAD, failed, failed to abort, and ended the spec failed after four blind
    retries. Now nothing is touched and a merge gate names the lock; once it is gone, approve merges."""
    home, work = make_home(tmp_path, git='on_done = "merge"')
    home.scenario({"specs": {f"locked-{name}": {"roles": {"builder": [{"write": {f"{name}.txt": "new\n"}}]}}
                             for name in ("index", "head")}})
    gitdir = work.path / ".git"
    for lock in ("index.lock", "HEAD.lock"):
        spec_id = f"locked-{lock.split('.')[0].lower()}"
        (gitdir / lock).write_text("")  # a git killed mid-command left it
        before = work.snapshot()
        submit(home, spec_id)
        if not home.daemons:
            home.start()
        spec = wait_question(home, spec_id, lock)
        assert spec["gate_reason"] == "merge" and spec["state"] == "waiting", spec
        assert work.snapshot() == before and not (gitdir / "MERGE_HEAD").exists() and (gitdir / lock).exists()
        (gitdir / lock).unlink()
        home.cli("approve", spec_id, check=True)
        assert home.wait_state(spec_id, "done", "failed") == "done"
        assert work.show("main", f"{spec_id.split('-')[1]}.txt") == "new"


def test_an_agent_that_breaks_its_worktree_opens_a_gate_and_approve_mends_it(tmp_path):
    """The agent deletes its worktree's .git, or switches the worktree to another branch: the old
    loop retried the commit four times blindly and ended the spec failed. Now a gate says what is
    wrong; approve makes the worktree again from the branch and the spec goes on."""
    home, work = make_home(tmp_path)
    home.scenario({"specs": {
        "broke": {"roles": {"builder": [{"write": {"a.txt": "a\n"}, "run": "rm -rf .git"}]}},
        "switched": {"roles": {"builder": [{"write": {"b.txt": "b\n"}, "run": "git checkout -q -b elsewhere"}]}},
        "deleted": {"roles": {"builder": [{"write": {"c.txt": "c\n"}, "run": 'cd / && rm -rf "$OLDPWD"'}]}}}})
    for spec_id in ("broke", "switched", "deleted"):
        submit(home, spec_id)
    home.start()
    for spec_id in ("broke", "switched", "deleted"):
        spec = wait_question(home, spec_id, "cannot be committed")
        assert spec["gate_reason"] == "agent_failed" and f"iwo/{spec_id}" in spec["question"], spec
        home.cli("approve", spec_id, check=True)
        wait_for(lambda: home.state(spec_id) in ("done", "failed") or len(home.spec(spec_id)["gates"]) > 1, 60)
        assert home.state(spec_id) == "done", [g["question"] for g in home.spec(spec_id)["gates"]]
    assert work.snapshot()["status"] == ""  # the user's checkout untouched throughout


def test_a_branch_this_home_did_not_make_is_never_built_on(tmp_path):
    """An `iwo/<id>` branch left by another home (or a deleted one): the old submit went on and the
    spec continued on that branch's old commits. Now submit (and the inbox) refuse in one line."""
    home, work = make_home(tmp_path)
    work.git("branch", "iwo/reused")
    old_tip = work.rev("iwo/reused")
    spec = home.spec_file("reused.md", spec_text("reused"))
    out = home.cli("submit", str(spec), "--id", "reused")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "iwo/reused already exists" in out.stderr and "did not" in out.stderr
    assert home.state("reused") is None and work.rev("iwo/reused") == old_tip
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    from iwo_lite.intake import derive_id

    dropped_id = derive_id(Path("dropped.md"), spec_text("dropped"))
    work.git("branch", f"iwo/{dropped_id}")
    (home.root / "inbox" / "dropped.md").write_text(spec_text("dropped"))
    why = home.root / "inbox" / "rejected" / "dropped.md.why"
    wait_for(why.exists, 30, "the inbox to refuse dropped.md")
    assert f"iwo/{dropped_id} already exists" in why.read_text() and home.state(dropped_id) is None
    # the same id submitted twice is still "nothing new", once this home has made its branch
    ok = submit(home, "mine")
    home.wait_state(ok, "done")
    again = home.cli("submit", str(home.spec_file("mine.md", spec_text("mine"))), "--id", "mine")
    assert again.returncode == 0, again.stderr


def test_a_branch_made_elsewhere_after_submit_is_asked_about_before_any_agent_runs(tmp_path):
    """The same spec queued in two homes (or one whose branch another home makes meanwhile): the branch
    was free at submit, but exists when the daemon gets to it. The old loop built on it silently. Now
    the spec waits on an agent_failed gate naming the branch before any dispatch; approve builds on
    it (recorded as this spec's from then on); a spec whose branch was deleted meanwhile starts afresh."""
    home, work = make_home(tmp_path)
    home.scenario({"specs": {name: {"roles": {"builder": [{"write": {f"{name}.txt": "mine\n"}}]}}
                             for name in ("raced", "freed")}})
    for spec_id in ("raced", "freed"):
        submit(home, spec_id)
        work.git("checkout", "-q", "-b", f"iwo/{spec_id}")
        work.commit({f"{spec_id}-theirs.txt": "theirs\n"}, f"another home's work on {spec_id}")
        work.git("checkout", "-q", "main")
    theirs = work.rev("iwo/raced")
    home.start()
    for spec_id in ("raced", "freed"):
        spec = wait_question(home, spec_id, "this home did not make it")
        assert spec["gate_reason"] == "agent_failed" and f"iwo/{spec_id}" in spec["question"], spec
        assert not log_lines(home, spec_id), "an agent ran on a branch this home did not make"
    assert work.rev("iwo/raced") == theirs and work.snapshot()["status"] == ""
    home.cli("approve", "raced", check=True)
    work.git("branch", "-D", "iwo/freed")
    home.cli("approve", "freed", check=True)
    for spec_id in ("raced", "freed"):
        assert home.wait_state(spec_id, "done", "failed") == "done", home.daemon_logs()
        assert len(home.spec(spec_id)["gates"]) == 1
    assert work.git("merge-base", "--is-ancestor", theirs, "iwo/raced", check=False) == ""
    assert work.show("iwo/raced", "raced-theirs.txt") == "theirs" and work.show("iwo/raced", "raced.txt") == "mine"
    assert work.show("iwo/freed", "freed-theirs.txt") is None and work.show("iwo/freed", "freed.txt") == "mine"
