"""The OS sandbox (agent.sandbox, bubblewrap) with the fake agent, through the real daemon and CLI:
an agent that tries to get out (the main checkout, `main`, another spec's branch, a key under
~/.ssh, the database, `iwo-lite approve`, a `setsid` child) is refused or ended each time, while its
work and its commit in its own worktree land; kill -9 of the daemon mid-run re-attaches to the
live sandboxed run; cancel and a killed wrapper end every process; without bubblewrap "auto" runs
unconfined and says so. The real Claude Code CLI in the sandbox: tests/test_sandbox_real.py.

Needs bubblewrap (`apt-get install bubblewrap`, .ci/setup.sh installs it): skipped without it,
except under CI=true where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fake_claude
import pytest
from conftest import IwoHome, pid_alive, processes, wait_for

BWRAP = shutil.which("bwrap")
KEY = "SECRET-KEY-MATERIAL-0123"


@pytest.fixture(autouse=True)
def _needs_bubblewrap():
    if BWRAP is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("bubblewrap is not installed (.ci/setup.sh installs it)")
        pytest.skip("bubblewrap is not installed: apt-get install bubblewrap")


class SandboxHome(IwoHome):
    """A home whose workdir is a git repository (each spec in its own worktree, branch iwo/<id>),
    a user HOME with a fake key in ~/.ssh, and the fake agent's log, scenario and counters in
    `agent_files` — the one path outside the worktree that agent.sandbox_rw lets it write."""

    def __init__(self, tmp: Path, sandbox: str = "bwrap"):
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.user = tmp / "user"
        self.agent_files = tmp / "agent-files"
        self.sandbox_mode = sandbox
        for folder in (self.agent_files, self.user / ".ssh", self.user / ".config" / "gh"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.user / ".ssh" / "id_rsa").write_text(KEY + "\n")
        (self.user / ".netrc").write_text(f"machine example.com password {KEY}\n")
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
        subprocess.run(git + ["init", "-q", "-b", "main", str(self.repo)], check=True)
        (self.repo / "README.md").write_text("# scratch\n")
        subprocess.run(git + ["-C", str(self.repo), "add", "README.md"], check=True)
        subprocess.run(git + ["-C", str(self.repo), "commit", "-q", "-m", "init"], check=True)
        subprocess.run(["git", "-C", str(self.repo), "branch", "iwo/other"], check=True)  # another spec's branch
        subprocess.run(["git", "-C", str(self.repo), "branch", "iwo/loose"], check=True)
        subprocess.run(["git", "-C", str(self.repo), "pack-refs", "--all"], check=True)  # main, iwo/other: packed
        subprocess.run(["git", "-C", str(self.repo), "repack", "-q", "-a", "-d"], check=True)  # the history: a pack
        subprocess.run(["git", "-C", str(self.repo), "branch", "-f", "iwo/loose"], check=True)  # ...iwo/loose: loose
        super().__init__(tmp / "home")
        self.log = self.agent_files / "fake-claude.log"
        self.scenario_path = self.agent_files / "scenario.json"
        self.scenario({})
        self.env.update(HOME=str(self.user), FAKE_CLAUDE_LOG=str(self.log), FAKE_CLAUDE_SCENARIO=str(self.scenario_path),
                        FAKE_CLAUDE_STATE=str(self.agent_files))

    def configure(self, extra: str = "", **_) -> None:
        self.root.joinpath("config.toml").write_text(
            f'workdir = "{self.repo}"\n'
            f"[agent]\ncommand = {json.dumps(fake_claude.command())}\ntimeout = \"60s\"\nretries = 0\n"
            f'sandbox = "{self.sandbox_mode}"\nsandbox_rw = ["{self.agent_files}"]\n{extra}\n'
            '[approvals]\nremind_every = ""\n')

    def main_head(self) -> str:
        return subprocess.run(["git", "-C", str(self.repo), "rev-parse", "main", "iwo/other", "iwo/loose"], check=True,
                              capture_output=True, text=True).stdout

    def on_branch(self, spec_id: str, path: str) -> str | None:
        shown = subprocess.run(["git", "-C", str(self.repo), "show", f"iwo/{spec_id}:{path}"],
                               capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None

    def end_line(self, role: str, spec: str) -> dict:
        return wait_for(lambda: next((line for line in fake_claude.read_log(self.log) if line["event"] == "end"
                                      and line["role"] == role and line["spec"] == spec), None), 60,
                        lambda: f"no end line for {role}\n{self.daemon_logs()}")

    def run_dir(self, spec_id: str, step: int, role: str, attempt: int = 1) -> Path:
        return self.root / "runs" / spec_id / f"{step:02d}-{role}" / f"attempt-{attempt}"


@pytest.fixture
def sandbox_home(tmp_path):
    made = []

    def make(sandbox: str = "bwrap") -> SandboxHome:
        made.append(SandboxHome(tmp_path, sandbox))
        return made[-1]

    yield make
    for home in made:
        for daemon in home.daemons:
            if daemon.proc.poll() is None:
                daemon.kill9()
        for pid in processes(env_prefix=f"IWO_RUN_DIR={home.root}"):  # never the fake's own (namespaced) pids
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


ESCAPES = """
echo built > built.txt
git add -A && git -c user.name=agent -c user.email=agent@localhost commit -q -m 'builder: its own commit'
echo '--main-checkout'; echo x > {repo}/escaped.txt
echo '--move-main'; git update-ref refs/heads/main HEAD
echo '--other-branch'; git branch -f iwo/other HEAD; git branch -f iwo/loose HEAD; git update-ref refs/heads/iwo/future HEAD
echo '--packs'; rm -f $(git rev-parse --git-common-dir)/objects/pack/*.pack; git gc -q
echo '--ssh-key'; cat ~/.ssh/id_rsa; cat ~/.netrc; ls ~/.config/gh
echo '--database'; echo garbage >> {db}; sqlite3 {db} 'select 1'
echo '--approve'; {python} -m iwo_lite approve {spec} -m self-approved; echo "approve exit $?"
echo '--setsid'; setsid sleep 4242 >/dev/null 2>&1 < /dev/null &
echo '--is-sandbox'; echo "IS_SANDBOX=$IS_SANDBOX"
true
"""


def test_a_sandboxed_builder_is_refused_everything_outside_its_worktree_and_branch(sandbox_home):
    home = sandbox_home()
    spec = "boxed"
    before = home.main_head()
    db = home.root / "iwo.sqlite"
    home.scenario({"roles": {"builder": [{
        "verdict": "done", "write": {"src/app.py": "print('hi')\n"},
        "run": ESCAPES.format(repo=home.repo, db=db, python=sys.executable, spec=spec)}]}})
    home.submit(spec_id=spec)
    home.start()
    end = home.end_line("builder", spec)
    output = end["run"]["output"]
    home.wait_state(spec, "done", "waiting", "failed", timeout=90)

    # its own work and commit landed on its branch, in its worktree
    assert home.on_branch(spec, "src/app.py") == "print('hi')\n"
    assert home.on_branch(spec, "built.txt") == "built\n"  # committed by the agent itself
    log = subprocess.run(["git", "-C", str(home.repo), "log", "--format=%s", f"iwo/{spec}"], capture_output=True,
                         text=True).stdout
    assert "builder: its own commit" in log, output
    # ...and nothing else moved or changed
    assert home.main_head() == before, output
    assert not (home.repo / "escaped.txt").exists()
    sections = dict(part.split("\n", 1) for part in output.split("--")[1:])
    assert "Read-only file system" in sections["main-checkout"], output
    assert "Read-only file system" in sections["move-main"]
    assert "No such file or directory" in sections["ssh-key"]
    assert "Read-only file system" in sections["packs"] or "Permission denied" in sections["packs"], output
    assert list((home.repo / ".git" / "objects" / "pack").glob("*.pack")), "the history was deleted"
    assert "Read-only file system" in sections["database"]
    assert KEY not in output, output
    assert (home.user / ".ssh" / "id_rsa").read_text() == KEY + "\n"
    section = output.split("--approve")[1].split("--setsid")[0]
    assert "approve exit 0" not in section and "approve exit" in section, output
    assert subprocess.run(["sqlite3", str(db), "PRAGMA integrity_check"], capture_output=True, text=True
                          ).stdout.strip() in ("ok", "")  # sqlite3 may be missing; the check below holds anyway
    assert b"garbage" not in db.read_bytes()
    assert "IS_SANDBOX=1" in output
    # the setsid child ended with the sandbox
    assert processes(cmd="sleep 4242") == []
    future = subprocess.run(["git", "-C", str(home.repo), "rev-parse", "--verify", "-q", "iwo/future"],
                            capture_output=True, text=True)
    assert future.returncode != 0, "a branch made by the agent besides its own was kept"
    # the refs it made besides its own branch were dropped, and said so: a permission_denied gate
    spec_row = home.spec(spec)
    assert (spec_row["state"], spec_row["gate_reason"], spec_row["role"]) == ("waiting", "permission_denied", "builder")
    for ref in ("refs/heads/iwo/other", "refs/heads/iwo/loose", "refs/heads/iwo/future"):
        assert ref in spec_row["question"], spec_row["question"]
    assert all(gate.get("note") != "self-approved" for gate in spec_row["gates"])


@pytest.mark.parametrize("dispatch", ["subprocess", "tmux"])
def test_kill9_of_the_daemon_mid_run_reattaches_to_the_live_sandboxed_run(sandbox_home, dispatch):
    if dispatch == "tmux" and shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    home = sandbox_home()
    home.configure(f'dispatch = "{dispatch}"\ntmux_keep = "1s"')
    if dispatch == "tmux":  # a private tmux server, never the user's
        (home.tmp / "tmux").mkdir()
        home.env["TMUX_TMPDIR"] = str(home.tmp / "tmux")
        home.env.pop("TMUX", None)
    spec = f"survivor-{dispatch}"
    home.scenario({"roles": {"builder": [{"verdict": "done", "sleep": 4, "write": {"late.txt": "after the crash\n"},
                                          "git_commit": "builder: late"}]}})
    home.submit(spec_id=spec)
    daemon = home.start()
    run = home.run_dir(spec, 2, "builder")
    wait_for(lambda: any(line["event"] == "start" and line["role"] == "builder"
                         for line in fake_claude.read_log(home.log)), 60, home.daemon_logs)
    wrapper = int(wait_for(lambda: (run / "pid").exists() and (run / "pid").read_text().split()[0], 10))
    assert processes(cmd=f"--bind {run} {run}"), "the agent does not run in the sandbox"
    daemon.kill9()
    time.sleep(0.5)
    assert pid_alive(wrapper), "the sandboxed run died with the daemon"
    home.start()
    home.wait_state(spec, "done", "waiting", "failed", timeout=90)
    assert home.on_branch(spec, "late.txt") == "after the crash\n"
    builder = home.spec(spec)["steps"][1]
    assert builder["role"] == "builder" and len(builder["attempts"]) == 1, builder
    assert builder["attempts"][0]["reattached"], builder
    assert fake_claude.count_dispatches(home.log, role="builder") == 1
    if dispatch == "tmux":
        subprocess.run(["tmux", "kill-server"], env=home.env, capture_output=True)


def test_cancel_and_a_killed_wrapper_end_every_process_of_the_sandbox(sandbox_home):
    home = sandbox_home()
    hang = "setsid sh -c 'sleep 4343' >/dev/null 2>&1 </dev/null & sleep 600"
    home.scenario({"specs": {"cancelled": {"roles": {"builder": [{"run": hang.replace("4343", "4344")}]}},
                             "wrapper": {"roles": {"builder": [{"run": hang}]}}}})
    home.submit(spec_id="cancelled")
    home.start()
    wait_for(lambda: processes(cmd="sleep 4344"), 60, home.daemon_logs)
    run = home.run_dir("cancelled", 2, "builder")
    home.cli("cancel", "cancelled", check=True)
    wait_for(lambda: not processes(cmd="sleep 4344") and not processes(cmd="sleep 600"), 20,
             lambda: f"left running: {processes(cmd='sleep 4344')}")
    wait_for(lambda: (run / "cancelled").exists(), 10)

    home.submit(spec_id="wrapper")
    wait_for(lambda: processes(cmd="sleep 4343"), 60, home.daemon_logs)
    run = home.run_dir("wrapper", 2, "builder")
    wrapper = int((run / "pid.wrapper").read_text())
    home.daemons[0].kill9()  # nobody left to sweep up: the kernel alone must end them
    os.kill(wrapper, signal.SIGKILL)  # the wrapper dies: bwrap (--die-with-parent) takes the sandbox with it
    wait_for(lambda: not processes(cmd="sleep 4343") and not processes(env=f"IWO_RUN_DIR={run}"), 10,
             lambda: f"left running: {processes(env=f'IWO_RUN_DIR={run}')}")


def test_auto_without_bubblewrap_runs_unconfined_and_says_so(sandbox_home, tmp_path):
    home = sandbox_home("auto")
    bin_dir = tmp_path / "bin"  # a PATH with git and sh but no bwrap
    bin_dir.mkdir()
    for tool in ("git", "sh", "cat", "sqlite3"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    home.env["PATH"] = str(bin_dir)
    doctor = home.cli("doctor").stdout
    assert "sandbox: agents run unconfined: bubblewrap (bwrap) is not installed (apt-get install bubblewrap)" \
        in " ".join(doctor.split()), doctor
    spec = "unboxed"
    home.scenario({"roles": {"builder": [{"verdict": "done", "run": "cat ~/.ssh/id_rsa"}]}})
    home.submit(spec_id=spec)
    home.start()
    assert KEY in home.end_line("builder", spec)["run"]["output"]  # unconfined indeed
    wait_for(lambda: "agents run unconfined" in home.daemons[0].log(), 30, home.daemon_logs)
    home.wait_state(spec, "done", "waiting", "failed", timeout=90)
    trace = " ".join(home.cli("status", spec).stdout.split())
    assert "unconfined: bubblewrap (bwrap) is not installed (apt-get install bubblewrap)" in trace, trace

    # "bwrap" required: the daemon refuses to start, one line; doctor fails it
    home.daemons[0].stop()
    home.sandbox_mode = "bwrap"
    home.configure()
    refused = home.cli("run", timeout=30)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert 'agent.sandbox = "bwrap", but bubblewrap (bwrap) is not installed' in refused.stderr
    doctor = home.cli("doctor")
    assert doctor.returncode == 1 and "✗ sandbox:" in doctor.stdout


def test_doctor_says_the_agents_run_in_the_sandbox(sandbox_home):
    home = sandbox_home("auto")
    doctor = " ".join(home.cli("doctor").stdout.split())
    assert f"✓ sandbox: agents run in a bubblewrap sandbox ({BWRAP})" in doctor, doctor


FINDER = '''import importlib.util, sys
MAPPING: dict[str, str] = {mapping!r}
class _Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in MAPPING:
            return importlib.util.spec_from_file_location(name, MAPPING[name] + "/__init__.py")
        return None
def install():
    sys.meta_path.append(_Finder)
'''


def test_a_python_agent_installed_under_tmp_imports_its_code_inside_the_real_sandbox(tmp_path):
    """The sandbox's /tmp is private: everything a Python agent imports from under /tmp must come
    back read-only. The demo from a clone in /tmp failed every agent with "No module named
    'iwo_lite'" (the checkout reached through `pip install -e`'s finder). Here, under /tmp: a venv,
    a package of an editable install (setuptools' finder, as `pip install -e` writes it), a `.pth`
    directory and a $PYTHONPATH directory, in the real bubblewrap."""
    from iwo_lite import sandbox

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    for folder, module, text in (("src/editable", "__init__.py", "X = 'editable'"),
                                 ("pth", "by_pth.py", "X = 'pth'"), ("pp", "by_pythonpath.py", "X = 'pythonpath'")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / module).write_text(text + "\n")
    (site / "__editable___editable_1_0_finder.py").write_text(FINDER.format(mapping={"editable": str(tmp_path / "src/editable")}))
    (site / "__editable__.editable-1.0.pth").write_text("import __editable___editable_1_0_finder; __editable___editable_1_0_finder.install()\n")
    (site / "extra.pth").write_text(f"{tmp_path / 'pth'}\n")
    work, home = tmp_path / "work", tmp_path / "home"
    run = home / "runs" / "s1" / "attempt-1"
    for folder in (work, run):
        folder.mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "user"), "PYTHONPATH": str(tmp_path / "pp")}
    argv = [str(venv / "bin" / "python"), "-c",
            "import editable, by_pth, by_pythonpath; print(editable.X, by_pth.X, by_pythonpath.X)"]
    assert subprocess.run(argv, env=env, capture_output=True, text=True).stdout == "editable pth pythonpath\n"
    confinement = sandbox.Confinement(cwd=work, run_dir=run, home=home, empty_file=sandbox.empty_file(home),
                                      visible=sandbox.visible_paths(argv, env), env=env)
    inside = subprocess.run(sandbox.Sandbox(BWRAP).wrap(argv, confinement), env=env, capture_output=True, text=True)
    assert (inside.returncode, inside.stdout) == (0, "editable pth pythonpath\n"), inside.stderr
    (tmp_path / "not-needed").mkdir()  # the rest of /tmp stays private
    listed = subprocess.run(sandbox.Sandbox(BWRAP).wrap(["ls", str(tmp_path)], confinement), env=env,
                            capture_output=True, text=True)
    assert listed.stdout.split() == ["home", "pp", "pth", "src", "venv", "work"]
