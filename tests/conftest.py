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


def isolation_env(root: Path) -> dict[str, str]:
    """What keeps one test's processes apart from another's running beside it (pytest -n): a tmux
    server of its own (its socket under the home), and DBOS's queue polled every 0.5 s so a
    resumed or forked spec starts at once (the default, 10 s, is for an idle laptop)."""
    tmux = root / "tmux"
    tmux.mkdir(parents=True, exist_ok=True)
    return {"TMUX_TMPDIR": str(tmux), "IWO_QUEUE_POLL_S": "0.5"}


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
            **isolation_env(root),
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
                  max_concurrent: int = 2, approvals: str = "", sandbox: str = "off") -> None:
        """`sandbox`: agent.sandbox; "off" by default here (the fake agent's log and scenario live in
        the home, which the sandbox hides); tests/test_sandbox.py runs the sandbox itself."""
        command = json.dumps(fake_claude.command())
        never_remind = "" if "remind_every" in approvals else 'remind_every = ""\n'
        (self.root / "work").mkdir(exist_ok=True)
        self.root.joinpath("config.toml").write_text(
            f'workdir = "{self.root / "work"}"\n'
            f"[agent]\ncommand = {command}\ntimeout = \"{timeout}\"\nretries = {retries}\n"
            f"max_concurrent = {max_concurrent}\nsandbox = \"{sandbox}\"\n"
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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """The fast unit tests (tests/unit/, no processes, and the files marked `unit` by hand, such as
    the git-only tests/test_workspace.py: `pytest -m unit` is the inner loop) run first, then the
    process tests. Under `-n N --dist loadgroup`, the tests that share a module-scoped fixture (a
    home with a daemon built once, such as test_status.py's lived_home) run on one worker, one after
    the other: spread over the workers, each worker built the fixture again, once per visit."""
    for item in items:
        if item.nodeid.startswith("tests/unit/"):
            item.add_marker(pytest.mark.unit)
        for name in shared_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}.{name}"))
    items.sort(key=schedule_order)


# The process tests' longest (20-35 s each, measured in BENCHMARKS.md): started first, so that the
# workers end together instead of one finishing a long test alone.
LONG_FIRST = ("tests/test_races.py::test_two_commands_at_once_on_a_waiting_spec",
              "tests/test_load.py::", "tests/test_real_long_runs.py::", "tests/test_budget.py::test_a_budget_gate",
              "tests/test_postgres.py::test_global_max_concurrent", "tests/test_notifications.py::test_saved_by_replay")


def schedule_order(item) -> int:
    """The unit tier first; then, under xdist, the groups (a group is one long unit of work, the
    zipapp's ~90 s) and the longest tests; then the rest in file order (sort is stable)."""
    if item.get_closest_marker("unit"):
        return 0
    if item.get_closest_marker("xdist_group") or item.nodeid.startswith(LONG_FIRST):
        return 1
    return 2


def shared_fixtures(item) -> list[str]:
    """The names of the module-scoped fixtures the test uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return sorted(name for name, defs in info.name2fixturedefs.items() if defs and defs[-1].scope == "module")


class LoadgroupCheck:
    """On an xdist worker under `--dist loadgroup`: a grouped test whose id did not get its "@group"
    (pytest-xdist's hook appends it) fails with one line, rather than running ungrouped in silence
    (the zipapp built and the browser launched on every worker, module fixtures once per visit)."""

    @pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook
    def pytest_collection_modifyitems(self, config, items):
        if not os.environ.get("PYTEST_XDIST_WORKER") or not config.getvalue("loadgroup"):
            return
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
                item.fixturenames.insert(0, "loadgroup_lost")


def pytest_configure(config):
    config.pluginmanager.register(LoadgroupCheck(), "iwo-loadgroup-check")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        compile_the_package()


def compile_the_package() -> None:
    """Write iwo_lite's bytecode (__pycache__, ignored by git) once, before the tests start their
    thousands of `python -m iwo_lite` processes: with PYTHONDONTWRITEBYTECODE=1 in the environment
    (as on the dev and CI machines) none of them writes it, and each compiled the modules it imports
    from source again: ~30 ms of a 150 ms `status`, ~80 ms of a daemon's start. As `pip install`
    (not -e) does for an installed package."""
    import compileall

    compileall.compile_dir(str(TESTS.parent / "iwo_lite"), quiet=2)


LOADGROUP_LOST = ("--dist loadgroup did not group this test (pytest 9.2 with pytest-xdist 3.8 drops the groups, "
                  "pytest-xdist issue 1386): install the pytest that requirements.lock pins")


@pytest.fixture
def loadgroup_lost():
    pytest.fail(LOADGROUP_LOST)


# -- the real Claude Code CLI, offline (tests/test_real_agents.py, tests/test_real_long_runs.py, bench/resume.py)

PASSING = {"planner": "done", "builder": "done", "reviewer": "approve", "tester": "pass", "deployer": "done",
           "docs": "done"}
OAUTH_ENV = {"ANTHROPIC_API_KEY": None, "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test-token"}


def loop_rules(roles: dict[str, list[dict]] | None = None, usage: dict | None = None) -> list[dict]:
    """tests/fake_anthropic.py rules for the whole loop: each role at once calls StructuredOutput
    with its passing verdict, unless `roles[role]` gives that role's own rules."""
    import fake_anthropic as fa

    rules: list[dict] = []
    for role, verdict in PASSING.items():
        if roles and role in roles:
            rules += roles[role]
        else:
            rules += fa.verdict_flow(role, {"verdict": verdict, "summary": f"the {role} did its job"}, usage=usage)
    return rules


def processes(*, env: str | None = None, env_prefix: str | None = None, cmd: str | None = None) -> list[int]:
    """Living (not zombie) pids whose environment has the entry `env` (e.g. "IWO_RUN_DIR=/a/b") or
    an entry starting with `env_prefix`, or whose command line contains `cmd`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            if cmd is not None and cmd.encode() in Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" "):
                found.append(int(name))
                continue
            if env is not None or env_prefix is not None:
                entries = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
                if (env is not None and env.encode() in entries) or (
                        env_prefix is not None and any(e.startswith(env_prefix.encode()) for e in entries)):
                    found.append(int(name))
        except (OSError, IndexError):
            continue
    return found


def kill_all_at_once(pids: list[int]) -> None:
    """SIGSTOP them all, then SIGKILL them all: none gets to react (as when the machine goes down)."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


class RealClaudeHome(IwoHome):
    """A home whose agent is the REAL Claude Code CLI, offline: the config is `workdir` (a scratch
    git repository with one commit, so each spec gets its worktree and branch iwo/<id>) and
    `[agent] command = [<the CLI>]` (plus `agent`, lines under [agent], and `extra`, more tables);
    the daemon's environment is real_claude.offline_env(the fake API, a scratch HOME), which the
    agents inherit. The fake Anthropic API (tests/fake_anthropic.py) runs as a process of its own,
    so its request log survives whatever a test kills; `script()` rewrites its rules."""

    def __init__(self, root: Path, claude: str, *, agent: str = "", extra: str = "", oauth: bool = False):
        import fake_anthropic as fa
        from real_claude import offline_env

        self.claude = claude
        self.agent_lines = agent
        self.extra_lines = extra
        self.base = root
        root.mkdir(parents=True, exist_ok=True)
        self.repo = root / "repo"
        self.claude_home = root / "claude-home"
        self.api_script = root / "api-script.json"
        self.api_log = root / "api-requests.jsonl"
        fa.write_script(self.api_script, {"rules": []})
        url_file = root / "api-url"
        with open(root / "api.stderr", "wb") as stderr:
            self.api = subprocess.Popen(
                [sys.executable, str(TESTS / "fake_anthropic.py"), "--port", "0", "--script", str(self.api_script),
                 "--log", str(self.api_log), "--url-file", str(url_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        self.api_url = wait_for(lambda: url_file.exists() and url_file.read_text().strip(), 30, "the fake API's URL")
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
        subprocess.run(git + ["init", "-q", "-b", "main", str(self.repo)], check=True, capture_output=True)
        (self.repo / "README.md").write_text("# scratch\n")
        subprocess.run(git + ["-C", str(self.repo), "add", "README.md"], check=True, capture_output=True)
        subprocess.run(git + ["-C", str(self.repo), "commit", "-q", "-m", "init"], check=True, capture_output=True)
        super().__init__(root / "home")
        env = offline_env(self.api_url, self.claude_home, **(OAUTH_ENV if oauth else {}))
        self.env = {k: v for k, v in env.items() if not k.startswith(("IWO_", "FAKE_CLAUDE"))}
        self.env.update(**isolation_env(self.root), IWO_HOME=str(self.root), PYTHONUNBUFFERED="1", COLUMNS="250")

    def configure(self, extra: str = "", **_) -> None:
        """agent.sandbox "off" unless the `agent` lines set it (tests/test_sandbox.py does)."""
        sandbox = "" if "sandbox =" in self.agent_lines else 'sandbox = "off"\n'
        self.root.joinpath("config.toml").write_text(
            f'workdir = "{self.repo}"\n[agent]\ncommand = {json.dumps([self.claude])}\n{sandbox}{self.agent_lines}\n'
            f"{self.extra_lines}\n{extra}\n")

    def script(self, rules: list[dict], default: dict | None = None) -> None:
        import fake_anthropic as fa

        fa.write_script(self.api_script, {"rules": rules, **({"default": default} if default else {})})

    def requests(self, role: str | None = None) -> list[dict]:
        """The /v1/messages requests the fake API saw (records as in fake_anthropic), in order."""
        import fake_anthropic as fa

        return [r for r in fa.read_log(self.api_log) if r["path"].split("?")[0] == "/v1/messages"
                and (role is None or r["role"] == role)]

    def run_dir(self, spec_id: str, step: int, role: str, attempt: int) -> Path:
        return self.root / "runs" / spec_id / f"{step:02d}-{role}" / f"attempt-{attempt}"

    def worktree(self, spec_id: str) -> Path:
        return self.root / "worktrees" / spec_id

    def on_branch(self, spec_id: str, path: str) -> str | None:
        """A file as committed on the spec's branch iwo/<id>, or None."""
        shown = subprocess.run(["git", "-C", str(self.repo), "show", f"iwo/{spec_id}:{path}"], check=False,
                               capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None

    def transcript(self, spec_id: str, session_id: str) -> Path:
        """Where the CLI keeps a session of an agent that ran in the spec's worktree."""
        from iwo_lite.agents.claude import project_dir_name

        project = project_dir_name(os.path.realpath(self.worktree(spec_id)))
        return self.claude_home / ".claude" / "projects" / project / f"{session_id}.jsonl"

    def attempts(self, spec_id: str, step: int) -> list[dict]:
        return next(s["attempts"] for s in self.spec(spec_id)["steps"] if s["step"] == step)

    def trace(self, spec_id: str) -> str:
        return self.cli("status", spec_id, check=True).stdout

    def agent_processes(self) -> list[int]:
        """Every process of an agent run of this home (its IWO_RUN_DIR is under <home>/runs/)."""
        return processes(env_prefix=f"IWO_RUN_DIR={self.root / 'runs'}/")

    def cleanup(self) -> None:
        super().cleanup()
        kill_all_at_once(self.agent_processes())
        if self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()


@pytest.fixture
def real_home(tmp_path):
    """Makes RealClaudeHome(s) under tmp_path (real_claude.require_claude: skipped without the CLI,
    failed under CI=true); cleans them up after the test."""
    from real_claude import require_claude

    claude = require_claude()
    homes: list[RealClaudeHome] = []

    def make(**options) -> RealClaudeHome:
        home = RealClaudeHome(tmp_path / f"h{len(homes)}", claude, **options)
        homes.append(home)
        return home

    yield make
    for home in homes:
        home.cleanup()
