"""The zipapp (issue 5): `bash build/shiv.sh` makes one reproducible file that runs from any
directory, starts without importing DBOS, and finishes a spec that an older build started.

The zipapp is built once from a snapshot of the checkout (session-scoped fixtures, the module's
tests on one worker; a build takes ~9 s of CPU, plus ~10 s to make build/venv on a fresh machine);
the tests marked `slow` need it, and two of them build once more (the sha check, and build B).
Only the first-run test unpacks it into a SHIV_ROOT of its own; the others share one. It runs
under the *base* interpreter of the test venv (no iwo-lite, no DBOS installed), from a temporary
directory, with HOME and SHIV_ROOT in temporary directories, so nothing but the .pyz can supply
the code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEFAULT_ROLE_COUNTS, Daemon, IwoHome, wait_for
import fake_claude
from test_service import unit_lines

REPO = Path(__file__).resolve().parent.parent
BUILD_VENV = REPO / "build" / "venv"
# The interpreter the venv was made from: it has neither iwo-lite nor its dependencies.
BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable
BUILD_TIMEOUT_S = 600
slow = pytest.mark.slow  # builds the zipapp; runs in CI (deselect with -m "not slow")
# build/shiv.sh builds in the checkout (build/venv, its staging directory): one worker runs them all
pytestmark = pytest.mark.xdist_group("zipapp")


def commit_time() -> str | None:
    proc = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def copy_tree(src: Path, dest: Path) -> Path:
    """What build/shiv.sh reads from a tree, copied to `dest`."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy2(src / name, dest / name)
    shutil.copytree(src / "iwo_lite", dest / "iwo_lite", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(src / "build", dest / "build", ignore=shutil.ignore_patterns("venv", "lib", "bdist*"))
    return dest


def build(out: Path, tree: Path) -> tuple[str, str]:
    """Run build/shiv.sh in `tree`, writing `out`; returns (the sha256 it printed, its output)."""
    env = dict(os.environ, IWO_BUILD_VENV=str(BUILD_VENV), PYTHON=BASE_PYTHON)
    if commit_time():  # what build/shiv.sh takes from `git log` in the checkout itself
        env["SOURCE_DATE_EPOCH"] = commit_time()
    proc = subprocess.run(["bash", str(tree / "build" / "shiv.sh"), str(out)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"build/shiv.sh exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    printed = re.search(r"^sha256: ([0-9a-f]{64})$", proc.stdout, re.M)
    assert printed, proc.stdout
    assert f"path:   {out}" in proc.stdout and re.search(r"^size: +\d+ bytes", proc.stdout, re.M)
    return printed.group(1), proc.stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zipapp_env(scratch: Path, shiv_root: Path | None = None, **extra: str) -> dict:
    """A clean environment in `scratch`; the zipapp unpacks into `shiv_root` (default: scratch/shiv,
    a first run's unpacking; the session's `shiv_root` holds build A's, ~4 s of CPU, unpacked once)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IWO_", "FAKE_CLAUDE", "SHIV_"))}
    (scratch / "home").mkdir(parents=True, exist_ok=True)
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(scratch / "home"), SHIV_ROOT=str(shiv_root or scratch / "shiv"), TMPDIR=str(scratch / "tmp"),
               COLUMNS="250", PYTHONUNBUFFERED="1", **extra)
    env.pop("PYTHONPATH", None)
    return env


def run_pyz(pyz: Path, *args: str, env: dict, cwd: Path, timeout: float = 120,
            python_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([BASE_PYTHON, *python_args, str(pyz), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# Session-scoped: the group's tests run on one worker, but interleaved with other modules' tests,
# and a module-scoped fixture was torn down and built again each time the worker came back here
# (four builds of ~20 s in a suite run instead of one).
@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """A snapshot of the checkout's build inputs. Every build here starts from it, so edits made
    in the checkout while the tests run cannot make builds A and B differ by more than the test's
    own change."""
    return copy_tree(REPO, tmp_path_factory.mktemp("tree") / "iwo-lite")


@pytest.fixture(scope="session")
def shiv_root(tmp_path_factory) -> Path:
    """Where the tests that do not check the first run's unpacking unpack the zipapps, as a user's
    ~/.shiv holds every build they ran."""
    return tmp_path_factory.mktemp("shiv-root")


@pytest.fixture(scope="session")
def zipapp(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zipapp-a") / "iwo-lite.pyz"
    printed, _ = build(out, tree)
    assert printed == sha256(out)
    return out


# -- the build -------------------------------------------------------------------------------

@slow
def test_two_builds_of_the_same_tree_are_identical(tree, zipapp, tmp_path):
    again = tmp_path / "again" / "iwo-lite.pyz"  # another tree path, another output path
    printed, _ = build(again, copy_tree(tree, tmp_path / "another" / "checkout"))
    assert printed == sha256(again) == sha256(zipapp)
    assert zipapp.stat().st_size <= 20 * 2**20


@slow
def test_the_zipapp_names_no_build_machine_path(zipapp):
    import zipfile

    with zipfile.ZipFile(zipapp) as archive:
        names = archive.namelist()
        assert not [n for n in names if n.startswith("site-packages/bin/") or n.endswith("direct_url.json")]
        needles = [b"iwo-lite-shiv."] + ([str(REPO).encode()] if len(str(REPO)) >= 8 else [])  # checkout, staging
        leaks = [n for n in names if any(needle in archive.read(n) for needle in needles)]
        environment = json.loads(archive.read("environment.json"))
    assert leaks == []
    assert environment["entry_point"] == "iwo_lite.cli:main" and environment["reproducible"]
    assert environment["compile_pyc"]  # warm starts stay fast even with PYTHONDONTWRITEBYTECODE=1


# -- running it ------------------------------------------------------------------------------

@slow
def test_version_demo_and_status_from_any_directory(zipapp, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = zipapp_env(tmp_path)
    assert subprocess.run([BASE_PYTHON, "-c", "import iwo_lite"], cwd=cwd, env=env,
                          capture_output=True).returncode != 0, "the base interpreter must not have iwo-lite"
    version = run_pyz(zipapp, "--version", env=env, cwd=cwd)
    assert version.returncode == 0 and re.fullmatch(r"iwo-lite \S+\n", version.stdout), version
    assert list((tmp_path / "shiv").glob("iwo-lite.pyz_*/site-packages/iwo_lite/cli.py"))  # extracted to SHIV_ROOT
    assert not (tmp_path / "home" / ".shiv").exists()

    demo = run_pyz(zipapp, "demo", env=env, cwd=cwd, timeout=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo finished" in demo.stdout
    [demo_home] = (tmp_path / "tmp").glob("iwo-lite-demo-*")
    status = run_pyz(zipapp, "--home", str(demo_home), "status", "--json", env=env, cwd=cwd)
    assert status.returncode == 0, status.stderr
    assert [(s["id"], s["state"]) for s in json.loads(status.stdout)] == [("demo-greet", "done")]
    table = run_pyz(zipapp, "status", env=dict(env, IWO_HOME=str(tmp_path / "empty-home")), cwd=cwd)
    assert table.returncode == 0 and "iwo-lite specs" in table.stdout


@slow
def test_status_and_help_do_not_import_dbos(zipapp, shiv_root, tmp_path):
    env = zipapp_env(tmp_path, shiv_root, IWO_HOME=str(tmp_path / "iwo"))
    run_pyz(zipapp, "--version", env=env, cwd=tmp_path)  # extract first
    for args in (("status",), ("--help",), ("status", "--json")):
        proc = run_pyz(zipapp, *args, env=env, cwd=tmp_path, python_args=("-X", "importtime"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:") and "|" in line}
        # (the entry point itself is imported by importlib, which -X importtime does not time)
        assert "iwo_lite.config" in imported, args
        assert ("iwo_lite.status" in imported) == (args[0] == "status"), args
        heavy = sorted(m for m in imported if m.split(".")[0] in ("dbos", "sqlalchemy", "psycopg", "telegram"))
        assert heavy == [], f"{args}: {heavy[:5]}"


# -- upgrade mid-spec --------------------------------------------------------------------------

class ZipappHome(IwoHome):
    """conftest's IwoHome, driving a zipapp (`python3 X.pyz ...`) instead of `python -m iwo_lite`."""

    def __init__(self, root: Path, pyz: Path, scratch: Path, shiv_root: Path):
        super().__init__(root)
        self.pyz = pyz
        self.cwd = scratch / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.env.update(zipapp_env(scratch, shiv_root))
        self.env.update(IWO_HOME=str(root), FAKE_CLAUDE_LOG=str(self.log),
                        FAKE_CLAUDE_SCENARIO=str(self.scenario_path))

    def cli(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = run_pyz(self.pyz, *args, env=self.env, cwd=self.cwd, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.pyz.name} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def start(self) -> Daemon:
        log_path = self.root / f"daemon-{len(self.daemons)}.log"
        proc = subprocess.Popen([BASE_PYTHON, str(self.pyz), "run"], env=self.env, cwd=self.cwd,
                                stdin=subprocess.DEVNULL, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        daemon = Daemon(proc, log_path)
        self.daemons.append(daemon)
        return daemon


def copy_tree_with_a_change(tree: Path, dest: Path) -> Path:
    """Build A's inputs, with daemon.py and __version__ changed (build B)."""
    copy_tree(tree, dest)
    daemon = dest / "iwo_lite" / "daemon.py"
    daemon.write_text(daemon.read_text() + '\nlog.info("zipapp upgrade test: this is build B")\n')
    init = dest / "iwo_lite" / "__init__.py"
    text, count = re.subn(r'__version__ = "([^"]+)"', r'__version__ = "\1+upgraded"', init.read_text())
    assert count == 1
    init.write_text(text)
    return dest


@slow
def test_a_spec_started_by_build_a_finishes_under_build_b_with_no_repeated_dispatch(tree, zipapp, shiv_root, tmp_path):
    tree_b = copy_tree_with_a_change(tree, tmp_path / "tree-b")
    pyz_b = tmp_path / "b" / "iwo-lite.pyz"
    sha_b, _ = build(pyz_b, tree_b)
    assert sha_b != sha256(zipapp)

    home = ZipappHome(tmp_path / "home", zipapp, tmp_path / "scratch", shiv_root)
    try:
        version_a = home.cli("--version", check=True).stdout.strip()
        home.scenario({"roles": {"tester": [{"sleep": 4}]}})
        spec_id = home.submit()
        daemon_a = home.start()
        wait_for(lambda: home.started("tester", spec_id), 180, home.daemon_logs)
        daemon_a.kill9()
        assert not any(line["event"] == "end" and line["role"] == "tester" for line in fake_claude.read_log(home.log)), \
            "the tester finished before the kill: the test did not kill mid-dispatch"

        home.pyz = pyz_b
        assert home.cli("--version", check=True).stdout.strip() == version_a + "+upgraded"
        home.start()
        home.wait_state(spec_id, "done", timeout=180)
        assert "this is build B" in home.daemons[1].log(), home.daemon_logs()
        assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS, home.daemon_logs()
        assert home.query("SELECT reattached FROM iwo_attempts WHERE spec_id = ? AND role = 'tester'",
                          (spec_id,)) == [(1,)], home.daemon_logs()
        # the spec's row says done in the workflow's last step; DBOS marks the workflow a moment later
        wait_for(lambda: home.query("SELECT status FROM workflow_status WHERE workflow_uuid = ?", (spec_id,))
                 == [("SUCCESS",)], 30, "the workflow to be marked SUCCESS")
        assert home.daemons[1].stop() == 0
    finally:
        home.cleanup()


@slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are written on Linux")
def test_service_install_from_the_zipapp_names_the_zipapp(zipapp, shiv_root, tmp_path):
    env = zipapp_env(tmp_path, shiv_root, IWO_HOME=str(tmp_path / "iwo home"))
    proc = run_pyz(zipapp, "service", "install", "--print", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [exec_start] = unit_lines(proc.stdout)["ExecStart"]
    python, rest = exec_start.split(" ", 1)
    assert Path(python).is_absolute() and os.access(python, os.X_OK)
    assert rest == f'{zipapp} --home "{tmp_path / "iwo home"}" run'
