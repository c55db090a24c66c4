"""Test harness: a temporary iwo-lite home driven as a user drives it.

`IwoHome` writes a config whose agent is the fake `claude` executable (tests/fake_claude.py),
runs the real CLI as subprocesses, starts the real daemon as a process (killed with SIGKILL
where a test says so), and reads results the way a user would: `status --json`, the files in
the home, and the fake agent's own invocation log. Nothing of iwo-lite or DBOS is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

import fake_claude  # noqa: E402

DEFAULT_ROLE_COUNTS = {"planner": 1, "builder": 1, "reviewer": 1, "tester": 1, "deployer": 1, "docs": 1}


class Daemon:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class IwoHome:
    """One home. With `database_url` (Postgres) and `executor_id` it is one worker of several;
    `like=` another home shares that home's fake-agent log and scenario (one witness for all)."""

    def __init__(self, root: Path, *, database_url: str | None = None, executor_id: str | None = None,
                 like: "IwoHome | None" = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.log = like.log if like else root / "fake-claude.log"
        self.scenario_path = like.scenario_path if like else root / "scenario.json"
        self.daemons: list[Daemon] = []
        self.env = dict(os.environ)
        for key in list(self.env):
            if key.startswith(("IWO_", "FAKE_CLAUDE")):
                del self.env[key]
        self.env.update(
            IWO_HOME=str(root),
            FAKE_CLAUDE_LOG=str(self.log),
            FAKE_CLAUDE_SCENARIO=str(self.scenario_path),
            PYTHONUNBUFFERED="1",
            COLUMNS="250",  # rich wraps tables at 80 columns when not on a terminal
        )
        if database_url:
            self.env["IWO_DATABASE_URL"] = database_url
        if executor_id:
            self.env["IWO_EXECUTOR_ID"] = executor_id
        if like is None:
            self.scenario({})
        self.configure()

    # -- setup --------------------------------------------------------------------------

    def configure(self, extra: str = "", *, timeout: str = "60s", retries: int = 1,
                  max_concurrent: int = 2, approvals: str = "") -> None:
        command = json.dumps(fake_claude.command())
        never_remind = "" if "remind_every" in approvals else 'remind_every = ""\n'
        (self.root / "work").mkdir(exist_ok=True)
        self.root.joinpath("config.toml").write_text(
            f'workdir = "{self.root / "work"}"\n'
            f"[agent]\ncommand = {command}\ntimeout = \"{timeout}\"\nretries = {retries}\n"
            f"max_concurrent = {max_concurrent}\n"
            f"[approvals]\n{approvals}\n{never_remind}{extra}\n"
        )

    def scenario(self, data: dict) -> None:
        fake_claude.write_scenario(self.scenario_path, data)

    def spec_file(self, name: str = "spec.md", text: str = "# Add a greeting\nMake greet() say hello.\n") -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    # -- the CLI and the daemon ------------------------------------------------------------

    def cli(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "iwo_lite", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"iwo-lite {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def submit(self, path: Path | None = None, spec_id: str | None = None) -> str:
        args = ["submit", str(path or self.spec_file())] + (["--id", spec_id] if spec_id else [])
        return self.cli(*args, check=True).stdout.strip().splitlines()[-1]

    def start(self) -> Daemon:
        log_path = self.root / f"daemon-{len(self.daemons)}.log"
        proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", "run"], env=self.env,
                                stdin=subprocess.DEVNULL, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        daemon = Daemon(proc, log_path)
        self.daemons.append(daemon)
        return daemon

    # -- reading results ---------------------------------------------------------------

    def specs(self) -> list[dict]:
        return json.loads(self.cli("status", "--json", check=True).stdout)

    def spec(self, spec_id: str) -> dict:
        return json.loads(self.cli("status", spec_id, "--json", check=True).stdout)[0]

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.database_url:
            return pg_query(self.database_url, sql, params)
        conn = sqlite3.connect(f"file:{self.root / 'iwo.sqlite'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def state(self, spec_id: str) -> str | None:
        if not self.database_url and not (self.root / "iwo.sqlite").exists():
            return None
        rows = self.query("SELECT state FROM iwo_specs WHERE id = ?", (spec_id,))
        return rows[0][0] if rows else None

    def wait_state(self, spec_id: str, *states: str, timeout: float = 60) -> str:
        return wait_for(lambda: self.state(spec_id) in states and self.state(spec_id), timeout,
                        lambda: f"spec {spec_id} never reached {states}; it is {self.state(spec_id)}\n"
                        + self.daemon_logs())

    def invocations(self, role: str | None = None, spec: str | None = None) -> int:
        return fake_claude.count_dispatches(self.log, role=role, spec=spec)

    def role_counts(self, spec: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in fake_claude.read_log(self.log):
            if line["event"] == "start" and (spec is None or line["spec"] == spec):
                counts[line["role"]] = counts.get(line["role"], 0) + 1
        return counts

    def started(self, role: str, spec: str | None = None) -> bool:
        return self.invocations(role, spec) > 0

    def daemon_logs(self) -> str:
        return "\n".join(f"--- daemon {i} ---\n{d.log()[-4000:]}" for i, d in enumerate(self.daemons))

    def cleanup(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.kill9()
        kill_agents(self.log)


def kill_agents(log: Path) -> None:
    """Kill any fake agent (and its group) a test left running."""
    for line in fake_claude.read_log(log):
        for pid in (line.get("pid"), line.get("child_pid")):
            if pid:
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def wait_for(predicate, timeout: float = 30, message=None, interval: float = 0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = message() if callable(message) else (message or "condition")
    raise AssertionError(f"timed out after {timeout}s waiting for: {detail}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pg_query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """A query on a test Postgres database, written SQLite-style (`?`), tables found unqualified."""
    import psycopg

    from iwo_lite.store.pg import translate

    with psycopg.connect(url, autocommit=True, options="-c search_path=iwo,dbos") as conn:
        try:
            cursor = conn.execute(translate(sql) if params else sql, params or None)
        except psycopg.errors.UndefinedTable:
            return []
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a Postgres server for the tests ($IWO_TEST_POSTGRES_URL; `.ci/postgres.sh`
    installs and starts one and prints it). Without it the Postgres tests are skipped, and say
    so; under CI (CI=true) they fail instead: CI must never skip them silently."""
    url = os.environ.get("IWO_TEST_POSTGRES_URL", "")
    if not url:
        message = "no Postgres server: run `eval $(bash .ci/postgres.sh)` first (sets IWO_TEST_POSTGRES_URL)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_server: str):
    """A new, empty database on the test server for one test (dropped afterwards)."""
    import uuid

    import psycopg

    name = f"iwo_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = postgres_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    # FORCE ends our own sessions, but not an autovacuum worker (a superuser's process) that
    # may be tidying the new tables just now: it finishes in moments, so try again.
    end = time.time() + 60
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        while True:
            try:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
                if time.time() > end:
                    raise
                time.sleep(0.5)


@pytest.fixture
def home(tmp_path: Path):
    instance = IwoHome(tmp_path / "home")
    yield instance
    instance.cleanup()


def pytest_collection_modifyitems(config, items):
    """The fast unit tests (tests/unit/, no processes) run first, then the process tests."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/unit/") else 1)
