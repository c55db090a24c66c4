"""The same code on a real Postgres server, with several workers.

Each test gets a new database on the server `.ci/postgres.sh` starts. Workers are real
`iwo-lite run` processes with their own homes and executor ids on one database (as on several
machines, but here on one host); the fake agent's log, shared by all of them, is the witness
that no paid call ran twice. Under CI these tests never skip (conftest.postgres_server).
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import DEFAULT_ROLE_COUNTS, IwoHome, wait_for
import fake_claude


@pytest.fixture
def workers(tmp_path, postgres_url):
    """make(n): n worker homes on one Postgres database, sharing one fake-agent log."""
    made: list[IwoHome] = []

    def make(count: int = 1, top: str = "", agent: str = "", **configure) -> list[IwoHome]:
        """`top`: top-level config lines; `agent`: extra [agent] lines."""
        for index in range(count):
            like = made[0] if made else None
            worker = IwoHome(tmp_path / f"worker-{len(made) + 1}", database_url=postgres_url,
                             executor_id=f"worker-{len(made) + 1}", like=like)
            worker.configure(**configure)
            config = worker.root / "config.toml"
            config.write_text(top + config.read_text().replace("[agent]\n", "[agent]\n" + agent))
            made.append(worker)
        return made[-count:]

    yield make
    for worker in made:
        worker.cleanup()


def log_has(home: IwoHome, event: str, role: str, spec: str | None = None) -> bool:
    return any(line["event"] == event and line["role"] == role and (spec is None or line["spec"] == spec)
               for line in fake_claude.read_log(home.log))


def test_the_loop_on_postgres_with_submit_before_run(workers):
    (worker,) = workers(1)
    spec_id = worker.submit()
    assert worker.specs()[0]["state"] == "queued"
    worker.start()
    worker.wait_state(spec_id, "done")
    assert worker.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    spec = worker.spec(spec_id)
    assert spec["dispatches"] == 6 and spec["cost_usd"] > 0
    assert [step["role"] for step in spec["steps"]] == list(DEFAULT_ROLE_COUNTS)
    # the handoffs are files in the home and text in the database
    assert (worker.root / "specs" / spec_id / "handoffs" / "06-docs.md").exists()
    assert worker.query("SELECT COUNT(*) FROM iwo_steps WHERE spec_id = ? AND handoff_text LIKE '%verdict%'",
                        (spec_id,)) == [(6,)]
    # status --sql: the same query text as on SQLite (DBOS's tables found unqualified), read-only
    # (the spec's row says done in the workflow's last step; DBOS marks the workflow a moment later)
    wait_for(lambda: worker.query("SELECT status FROM workflow_status") == [("SUCCESS",)], 30)
    out = worker.cli("status", "--sql", "SELECT status FROM workflow_status", "--json", check=True)
    assert json.loads(out.stdout) == [{"status": "SUCCESS"}]
    for query in ("DELETE FROM iwo_specs", "SELECT 1; DELETE FROM iwo_specs",
                  "SET TRANSACTION READ WRITE", "UPDATE iwo_specs SET state = 'x'"):
        refused = worker.cli("status", "--sql", query)
        if refused.returncode == 0:
            assert query == "SET TRANSACTION READ WRITE"  # accepted, and nothing else runs with it
        else:
            assert refused.returncode == 2 and refused.stderr.startswith("iwo-lite: status --sql:"), refused.stderr
    assert worker.query("SELECT state FROM iwo_specs") == [("done",)]


def test_a_gate_answered_from_another_workers_home(workers):
    first, second = workers(2)
    first.scenario({"roles": {"deployer": [{"verdict": "blocker", "question": "ship on friday?"}]}})
    spec_id = first.submit()
    first.start()
    first.wait_state(spec_id, "waiting")
    spec = second.spec(spec_id)  # status from another home: the same database
    assert spec["question"] == "ship on friday?"
    answered = second.cli("approve", spec_id, "-m", "yes", check=True)
    assert f"gate {spec_id}#05" in answered.stdout
    first.wait_state(spec_id, "done", timeout=30)  # woken through NOTIFY (or the 5 s sweep at worst)
    assert first.query("SELECT answer, answered_via FROM iwo_gates") == [("approve", "cli")]
    assert second.cli("approve", spec_id).returncode == 2  # not waiting any more: nothing recorded


def test_two_workers_share_the_queue_and_no_call_runs_twice(workers):
    first, second = workers(2, max_concurrent=2)
    first.scenario({"default": {"sleep": 0.3}})
    daemons = {"worker-1": first.start(), "worker-2": second.start()}
    specs: list[str] = []
    # Which worker polls the queue first is chance: freeze one while the other takes three specs.
    for taker, frozen in (("worker-2", "worker-1"), ("worker-1", "worker-2")):
        os.kill(daemons[frozen].pid, signal.SIGSTOP)
        try:
            specs += [first.submit(first.spec_file(f"spec{len(specs) + index}.md",
                                                   f"# Spec {len(specs) + index}\nDo thing {len(specs) + index}.\n"))
                      for index in range(3)]
            wait_for(lambda: first.query("SELECT COUNT(*) FROM workflow_status WHERE executor_id = ?", (taker,))
                     == [(3,)], 60)
        finally:
            os.kill(daemons[frozen].pid, signal.SIGCONT)
    for spec_id in specs:
        first.wait_state(spec_id, "done", timeout=180)
        assert first.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    executors = {row[0] for row in first.query("SELECT executor_id FROM workflow_status")}
    assert executors == {"worker-1", "worker-2"}, executors
    assert first.query("SELECT COUNT(*) FROM iwo_workers WHERE stopped_at IS NULL") == [(2,)]


def test_kill9_of_a_worker_mid_dispatch_another_takes_over_without_paying_twice(workers):
    first, second = workers(2, top='worker_timeout = "3s"\n')
    first.scenario({"roles": {"tester": [{"sleep": 4.0}]}})
    spec_id = first.submit()
    doomed = first.start()
    wait_for(lambda: log_has(first, "start", "tester", spec_id), 60)
    survivor = second.start()
    doomed.kill9()
    first.wait_state(spec_id, "done", timeout=90)
    assert first.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # the tester ran once, re-attached
    assert first.query("SELECT reattached FROM iwo_attempts WHERE spec_id = ? AND role = 'tester'",
                       (spec_id,)) == [(1,)]
    assert first.query("SELECT executor_id FROM workflow_status") == [("worker-2",)]
    assert first.query("SELECT recovered_by FROM iwo_workers WHERE executor_id = 'worker-1'") == [("worker-2",)]
    assert "worker-1 silent" in survivor.log()
    # the later roles' prompts carried the earlier handoffs, read from the database
    assert (second.root / "specs" / spec_id / "handoffs" / "01-planner.md").exists()


def test_a_worker_restarted_after_kill9_keeps_its_executor_id(workers):
    (worker,) = workers(1)
    worker.scenario({"roles": {"builder": [{"sleep": 2.0}]}})
    spec_id = worker.submit()
    first = worker.start()
    wait_for(lambda: log_has(worker, "start", "builder", spec_id), 60)
    first.kill9()
    worker.start()
    worker.wait_state(spec_id, "done", timeout=60)
    assert worker.role_counts(spec_id) == DEFAULT_ROLE_COUNTS


def test_two_live_workers_may_not_share_an_executor_id(workers, tmp_path, postgres_url):
    (worker,) = workers(1)
    worker.start()
    wait_for(lambda: worker.query("SELECT pid FROM iwo_workers"), 60)
    twin = IwoHome(tmp_path / "twin", database_url=postgres_url, executor_id="worker-1", like=worker)
    try:
        clash = twin.start()
        assert clash.proc.wait(timeout=60) == 2
        assert "executor_id 'worker-1': already used by a live worker" in clash.log()
        assert "Traceback" not in clash.log()
    finally:
        twin.cleanup()


def test_global_max_concurrent_holds_across_workers(workers):
    first, second = workers(2, max_concurrent=2, agent="global_max_concurrent = 1\n")
    first.scenario({"default": {"sleep": 0.4}, "roles": {"planner": [{"sleep": 2.0}]}})
    one = first.start()
    slow = first.submit(first.spec_file("g0.md", "# G 0\n"))
    wait_for(lambda: log_has(first, "start", "planner", slow), 60)  # worker 1 holds the only slot
    os.kill(one.pid, signal.SIGSTOP)  # so that worker 2 dequeues the next specs
    try:
        second.start()
        specs = [slow] + [first.submit(first.spec_file(f"g{index}.md", f"# G {index}\n")) for index in (1, 2)]
        wait_for(lambda: first.query("SELECT COUNT(*) FROM workflow_status WHERE executor_id = 'worker-2'")
                 == [(2,)], 60)
    finally:
        os.kill(one.pid, signal.SIGCONT)
    for spec_id in specs:
        first.wait_state(spec_id, "done", timeout=180)
    spans: dict[int, dict] = {}
    for line in fake_claude.read_log(first.log):
        spans.setdefault(line["pid"], {})[line["event"]] = line["t"]
    intervals = sorted((span["start"], span["end"]) for span in spans.values())
    assert len(intervals) == 18
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert start >= end - 0.05, "two agents ran at once under agent.global_max_concurrent = 1"
    assert first.query("SELECT COUNT(*) FROM iwo_agent_slots WHERE executor_id IS NOT NULL") == [(0,)]


def test_status_and_doctor_on_postgres_before_anything_exists(tmp_path, postgres_server):
    url = postgres_server.rsplit("/", 1)[0] + "/iwo_never_created"
    home = IwoHome(tmp_path / "h", database_url=url)
    assert home.cli("status", "--json", check=True).stdout.strip() == "[]"
    doctor = home.cli("doctor")
    assert "not created yet" in doctor.stdout
    down = IwoHome(tmp_path / "down", database_url="postgresql://iwo:secret@127.0.0.1:1/none")
    for args in (("status",), ("submit", str(down.spec_file()))):
        out = down.cli(*args)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("iwo-lite: database_url: cannot reach the Postgres server"), out.stderr
        assert "secret" not in out.stderr and "Traceback" not in out.stderr


def test_cancel_resume_and_fork_on_postgres(workers):
    (worker,) = workers(1)
    worker.scenario({"roles": {"deployer": [{"verdict": "blocker", "question": "go?"}]}})
    spec_id = worker.submit()
    worker.start()
    worker.wait_state(spec_id, "waiting")
    worker.cli("cancel", spec_id, check=True)
    worker.wait_state(spec_id, "cancelled")
    worker.cli("resume", spec_id, check=True)
    worker.wait_state(spec_id, "waiting")
    worker.cli("approve", spec_id, check=True)
    worker.wait_state(spec_id, "done")
    forked = worker.cli("fork", spec_id, "--from", "tester", check=True).stdout.strip().splitlines()[-1]
    assert forked == f"{spec_id}-fork1"
    worker.wait_state(forked, "waiting", "done", timeout=60)
    assert worker.role_counts(forked) in ({"tester": 1, "deployer": 1}, {"tester": 1, "deployer": 1, "docs": 1})


def test_doctor_points_at_unfinished_specs_left_in_the_sqlite_file(tmp_path, postgres_url):
    laptop = IwoHome(tmp_path / "laptop")
    laptop.submit()  # queued on the SQLite file, never run
    moved = IwoHome(tmp_path / "laptop", database_url=postgres_url)
    doctor = moved.cli("doctor")
    assert doctor.returncode == 1
    assert "1 unfinished spec(s) not on Postgres" in doctor.stdout and "drain them first" in doctor.stdout


def test_the_database_password_from_pgpassword_never_reaches_the_agents(workers, monkeypatch):
    """A worker whose URL holds no password (libpq takes it from $PGPASSWORD): the daemon connects,
    and no agent sees $PGPASSWORD or $IWO_DATABASE_URL."""
    from urllib.parse import urlsplit, urlunsplit

    (worker,) = workers(1)
    url = urlsplit(worker.env["IWO_DATABASE_URL"])
    assert url.password, "the test server's URL has a password to move into $PGPASSWORD"
    bare = urlunsplit(url._replace(netloc=f"{url.username}@{url.hostname}:{url.port}"))
    worker.env.update(IWO_DATABASE_URL=bare, PGPASSWORD=url.password)
    monkeypatch.setenv("PGPASSWORD", url.password)  # the test's own queries connect the same way
    spec_id = worker.submit()
    worker.start()
    worker.wait_state(spec_id, "done")
    lines = fake_claude.read_log(worker.log)
    assert lines and all("PGPASSWORD" not in line["env_names"] and "IWO_DATABASE_URL" not in line["env_names"]
                         for line in lines)
