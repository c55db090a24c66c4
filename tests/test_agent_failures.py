"""Agents that fail: retried per agent.retries, then a human gate showing the error; never a crash,
never a silent pass; a timeout kills the agent's whole process group."""

from __future__ import annotations

import re

import pytest

from conftest import pid_alive, wait_for
import fake_claude


API_500 = {"error_text": "API Error: 500 Internal server error.", "api_error_status": 500}


@pytest.mark.parametrize("mode, expected", [
    ("garbage", "not JSON"),
    ("truncated", "not JSON"),
    ("no_verdict", "no verdict"),
    ("is_error", "API 500 internal server error"),
    ("is_error_exit0", "API 500 internal server error"),
    ("exit", "printed nothing"),
])
def test_bad_output_is_retried_then_opens_a_gate_with_the_error(home, mode, expected):
    home.configure(retries=1)
    home.scenario({"roles": {"reviewer": [{"mode": mode, **API_500}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    spec = home.spec(spec_id)
    gate = spec["gates"][0]
    assert gate["reason"] == "agent_failed" and gate["role"] == "reviewer"
    assert expected in gate["question"] and "2 attempt(s)" in gate["question"]
    assert home.role_counts(spec_id)["reviewer"] == 2
    assert spec["dispatches"] == 4  # planner, builder, and two reviewer attempts
    assert [a["attempt"] for a in spec["steps"][2]["attempts"]] == [1, 2]
    home.cli("approve", spec_id, check=True)  # continue as if the reviewer had passed
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id)["tester"] == 1


@pytest.mark.parametrize("entry, expected", [
    ({"mode": "max_turns"}, "reached --max-turns"),
    ({"mode": "is_error", "error_text": "Invalid API key · Fix external API key", "api_error_status": 401},
     "invalid API key"),
])
def test_errors_that_trying_again_cannot_fix_open_a_gate_at_once(home, entry, expected):
    home.configure(retries=2)
    home.scenario({"roles": {"reviewer": [entry]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    spec = home.spec(spec_id)
    assert spec["gate_reason"] == "agent_failed" and expected in spec["question"]
    assert home.role_counts(spec_id)["reviewer"] == 1  # no retry: it would fail the same way, and cost


def test_an_overloaded_api_pauses_the_spec_without_burning_retries(home):
    home.configure(retries=0)
    home.scenario({"roles": {"reviewer": [{"mode": "is_error"}]}})  # API 529 overloaded, every time
    spec_id = home.submit()
    home.start()
    spec = wait_for(lambda: (s := home.spec(spec_id))["paused_until"] and s, 60)
    assert spec["state"] == "running" and spec["pause_reason"] == "overloaded"
    assert spec["paused_until"] > spec["updated_at"] and spec["gates"] == []
    assert home.role_counts(spec_id)["reviewer"] == 1  # retries = 0, and no gate: it waits, then tries again
    assert "API 529 overloaded" in spec["steps"][2]["attempts"][0]["error"]


def test_unknown_verdict_and_blocker_without_question_are_failures(home):
    home.configure(retries=1)
    home.scenario({"roles": {"tester": [{"verdict": "approve", "attempts": {"2": {"verdict": "blocker", "question": None}}}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    errors = [a["error"] for a in home.spec(spec_id)["steps"][3]["attempts"]]
    assert "unknown verdict 'approve' for tester" in errors[0]
    assert "blocker without a question" in errors[1]


def test_a_failed_attempt_then_a_good_one_passes_without_a_gate(home):
    home.configure(retries=2)
    home.scenario({"roles": {"builder": [{"attempts": {"1": {"mode": "is_error", **API_500}}}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id)["builder"] == 2
    assert home.query("SELECT COUNT(*) FROM iwo_gates") == [(0,)]
    attempts = home.spec(spec_id)["steps"][1]["attempts"]
    assert [a["is_error"] for a in attempts] == [1, 0]
    assert sum(a["cost_usd"] for a in attempts) == pytest.approx(0.02)


def test_structured_output_and_huge_output_are_read(home):
    home.scenario({"roles": {"planner": [{"mode": "structured"}], "builder": [{"mode": "huge", "bytes": 3_000_000}],
                             "tester": [{"mode": "stderr_noise"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id)["builder"] == 1


def test_timeout_kills_the_whole_process_group_and_leaves_no_orphan(home):
    home.configure(timeout="2s", retries=0)
    home.scenario({"roles": {"builder": [{"mode": "spawn_child"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting", timeout=60)
    started = [line for line in fake_claude.read_log(home.log) if line["role"] == "builder"]
    assert len(started) == 1
    assert not pid_alive(started[0]["pid"])
    assert not pid_alive(started[0]["child_pid"])
    spec = home.spec(spec_id)
    assert "timed out after 2s" in spec["question"]
    assert spec["gates"][0]["reason"] == "agent_failed"


def test_missing_agent_command_is_a_failed_attempt_not_a_crash(home):
    home.configure(retries=0)
    config = (home.root / "config.toml").read_text()

    (home.root / "config.toml").write_text(re.sub(r"command = .*", 'command = ["/nonexistent/claude", "-p"]', config))
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    question = home.spec(spec_id)["question"]
    assert "status 127" in question and "/nonexistent/claude" in question and "No such file" in question
    other = home.submit(home.spec_file("other.md", "# Other\n"))
    home.wait_state(other, "waiting")  # the daemon lives on and handles the next spec the same way
