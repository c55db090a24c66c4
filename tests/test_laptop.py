"""What a laptop really does to the daemon, each a regression test of a bug found by an
adversarial round: cancel mid-dispatch, a changed hostname, a full disk, deleted run
directories, a lowered retry count, secrets, stray handoff files, huge output, many queued
specs. Real daemon, real CLI, the fake `claude`; nothing mocked."""

from __future__ import annotations

import json
import os
import re
import signal
import shutil
import sqlite3
import sys
import subprocess
import time

import pytest

from conftest import DEFAULT_ROLE_COUNTS, IwoHome, pid_alive, wait_for
import fake_claude


def starts(home, role: str, spec: str | None = None) -> list[dict]:
    return [line for line in fake_claude.read_log(home.log)
            if line["event"] == "start" and line["role"] == role and (spec is None or line["spec"] == spec)]


def test_cancel_during_a_running_dispatch_starts_no_new_paid_attempt(home):
    home.configure(retries=2)
    home.scenario({"roles": {"builder": [{"mode": "hang"}]}})
    spec_id = home.submit()
    home.start()
    wait_for(lambda: starts(home, "builder"), 60)
    out = home.cli("cancel", spec_id, check=True)
    assert "stopped 1 agent run" in out.stdout
    time.sleep(4)  # long enough for a retry to have started
    assert len(starts(home, "builder")) == 1
    assert home.state(spec_id) == "cancelled"
    assert not pid_alive(starts(home, "builder")[0]["pid"])


def test_a_spec_cancelled_while_it_waits_for_an_agent_slot_never_starts_one(home):
    """max_concurrent = 1: the first spec, approved at its gate, waits for the agent slot the second
    spec's planner holds; cancelled then, it starts no agent when the slot frees."""
    home.configure(retries=2, max_concurrent=1)
    home.scenario({"specs": {"first": {"roles": {"reviewer": [{"verdict": "blocker", "question": "Go?"}]}},
                             "second": {"roles": {"planner": [{"sleep": 6}]}}}})
    first = home.submit(home.spec_file("first.md", "# First\nbody\n"), "first")
    home.start()
    home.wait_state(first, "waiting")
    second = home.submit(home.spec_file("second.md", "# Second\nbody\n"), "second")
    wait_for(lambda: starts(home, "planner", second), 60)
    home.cli("approve", first, check=True)
    time.sleep(1.5)  # the first spec's tester dispatch waits for the slot
    assert starts(home, "tester", first) == []
    home.cli("cancel", first, check=True)
    home.wait_state(second, "done", timeout=60)
    time.sleep(1)
    assert starts(home, "tester", first) == [] and home.state(first) == "cancelled"


def test_cancel_with_the_daemon_down_stops_an_agent_that_ignores_sigterm(home):
    home.scenario({"roles": {"builder": [{"mode": "hang", "ignore_term": True}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: starts(home, "builder"), 60)
    daemon.kill9()
    agent = starts(home, "builder")[0]["pid"]
    out = home.cli("cancel", spec_id, check=True)
    assert "stopped 1 agent run" in out.stdout
    wait_for(lambda: not pid_alive(agent), 15, "the agent ignoring SIGTERM to be gone")
    assert home.state(spec_id) == "cancelled"


def test_specs_left_under_another_executor_id_are_recovered(home):
    """The default executor id is the hostname, which a laptop's network changes."""
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "Which?"}], "tester": [{"sleep": 1.5}]}})
    first = home.submit(home.spec_file("a.md", "# A\n"))
    home.env["IWO_EXECUTOR_ID"] = "cafe-wifi"
    daemon = home.start()
    home.wait_state(first, "waiting")
    daemon.kill9()
    home.env["IWO_EXECUTOR_ID"] = "home-wifi"
    restarted = home.start()
    wait_for(lambda: "recovered 1 unfinished spec(s) started under executor id(s) cafe-wifi" in restarted.log(), 30,
             restarted.log)
    home.cli("approve", first, check=True)
    home.wait_state(first, "done")
    assert home.role_counts(first) == DEFAULT_ROLE_COUNTS


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB filesystem of its own (tmpfs; root only) to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {done.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_a_dispatch_waits_for_room_and_pays_once(small_disk, tmp_path):
    home = IwoHome(small_disk / "home")
    home.log = tmp_path / "fake-claude.log"  # the witness lives off the full disk
    home.env["FAKE_CLAUDE_LOG"] = str(home.log)
    try:
        home.scenario({"roles": {"builder": [{"sleep": 3}]}})
        spec_id = home.submit()
        home.start()
        wait_for(lambda: starts(home, "builder"), 60)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], capture_output=True)
        ended = wait_for(lambda: [line for line in fake_claude.read_log(home.log)
                                  if line["event"] == "end" and line["role"] == "builder"], 30)
        assert ended  # the agent finished while the disk was full
        time.sleep(2)
        assert home.state(spec_id) == "running"
        filler.unlink()
        home.wait_state(spec_id, "done", timeout=90)
        assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # the finished call was never paid again
        log = home.daemon_logs()
        assert "Traceback" not in log, log[-6000:]  # an expected condition: one line each, no traceback
    finally:
        home.cleanup()


def test_a_run_directory_deleted_while_the_daemon_was_down_does_not_run_the_role_twice_at_once(home):
    home.configure(retries=0)
    home.scenario({"roles": {"builder": [{"attempts": {"1": {"mode": "hang"}}}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: starts(home, "builder"), 60)
    daemon.kill9()
    first = starts(home, "builder")[0]["pid"]
    shutil.rmtree(home.root / "runs" / spec_id / "02-builder")
    home.start()
    home.wait_state(spec_id, "done")
    assert not pid_alive(first)  # stopped, not left to run (and pay) beside the next attempt
    builder = home.spec(spec_id)["steps"][1]["attempts"]
    assert "was deleted" in builder[0]["error"] and len(builder) == 2


def test_lowering_retries_across_a_restart_keeps_the_attempt_in_flight(home):
    home.configure(retries=2)
    home.scenario({"roles": {"builder": [{"attempts": {"1": {"mode": "garbage"}, "2": {"sleep": 3}}}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: len(starts(home, "builder")) == 2, 60)
    daemon.kill9()
    home.configure(retries=0)  # the attempt in flight is the second: over the new limit, yet it was paid for
    home.start()
    home.wait_state(spec_id, "done")
    assert len(starts(home, "builder")) == 2
    assert home.spec(spec_id)["steps"][1]["verdict"] == "done"


def test_secrets_never_reach_the_agents(home):
    home.env["IWO_DATABASE_URL"] = f"sqlite:///{home.root / 'iwo.sqlite'}"
    home.env["IWO_TELEGRAM_TOKEN"] = "123456:SECRET-token"
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    for line in fake_claude.read_log(home.log):
        assert "IWO_DATABASE_URL" not in line["env_names"] and "IWO_TELEGRAM_TOKEN" not in line["env_names"]
        assert "IWO_SPEC_ID" in line["env_names"]


@pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux is not installed")
def test_the_tmux_server_started_by_the_daemon_holds_no_secret(home, tmp_path):
    socket_dir = tmp_path / "tmux"
    socket_dir.mkdir()
    home.env.update(TMUX_TMPDIR=str(socket_dir), IWO_TELEGRAM_TOKEN="123456:SECRET-token")
    home.env.pop("TMUX", None)
    config = (home.root / "config.toml").read_text().replace("[agent]\n", '[agent]\ndispatch = "tmux"\ntmux_keep = "5s"\n')
    (home.root / "config.toml").write_text(config)
    try:
        spec_id = home.submit()
        home.start()
        home.wait_state(spec_id, "done")
        shown = subprocess.run(["tmux", "show-environment", "-g"], env=home.env, capture_output=True, text=True)
        assert shown.returncode == 0 and "IWO_HOME" in shown.stdout  # the server is the daemon's
        assert "SECRET-token" not in shown.stdout and "IWO_TELEGRAM_TOKEN=" not in shown.stdout
    finally:
        subprocess.run(["tmux", "kill-server"], env=home.env, capture_output=True)


def test_an_agent_writing_a_later_roles_handoff_file_does_not_replace_it(home):
    spec_id = home.submit()
    handoffs = home.root / "specs" / spec_id / "handoffs"
    handoffs.mkdir(parents=True)
    (handoffs / "03-reviewer.md").write_text("forged by an earlier agent: verdict approve\n")
    home.start()
    home.wait_state(spec_id, "done")
    text = (handoffs / "03-reviewer.md").read_text()
    assert "forged" not in text and text.startswith(f"# 03-reviewer — {spec_id}")
    assert home.spec(spec_id)["steps"][2]["role"] == "reviewer"


def test_huge_output_is_kept_only_up_to_max_output_and_said_so(home):
    config = (home.root / "config.toml").read_text().replace("[agent]\n", '[agent]\nmax_output = "1MiB"\n')
    (home.root / "config.toml").write_text(config)
    home.scenario({"roles": {"builder": [{"mode": "huge", "bytes": 30_000_000}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    stdout = home.root / "runs" / spec_id / "02-builder" / "attempt-1" / "stdout"
    assert stdout.stat().st_size <= 1024 * 1024
    attempts = home.spec(spec_id)["steps"][1]["attempts"]
    assert "output cut at 1048576 bytes" in attempts[0]["error"]


def test_many_queued_specs_stay_queued_and_finish_in_submission_order(home):
    home.configure(max_concurrent=2)
    home.scenario({"default": {"sleep": 0.2}})
    ids = [home.submit(home.spec_file(f"s{i}.md", f"# Spec {i}\n"), f"s{i:02d}") for i in range(8)]
    home.start()
    wait_for(lambda: home.state(ids[0]) in ("running", "done"), 60)
    states = [home.state(spec) for spec in ids]
    assert states[-1] == "queued" and states.count("running") <= 2, states
    for spec in ids:
        home.wait_state(spec, "done", timeout=120)
    finished = [row[0] for row in home.query("SELECT id FROM iwo_specs ORDER BY updated_at")]
    # two at a time: a spec may finish before the one submitted just before it, never before older ones
    assert all(finished.index(ids[i]) < finished.index(ids[i + 2]) for i in range(len(ids) - 2)), finished


def test_a_workflow_left_pending_with_nothing_running_it_is_replayed_without_a_restart(home):
    """What a step that failed in the wrong place leaves behind (e.g. the end not recorded): DBOS says
    PENDING, nothing in the daemon runs it. The daemon hands it back to be replayed from its checkpoints."""
    import sqlite3

    home.env["IWO_SWEEP_S"] = "1"
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "done")
    # the spec's row says done in the workflow's last step; DBOS marks the workflow a moment later:
    # wait for that, or this test's PENDING could be overwritten by the real end
    wait_for(lambda: home.query("SELECT status FROM workflow_status WHERE workflow_uuid = ?", (spec_id,))
             == [("SUCCESS",)], 30, daemon.log)
    conn = sqlite3.connect(home.root / "iwo.sqlite", timeout=10)
    with conn:
        conn.execute("UPDATE workflow_status SET status = 'PENDING', output = NULL WHERE workflow_uuid = ?",
                     (spec_id,))
    conn.close()
    wait_for(lambda: home.query("SELECT status FROM workflow_status WHERE workflow_uuid = ?", (spec_id,))
             == [("SUCCESS",)], 60, daemon.log)
    assert "left pending with nothing running it" in daemon.log()
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # replayed from checkpoints: no agent ran again


# -- upgrade and downgrade: the schema and the replay version -----------------------------------------

def _old_schema_home(home, version: int) -> None:
    """The home's database as a build that knew `version` migrations left it (one spec in it)."""
    code = ("import sys, sqlite3; from iwo_lite.store import schema; schema.MIGRATIONS = schema.MIGRATIONS[:%d];"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None); schema.migrate_sqlite(conn);"
            "conn.execute(\"INSERT INTO iwo_specs (id, title, state, created_at, updated_at) VALUES"
            " ('old-spec', 'Old', 'done', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')\")" % version)
    subprocess.run([sys.executable, "-c", code, str(home.root / "iwo.sqlite")], check=True, env=home.env)


def test_every_reading_command_works_on_an_older_schema(home):
    _old_schema_home(home, 7)
    for args in (("status",), ("status", "--json"), ("status", "old-spec"), ("status", "old-spec", "--json"),
                 ("status", "--sql", "SELECT cost_note FROM iwo_attempts"), ("doctor",)):
        out = home.cli(*args)
        assert "no such column" not in out.stdout + out.stderr and "Traceback" not in out.stderr, (args, out)
        if args[0] == "status":
            assert out.returncode == 0, (args, out.stderr)
    assert "old-spec" in home.cli("status", check=True).stdout


def test_an_older_build_refuses_a_database_a_newer_one_made_unsafe_for_it_and_runs_on_an_additive_one(home):
    home.submit()
    db = home.root / "iwo.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO iwo_migrations (version, applied_at, needs) VALUES (98, 'x', 1)")  # additive
    for args in (("status",), ("status", "--json")):
        assert home.cli(*args).returncode == 0
    conn.execute("INSERT INTO iwo_migrations (version, applied_at) VALUES (99, 'x')")  # not additive
    conn.close()
    for args in (("status",), ("status", "--json"), ("status", "--sql", "SELECT 1"), ("submit", str(home.spec_file())),
                 ("run",), ("approve", "x")):
        out = home.cli(*args, timeout=60)
        assert out.returncode == 2, (args, out)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "schema is version 99, made by a newer iwo-lite" in lines[0], (args, out.stderr)


def test_an_answer_to_a_spec_this_build_does_not_run_says_so_and_changes_nothing(home):
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "Which?"}]}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    daemon.stop()
    conn = sqlite3.connect(home.root / "iwo.sqlite", isolation_level=None)
    conn.execute("UPDATE workflow_status SET application_version = 'iwo-replay-1' WHERE workflow_uuid = ?", (spec_id,))
    conn.close()
    for answer in (("approve",), ("reject",), ("revise", "-m", "do it")):
        out = home.cli(answer[0], spec_id, *answer[1:])
        assert out.returncode == 2 and "replay version iwo-replay-1" in out.stderr, out
        assert len(out.stderr.strip().splitlines()) == 1
    assert home.state(spec_id) == "waiting" and home.spec(spec_id)["gates"][-1]["answer"] is None
    home.cli("cancel", spec_id, check=True)  # a cancelled spec of that version cannot be resumed here either
    out = home.cli("resume", spec_id)
    assert out.returncode == 2 and "replay version iwo-replay-1" in out.stderr and "`resume`" in out.stderr, out
    assert home.state(spec_id) == "cancelled"


# -- a laptop that sleeps: time limits count awake time; a finished run is collected first -------------

SLEEPY_AGENT = r'''
import json, os, sys, time
sys.stdin.read()
role = os.environ["IWO_ROLE"]
with open(os.environ["SLEEPY_LOG"], "a") as log:
    log.write(role + "\n")
verdict = {"reviewer": "approve", "tester": "pass"}.get(role, "done")
answer = "```json\n" + json.dumps({"verdict": verdict, "summary": "ok"}) + "\n```"
if os.environ.get("SLEEPY_STREAM"):
    print(json.dumps({"type": "system", "subtype": "init", "session_id": os.environ["IWO_SPEC_ID"]}), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": 0.5,
                  "num_turns": 1, "result": answer}), flush=True)
if role == "builder":
    with open(os.environ["SLEEPY_MARK"], "w") as mark:
        mark.write(str(os.getpid()))
    time.sleep(1.5)
'''


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return int(handle.read().rsplit(b")", 1)[1].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("limit", ["timeout", "stall_timeout"])
def test_a_paid_run_that_finished_while_the_machine_slept_is_collected_not_killed_and_paid_again(home, limit):
    """Suspend as SIGSTOP: the daemon, the wrapper and the agent stopped for longer than agent.timeout
    (a plain agent) or agent.stall_timeout (a streaming one) just as the agent printed its result and
    was about to exit. At wake-up the run is collected (one builder call, its $0.50 recorded), never
    marked timed out or stalled and started again."""
    script = home.root / "sleepy_agent.py"
    script.write_text(SLEEPY_AGENT)
    home.configure(timeout="4s" if limit == "timeout" else "60s", retries=1)
    config = home.root / "config.toml"
    agent = f"command = {json.dumps([sys.executable, str(script)])}"
    if limit == "stall_timeout":
        agent += '\nkind = "claude"\nstall_timeout = "4s"'
        home.env["SLEEPY_STREAM"] = "1"
    config.write_text(re.sub(r"(?m)^command = .*$", lambda _: agent, config.read_text()))
    log, mark = home.root / "sleepy.log", home.root / "builder.pid"
    home.env.update(SLEEPY_LOG=str(log), SLEEPY_MARK=str(mark))
    spec_id = home.submit()
    daemon = home.start()
    wait_for(mark.exists, 60, "the builder printing its result")
    agent = int(wait_for(lambda: mark.read_text().strip(), 10))
    wrapper = _parent_of(agent)
    stopped = [daemon.pid, wrapper, agent]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(9)  # asleep for more than twice agent.timeout
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    home.wait_state(spec_id, "done", timeout=60)
    assert log.read_text().split().count("builder") == 1, log.read_text()
    builder = [a for s in home.spec(spec_id)["steps"] if s["role"] == "builder" for a in s["attempts"]]
    assert [(a["attempt"], a["error"], a["cost_usd"]) for a in builder] == [(1, None, 0.5)]
    assert not list((home.root / "runs").rglob("timed_out")) and not list((home.root / "runs").rglob("stalled"))
    assert "Traceback" not in daemon.log()


# -- a wrapper killed (as the OOM killer does) while its agent runs ----------------------------------

def _builder_start(home, attempt: int) -> dict | None:
    return next((line for line in starts(home, "builder") if line["attempt"] == attempt), None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_wrapper_killed_mid_run_leaves_nothing_running_beside_the_next_attempt(home):
    """SIGKILL to the wrapper: its agent (and the agent's child) are stopped before attempt 2 starts,
    never two attempts of one role at once in one worktree."""
    home.configure(retries=2)
    home.scenario({"roles": {"builder": [{"attempts": {"1": {"mode": "spawn_child"}}}]}})
    spec_id = home.submit()
    daemon = home.start()
    first = wait_for(lambda: _builder_start(home, 1), 60)
    agent, child = first["pid"], first["child_pid"]
    os.kill(_parent_of(agent), signal.SIGKILL)
    second = wait_for(lambda: _builder_start(home, 2), 60, "the second attempt")
    assert not pid_alive(agent) and not pid_alive(child), "attempt 1 still runs beside attempt 2"
    assert second["t"] > first["t"]
    home.wait_state(spec_id, "done")
    builder = [a for s in home.spec(spec_id)["steps"] if s["role"] == "builder" for a in s["attempts"]]
    assert "stopped 2 orphaned process(es)" in builder[0]["error"], builder[0]
    assert "Traceback" not in daemon.log()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_stops_an_agent_whose_wrapper_died_with_the_daemon_down(home):
    """The wrapper SIGKILLed and the daemon gone: `cancel` finds the orphaned agent and its child by
    their run tag and says "stopped" only once they are gone."""
    home.scenario({"roles": {"builder": [{"mode": "spawn_child"}]}})
    spec_id = home.submit()
    daemon = home.start()
    first = wait_for(lambda: _builder_start(home, 1), 60)
    daemon.kill9()
    os.kill(_parent_of(first["pid"]), signal.SIGKILL)
    out = home.cli("cancel", spec_id, check=True).stdout
    assert "stopped" in out, out
    assert not pid_alive(first["pid"]) and not pid_alive(first["child_pid"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_after_a_wrapper_died_says_stopped_only_when_every_attempt_s_processes_are_gone(home):
    home.configure(retries=2)
    home.scenario({"roles": {"builder": [{"mode": "spawn_child"}]}})
    spec_id = home.submit()
    home.start()
    first = wait_for(lambda: _builder_start(home, 1), 60)
    os.kill(_parent_of(first["pid"]), signal.SIGKILL)
    second = wait_for(lambda: _builder_start(home, 2), 60, "the second attempt")
    out = home.cli("cancel", spec_id, check=True).stdout
    assert "stopped 1 agent run" in out, out
    alive = [pid for line in (first, second) for pid in (line["pid"], line["child_pid"]) if pid_alive(pid)]
    assert alive == [], f"still running after cancel said {out!r}: {alive}"


# -- the daemon's log: an expected condition is one line; a traceback means a bug --------------------

def test_ordinary_events_write_no_traceback_into_the_daemon_log(home):
    """cancel mid-dispatch (DBOS cancels the workflow inside its steps), a spec whose agent fails for
    good (a gate), a spec that fails (a step failing every retry: its handoff directory is a file),
    Telegram unreachable, SIGTERM, then SIGINT to a second daemon: one line each."""
    cfg = home.root / "config.toml"
    cfg.write_text(cfg.read_text() + '\n[telegram]\nallowed_chat_ids = [42]\nbase_url = "http://127.0.0.1:9/bot"\n')
    home.env["IWO_TELEGRAM_TOKEN"] = "123:abc"
    home.scenario({"specs": {"hang": {"roles": {"builder": [{"mode": "hang"}]}},
                             "bad": {"roles": {"planner": [{"mode": "garbage"}]}},
                             "slow": {"roles": {"planner": [{"sleep": 30}]}}}})
    hang = home.submit(home.spec_file("hang.md", "# Hang\n"), "hang")
    bad = home.submit(home.spec_file("bad.md", "# Bad\n"), "bad")
    broken = home.submit(home.spec_file("broken.md", "# Broken\n"), "broken")
    handoffs = home.root / "specs" / broken / "handoffs"
    shutil.rmtree(handoffs, ignore_errors=True)
    handoffs.parent.mkdir(parents=True, exist_ok=True)
    handoffs.write_text("not a directory")
    first = home.start()
    wait_for(lambda: home.started("builder", hang), 60)
    home.wait_state(bad, "waiting")
    home.wait_state(broken, "failed")
    assert "stopped 1 agent run" in home.cli("cancel", hang, check=True).stdout
    time.sleep(3)
    slow = home.submit(home.spec_file("slow.md", "# Slow\n"), "slow")
    wait_for(lambda: home.started("planner", slow), 60)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0
    second = home.start()
    time.sleep(4)
    second.proc.send_signal(signal.SIGINT)
    second.proc.wait(30)
    for daemon in (first, second):
        log = daemon.log()
        assert "Traceback" not in log, log[-8000:]
        assert "SIG" in log
    assert "step dispatch failed 4 times; last: FileExistsError" in first.log()


def test_a_full_disk_between_steps_writes_one_line_not_a_traceback(small_disk, tmp_path):
    """The disk fills while dispatches finish and the next ones start (database writes, handoffs, run
    directories all fail with ENOSPC), then room comes back: no traceback in the log, nothing paid twice."""
    home = IwoHome(small_disk / "home")
    home.log = tmp_path / "fake-claude.log"
    home.env["FAKE_CLAUDE_LOG"] = str(home.log)
    try:
        home.scenario({"default": {"sleep": 0.3}})
        spec_id = home.submit()
        daemon = home.start()
        wait_for(lambda: starts(home, "planner"), 60)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], capture_output=True)
        time.sleep(8)
        filler.unlink()
        home.wait_state(spec_id, "done", timeout=120)
        assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
        log = daemon.log()
        assert "Traceback" not in log, log[-8000:]
    finally:
        home.cleanup()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_agent_orphaned_while_the_daemon_was_down_is_stopped_before_the_next_attempt(home):
    """kill -9 of the daemon, then SIGKILL of the wrapper: at the next start the run has no exit status
    and no live wrapper; its still-running agent and child are stopped before attempt 2 starts."""
    home.configure(retries=2)
    home.scenario({"roles": {"builder": [{"attempts": {"1": {"mode": "spawn_child"}}}]}})
    spec_id = home.submit()
    daemon = home.start()
    first = wait_for(lambda: _builder_start(home, 1), 60)
    daemon.kill9()
    os.kill(_parent_of(first["pid"]), signal.SIGKILL)
    home.start()
    wait_for(lambda: _builder_start(home, 2), 60, "the next attempt")
    assert not pid_alive(first["pid"]) and not pid_alive(first["child_pid"])
    home.wait_state(spec_id, "done")


def test_a_home_deleted_and_made_again_never_builds_on_the_old_homes_branch(tmp_path):
    """rm -rf ~/.iwo-lite, a fresh home, the same spec file submitted again: its id (name + content
    hash) is the old spec's, whose branch iwo/<id> still holds the old home's commits. The old
    submit went on and built on them; now it is refused in one line, the branch untouched."""
    from test_worktrees import make_home, spec_text

    home, work = make_home(tmp_path)
    home.scenario({"roles": {"builder": [{"write": {"old.txt": "old home's work\n"}}]}})
    spec = tmp_path / "feature.md"
    spec.write_text(spec_text("feature"))
    spec_id = home.submit(spec)
    home.start()
    assert home.wait_state(spec_id, "done", "failed") == "done"
    for daemon in home.daemons:
        daemon.stop()
    old_tip = work.rev(f"iwo/{spec_id}")
    for name in os.listdir(home.root):  # the home goes; the user's repository (its workdir) stays
        if name not in ("work", "global.gitconfig", "scenario.json", "fake-claude.log"):
            path = home.root / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    home.configure()
    out = home.cli("submit", str(spec))
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"iwo/{spec_id} already exists" in out.stderr and "did not make" in out.stderr
    assert home.state(spec_id) is None and work.rev(f"iwo/{spec_id}") == old_tip
