"""kill -9 of the daemon at the moments that matter; the spec finishes and no paid call repeats.

The fake agent's own invocation log is the witness: every role must have been started exactly
as often as the transitions demand, whatever moment the daemon died.
"""

from __future__ import annotations

import os
import time
import signal

import pytest

from conftest import DEFAULT_ROLE_COUNTS, wait_for
import fake_claude


def recorded_dispatches(home, spec_id: str) -> int:
    if not (home.root / "iwo.sqlite").exists() or not home.query(
            "SELECT 1 FROM sqlite_master WHERE name = 'operation_outputs'"):
        return 0  # DBOS's tables come with the daemon's first start
    return home.query("SELECT COUNT(*) FROM operation_outputs WHERE workflow_uuid = ? AND function_name = 'dispatch'",
                      (spec_id,))[0][0]


def log_has(home, event: str, role: str) -> bool:
    return any(line["event"] == event and line["role"] == role for line in fake_claude.read_log(home.log))


def test_kill_during_a_dispatch_reattaches_to_the_live_run(home):
    home.scenario({"roles": {"tester": [{"sleep": 2.0}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: log_has(home, "start", "tester"), 60)
    daemon.kill9()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    reattached = home.query("SELECT role, reattached FROM iwo_attempts WHERE spec_id = ? AND role = 'tester'",
                            (spec_id,))
    assert reattached == [("tester", 1)]


def test_kill_after_the_agent_exited_but_before_the_step_was_recorded(home):
    home.scenario({"roles": {"tester": [{"sleep": 1.0}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: log_has(home, "start", "tester"), 60)
    os.kill(daemon.pid, signal.SIGSTOP)  # the daemon never sees the agent finish
    run_dir = home.root / "runs" / spec_id / "04-tester" / "attempt-1"
    wait_for(lambda: (run_dir / "exit").exists(), 30)
    assert recorded_dispatches(home, spec_id) == 3
    daemon.kill9()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    assert home.query("SELECT reattached FROM iwo_attempts WHERE spec_id = ? AND step = 4", (spec_id,)) == [(1,)]
    assert (home.root / "specs" / spec_id / "handoffs" / "04-tester.md").read_text().count("verdict: pass") == 1


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1, 0.3])
def test_kill_right_after_a_step_was_recorded(home, delay):
    home.scenario({"default": {"sleep": 0.5}, "roles": {"reviewer": [{"verdict": "changes"}, {"verdict": "approve"}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: recorded_dispatches(home, spec_id) >= 3, 60)
    if delay:
        time.sleep(delay)
    daemon.kill9()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == {"planner": 1, "builder": 2, "reviewer": 2, "tester": 1,
                                         "deployer": 1, "docs": 1}
    handoffs = sorted(p.name for p in (home.root / "specs" / spec_id / "handoffs").glob("*.md"))
    assert len(handoffs) == 8


def test_kill_while_waiting_at_a_gate_keeps_the_gate_and_its_deadline(home):
    home.scenario({"roles": {"deployer": [{"verdict": "blocker", "question": "Ship?"}]}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    daemon.kill9()
    home.start()
    wait_for(lambda: "daemon running" in home.daemons[-1].log(), 30)
    home.cli("approve", spec_id, check=True)
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    assert home.query("SELECT COUNT(*) FROM iwo_gates WHERE spec_id = ?", (spec_id,)) == [(1,)]


def test_kill_twice_in_a_row_during_recovery(home):
    home.scenario({"roles": {"builder": [{"sleep": 2.0}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: log_has(home, "start", "builder"), 60)
    daemon.kill9()
    second = home.start()
    wait_for(lambda: "daemon running" in second.log(), 30)
    second.kill9()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS


def test_sigterm_stops_cleanly_and_the_run_in_flight_is_not_repeated(home):
    home.scenario({"roles": {"builder": [{"sleep": 1.5}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: log_has(home, "start", "builder"), 60)
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS


def test_gate_deadline_survives_kill9_with_downtime(home):
    home.configure(approvals='timeout = "6s"\non_timeout = "reject"')
    home.scenario({"roles": {"deployer": [{"verdict": "blocker", "question": "Ship?"}]}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    deadline = home.spec(spec_id)["deadline"]
    daemon.kill9()
    import time
    time.sleep(2.5)
    home.start()
    home.wait_state(spec_id, "rejected", timeout=30)
    gate = home.spec(spec_id)["gates"][0]
    from iwo_lite.times import parse_utc
    assert gate["deadline"] == deadline and gate["answered_via"] == "timeout"
    late = parse_utc(gate["answered_at"]) - parse_utc(deadline)
    assert 0 <= late < 1.5, late  # closed at the original deadline, not 6 s after the restart


def test_gate_closes_at_restart_when_the_deadline_passed_while_down(home):
    home.configure(approvals='timeout = "3s"\non_timeout = "approve"')
    home.scenario({"roles": {"deployer": [{"verdict": "blocker", "question": "Ship?"}]}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    from iwo_lite.times import parse_utc
    deadline = parse_utc(home.spec(spec_id)["deadline"])
    daemon.kill9()
    wait_for(lambda: time.time() > deadline + 0.2, 10, "the gate's deadline to pass while down")
    late = home.cli("approve", spec_id)
    assert late.returncode == 2 and "closed at its deadline" in late.stderr
    home.start()
    home.wait_state(spec_id, "done", timeout=30)
    gate = home.spec(spec_id)["gates"][0]
    assert (gate["answer"], gate["answered_via"]) == ("approve", "timeout")
