"""Two commands on one spec at the same instant, with the daemon up and down (issue: races).

Each race fires two real `iwo-lite` processes together (threads start them at one barrier) on a
spec in a state where both could act. Every race must end with each command either done (exit 0)
or refused with one line (exit 2) — never exit 1, never an exception's name in the output — and
the spec coherent: its row and its DBOS workflow agree, and no role ran twice.

IWO_RACE_ROUNDS (default 2) repeats each race; run e.g. IWO_RACE_ROUNDS=20 by hand.
Also here: `resume` makes a removed worktree again from the spec's branch (and refuses in one line
when the branch is gone), and `cancel` keeps the worktree (only `clean` removes it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import fake_claude
from conftest import IwoHome, wait_for
from test_worktrees import make_home

ROUNDS = int(os.environ.get("IWO_RACE_ROUNDS", "2"))
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback")
DBOS_STATUS = {"cancelled": {"CANCELLED"}, "done": {"SUCCESS"}, "rejected": {"SUCCESS"}, "failed": {"ERROR"},
               "waiting": {"PENDING", "ENQUEUED"}, "running": {"PENDING", "ENQUEUED"},
               "queued": {"PENDING", "ENQUEUED"}}


def together(home: IwoHome, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Run the CLI commands at the same instant (each its own process); their results in order."""
    barrier = threading.Barrier(len(commands))
    results: list = [None] * len(commands)

    def one(index: int, args: tuple[str, ...]) -> None:
        barrier.wait()
        results[index] = subprocess.run([sys.executable, "-m", "iwo_lite", *args], env=home.env,
                                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    threads = [threading.Thread(target=one, args=(i, args)) for i, args in enumerate(commands)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def check_outcomes(results: list[subprocess.CompletedProcess], commands) -> None:
    for args, result in zip(commands, results):
        shown = f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode in (0, 2), shown
        assert not EXCEPTION_NAME.search(result.stdout + result.stderr), shown
        if result.returncode == 2:
            assert result.stderr.count("\n") == 1, shown


def workflow_status(home: IwoHome, spec_id: str) -> str | None:
    rows = home.query("SELECT status FROM workflow_status WHERE workflow_uuid = ?", (spec_id,))
    return rows[0][0] if rows else None


def coherent(home: IwoHome, spec_id: str) -> str:
    """The spec's row and its workflow agree once things settle; returns the state."""
    def settled():
        state = home.state(spec_id)
        return state if workflow_status(home, spec_id) in DBOS_STATUS[state] else None
    return wait_for(settled, 60, lambda: f"{spec_id}: row {home.state(spec_id)}, workflow "
                                         f"{workflow_status(home, spec_id)}\n{home.daemon_logs()}")


def no_role_twice(home: IwoHome, spec_id: str, revised: bool = False) -> None:
    """No dispatch's agent started twice (its first attempt), and each role ran once — or, after a
    revise, builder, reviewer and tester at most twice (the revise sends the spec back)."""
    starts = [(line["role"], line["n"]) for line in fake_claude.read_log(home.log)
              if line["event"] == "start" and line["spec"] == spec_id and line["attempt"] in (1, None)]
    assert len(starts) == len(set(starts)), starts
    again = ("builder", "reviewer", "tester") if revised else ()
    counts = home.role_counts(spec_id)
    assert all(n <= (2 if role in again else 1) for role, n in counts.items()), counts


def gated_home(tmp_path: Path, spec_ids: list[str]) -> IwoHome:
    """Specs waiting at a tester blocker (the daemon running)."""
    home = IwoHome(tmp_path / "home")
    home.scenario({"roles": {"tester": [{"verdict": "blocker", "question": "Ship it?"}]}})
    for spec_id in spec_ids:
        home.submit(home.spec_file(f"{spec_id}.md", f"# {spec_id}\nbody\n"), spec_id)
    home.start()
    for spec_id in spec_ids:
        home.wait_state(spec_id, "waiting")
    return home


# the pairs fired on a spec waiting at its gate
ON_A_GATE = [
    ("cancel", "approve"), ("cancel", "cancel"), ("approve", "reject"), ("revise", "cancel"),
    ("approve", "approve"), ("fork", "cancel"), ("fork", "fork"), ("resume", "cancel"),
]
ARGS = {"cancel": ("cancel",), "approve": ("approve", "-m", "ok"), "reject": ("reject",),
        "revise": ("revise", "-m", "again"), "resume": ("resume",), "fork": ("fork", "--from", "reviewer"),
        "clean": ("clean",)}


def command(name: str, spec_id: str) -> tuple[str, ...]:
    args = ARGS[name]
    return (args[0], spec_id, *args[1:]) if name != "clean" else ("clean", spec_id)


@pytest.mark.parametrize("daemon", ["up", "down"])
def test_two_commands_at_once_on_a_waiting_spec(tmp_path, daemon):
    ids = [f"{a}-{b}-{r}" for r in range(ROUNDS) for a, b in ON_A_GATE]
    home = gated_home(tmp_path, ids)
    try:
        if daemon == "down":
            home.daemons[-1].kill9()
        for spec_id in ids:
            first, second = spec_id.split("-")[:2]
            commands = [command(first, spec_id), command(second, spec_id)]
            check_outcomes(together(home, *commands), commands)
        if daemon == "down":
            home.start()
        for spec_id in ids:
            state = coherent(home, spec_id)
            if state == "waiting":  # an answer waits for the daemon, or nobody's took: answering must still work
                answered = home.cli("approve", spec_id)
                assert answered.returncode == 0 or ("already answered" in answered.stderr
                                                    or "not waiting" in answered.stderr), answered.stderr
                home.wait_state(spec_id, "done", "rejected")
            elif state in ("queued", "running"):
                home.wait_state(spec_id, "done", "waiting", "rejected")
            no_role_twice(home, spec_id, revised="revise" in spec_id)
        forks = [row[0] for row in home.query("SELECT id FROM iwo_specs WHERE parent_id IS NOT NULL")]
        assert len(forks) == len(set(forks))
        for fork_id in forks:
            assert workflow_status(home, fork_id) is not None, fork_id
    finally:
        home.cleanup()


def test_forks_at_the_same_instant_each_get_their_own_id(tmp_path):
    """Four forks of one spec at once, daemon down: each exits 0 with a new id (the old code picked
    the same -forkN twice and one fork died with an IntegrityError)."""
    home = gated_home(tmp_path, ["parent"])
    try:
        home.daemons[-1].kill9()
        made: list[str] = []
        for _ in range(ROUNDS + 1):
            commands = [command("fork", "parent")] * 4
            results = together(home, *commands)
            check_outcomes(results, commands)
            assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
            made += [r.stdout.strip().splitlines()[-1] for r in results]
        assert len(made) == len(set(made)) == 4 * (ROUNDS + 1)
        assert all(workflow_status(home, fork_id) == "ENQUEUED" for fork_id in made)
    finally:
        home.cleanup()


def test_resume_and_clean_at_once_leave_a_spec_that_finishes(tmp_path):
    """A cancelled spec in worktree mode: `resume` and `clean` together, then `resume` and
    `cancel`; whichever comes first, the spec resumes with its worktree made again or stays
    cancelled — it never fails for want of its worktree."""
    home, work = make_home(tmp_path, top='workspace = "worktree"')
    home.scenario({"roles": {"tester": [{"verdict": "blocker", "question": "Ship it?"}],
                             "builder": [{"write": {"feature.txt": "built\n"}}]}})
    ids = [f"rc-{r}" for r in range(ROUNDS)]
    try:
        for spec_id in ids:
            home.submit(home.spec_file(f"{spec_id}.md", f"# {spec_id}\nbody\n"), spec_id)
        home.start()
        for spec_id in ids:
            home.wait_state(spec_id, "waiting")
            home.cli("cancel", spec_id, check=True)
            commands = [command("resume", spec_id), command("clean", spec_id)]
            check_outcomes(together(home, *commands), commands)
            if home.state(spec_id) == "cancelled":
                home.cli("resume", spec_id, check=True)
            home.wait_state(spec_id, "waiting")
            home.cli("approve", spec_id, check=True)
            assert home.wait_state(spec_id, "done", "failed") == "done", home.spec(spec_id)
            assert work.show(f"iwo/{spec_id}", "feature.txt").strip() == "built"
            no_role_twice(home, spec_id)
    finally:
        home.cleanup()


def _failed_after_builder(tmp_path, spec_id: str):
    """A worktree spec whose builder committed and whose tester's handoff cannot be written
    (a directory stands at its path): it ends `failed` at the tester's dispatch."""
    home, work = make_home(tmp_path, top='workspace = "worktree"', retries=0)
    home.scenario({"roles": {"builder": [{"write": {"feature.txt": "built\n"}}]}})
    handoffs = home.root / "specs" / spec_id / "handoffs"
    (handoffs / "04-tester.md").mkdir(parents=True)
    home.submit(home.spec_file(f"{spec_id}.md", f"# {spec_id}\nbody\n"), spec_id)
    home.start()
    home.wait_state(spec_id, "failed", timeout=90)
    return home, work, handoffs


def test_resume_after_clean_makes_the_worktree_again_from_the_branch(tmp_path):
    home, work, handoffs = _failed_after_builder(tmp_path, "wt")
    try:
        assert work.show("iwo/wt", "feature.txt").strip() == "built"
        (handoffs / "04-tester.md").rmdir()
        home.cli("clean", "wt", check=True)
        assert not home.root.joinpath("worktrees", "wt", ".git").exists()
        out = home.cli("resume", "wt", check=True)
        assert "made again from branch iwo/wt" in out.stdout
        assert home.wait_state("wt", "done", "failed", timeout=90) == "done", home.spec("wt")
        assert work.show("iwo/wt", "feature.txt").strip() == "built"
        assert home.role_counts("wt")["builder"] == 1
    finally:
        home.cleanup()


def test_resume_refuses_in_one_line_when_the_branch_is_gone(tmp_path):
    home, work, handoffs = _failed_after_builder(tmp_path, "gone")
    try:
        (handoffs / "04-tester.md").rmdir()
        home.cli("clean", "gone", "--branches", "--force", check=False)
        if "iwo/gone" in work.branches():  # a clean without --force (older flags): delete it by hand
            shutil.rmtree(home.root / "worktrees" / "gone", ignore_errors=True)
            work.git("worktree", "prune")
            work.git("branch", "-D", "iwo/gone")
        out = home.cli("resume", "gone")
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert "iwo/gone is gone" in out.stderr and "git branch iwo/gone" in out.stderr
        assert home.state("gone") == "failed"
    finally:
        home.cleanup()


def test_cancel_keeps_the_worktree_until_clean(tmp_path):
    home, work = make_home(tmp_path, top='workspace = "worktree"')
    home.scenario({"roles": {"tester": [{"verdict": "blocker", "question": "Ship it?"}],
                             "builder": [{"write": {"feature.txt": "built\n"}}]}})
    try:
        home.submit(home.spec_file("keep.md", "# keep\nbody\n"), "keep")
        home.start()
        home.wait_state("keep", "waiting")
        home.cli("cancel", "keep", check=True)
        tree = home.root / "worktrees" / "keep"
        assert (tree / "feature.txt").read_text().strip() == "built"
        home.cli("resume", "keep", check=True)
        home.wait_state("keep", "waiting")
        home.cli("cancel", "keep", check=True)
        home.cli("clean", "keep", check=True)
        assert not tree.exists()
    finally:
        home.cleanup()
