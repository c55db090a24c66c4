"""Budgets: `[budget] per_spec_usd` and `daily_usd`, with the real daemon, the real CLI and the fake
`claude` (its scenario sets what each role's call costs, `cost`).

Before each dispatch a spec whose spend reached its cap (spent >= cap), or the day's, waits at a
gate of reason `budget` whose question says what was spent on what; approve raises the spec's cap
by per_spec_usd (or lets it go on for the rest of the UTC day), reject ends it. With Claude Code
each call is also given `--max-budget-usd` = what is left.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from conftest import DEFAULT_ROLE_COUNTS, wait_for
import fake_anthropic as fa
import fake_claude
from iwo_lite.times import parse_utc
from real_claude import offline_env, require_claude

# planner $0.01, builder $0.03, reviewer $0.02: $0.06 after three dispatches; every later role $0.01
COSTS = {"default": {"cost": 0.01}, "roles": {"builder": [{"cost": 0.03}], "reviewer": [{"cost": 0.02}]}}


def budget_home(home, budget: str, scenario: dict | None = None, agent: str = "", **configure):
    home.configure(f"[budget]\n{budget}\n", **configure)
    if agent:
        config = home.root / "config.toml"
        config.write_text(config.read_text().replace("[agent]\n", "[agent]\n" + agent, 1))
    home.scenario(scenario if scenario is not None else COSTS)
    return home


def waiting_at(home, spec_id: str, gate_suffix: str, timeout: float = 60) -> dict:
    """The spec once it waits at the gate `<spec>#<gate_suffix>`."""
    gate_id = f"{spec_id}#{gate_suffix}"
    return wait_for(lambda: (s := home.spec(spec_id))["state"] == "waiting" and s["gates"]
                    and s["gates"][-1]["id"] == gate_id and s, timeout,
                    lambda: f"{spec_id} never waited at {gate_id}: {home.spec(spec_id)}\n{home.daemon_logs()}")


def test_a_spec_at_its_cap_asks_before_the_next_dispatch_approve_raises_it_reject_ends(home):
    budget_home(home, "per_spec_usd = 0.05")
    first = home.submit(home.spec_file("first.md", "# First\nbody\n"), "first")
    second = home.submit(home.spec_file("second.md", "# Second\nbody\n"), "second")
    home.start()
    spec = waiting_at(home, first, "04-budget1")
    # the cap was reached after three dispatches ($0.06 >= $0.05): the tester never started
    assert home.role_counts(first) == {"planner": 1, "builder": 1, "reviewer": 1}
    assert (spec["gate_reason"], spec["role"], spec["step"]) == ("budget", "tester", 4)
    assert spec["budget_usd"] == pytest.approx(0.05) and spec["cost_usd"] == pytest.approx(0.06)
    question = spec["question"]
    assert "spent $0.06 of its $0.05 cap" in question
    assert "(builder $0.03, reviewer $0.02, planner $0.01)" in question  # what was spent on what
    assert "raise its cap by budget.per_spec_usd ($0.05)" in question
    assert spec["gates"][-1]["reason"] == "budget"
    # the table: spend against the cap, and the gate's reason
    waiting_at(home, second, "04-budget1")
    table = home.cli("status", check=True).stdout
    assert "0.0600/0.05" in table and "[budget] This spec spent $0.06" in table

    answered = home.cli("approve", first, check=True).stdout
    assert f"{first}#04-budget1" in answered
    home.wait_state(first, "done")
    assert home.role_counts(first) == DEFAULT_ROLE_COUNTS
    done = home.spec(first)
    # approve raised the cap by per_spec_usd once; $0.09 spent stays under the new $0.10 cap
    assert done["budget_usd"] == pytest.approx(0.10) and done["cost_usd"] == pytest.approx(0.09)
    assert [(g["id"], g["reason"], g["answer"]) for g in done["gates"]] == [(f"{first}#04-budget1", "budget",
                                                                            "approve")]
    assert "0.0900/0.10" in home.cli("status", check=True).stdout

    home.cli("reject", second, "-m", "too dear", check=True)
    home.wait_state(second, "rejected")
    assert home.role_counts(second) == {"planner": 1, "builder": 1, "reviewer": 1}  # nothing more was paid
    listed = {s["id"]: s for s in home.specs()}
    assert listed[second]["budget_usd"] == pytest.approx(0.05)
    assert "budget_usd" in listed[first]


def test_a_cap_reached_to_the_cent_is_reached(home):
    """Ten calls of $0.01 add up to $0.0999... in floating point: that is $0.10, the cap."""
    budget_home(home, "per_spec_usd = 0.10", {"default": {"cost": 0.01}, "roles": {
        "reviewer": [{"verdict": "changes"}, {"verdict": "changes"}, {"verdict": "changes"}, {"verdict": "approve"}]}})
    spec_id = home.submit()
    home.start()
    # planner, 4 x builder, 4 x reviewer, tester: ten calls, so the deployer (dispatch 11) waits
    spec = waiting_at(home, spec_id, "11-budget1")
    assert "spent $0.10 of its $0.10 cap" in spec["question"] and spec["role"] == "deployer"
    assert "deployer" not in home.role_counts(spec_id)


def test_retries_of_a_failing_call_stop_at_the_cap_and_ask(home):
    """A call that fails (no verdict) after spending the whole cap is not tried again: the budget gate
    asks before any retry would go past the cap, and reject ends the spec with nothing more paid."""
    budget_home(home, "per_spec_usd = 0.05", {"default": {"cost": 0.01},
                                             "roles": {"planner": [{"mode": "no_verdict", "cost": 0.10}]}},
                retries=2)
    spec_id = home.submit()
    home.start()
    spec = waiting_at(home, spec_id, "02-budget1")
    starts = [line for line in fake_claude.read_log(home.log) if line["event"] == "start"]
    assert [(line["role"], line["attempt"]) for line in starts] == [("planner", 1)]  # no retry past the cap
    assert spec["gate_reason"] == "budget" and "spent $0.10 of its $0.05 cap" in spec["question"]
    assert spec["cost_usd"] == pytest.approx(0.10)
    home.cli("reject", spec_id, check=True)
    home.wait_state(spec_id, "rejected")
    assert len([line for line in fake_claude.read_log(home.log) if line["event"] == "start"]) == 1


def test_retries_go_on_while_the_cap_has_room(home):
    """Under the cap, a failing call's retries run as agent.retries says (the budget stops only spending)."""
    budget_home(home, "per_spec_usd = 1.00", {"default": {"cost": 0.01}, "roles": {"planner": [
        {"cost": 0.02, "attempts": {"1": {"mode": "no_verdict"}, "2": {"mode": "no_verdict"}}}]}},
                retries=2)
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    starts = [(line["role"], line["attempt"]) for line in fake_claude.read_log(home.log) if line["event"] == "start"]
    assert starts[:3] == [("planner", 1), ("planner", 2), ("planner", 3)]
    assert home.spec(spec_id)["gates"] == []


def test_a_fork_has_a_cap_of_its_own(home):
    """A fork replays its parent's admit step: its cap is set when the fork is made, and what it spends
    is counted from nothing (the parent's calls it replays were paid by the parent)."""
    budget_home(home, "per_spec_usd = 0.05")
    spec_id = home.submit()
    home.start()
    waiting_at(home, spec_id, "04-budget1")
    home.cli("reject", spec_id, check=True)
    home.wait_state(spec_id, "rejected")
    fork_id = home.cli("fork", spec_id, "--from", "builder", check=True).stdout.strip().splitlines()[-1]
    fork = waiting_at(home, fork_id, "04-budget1")  # builder $0.03 + reviewer $0.02 reach the fork's own cap
    assert fork["budget_usd"] == pytest.approx(0.05) and fork["cost_usd"] == pytest.approx(0.05)
    assert home.role_counts(fork_id) == {"builder": 1, "reviewer": 1}
    home.cli("reject", fork_id, check=True)
    home.wait_state(fork_id, "rejected")


def test_no_cap_means_no_gate_and_a_null_budget(home):
    budget_home(home, "per_spec_usd = 0\ndaily_usd = 0")
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    spec = home.spec(spec_id)
    assert spec["budget_usd"] is None and spec["gates"] == [] and spec["cost_usd"] == pytest.approx(0.09)


def test_the_daily_cap_counts_every_spec_and_approve_lets_one_go_on_today(home):
    budget_home(home, "daily_usd = 0.10", {"default": {"cost": 0.01}})
    early = home.submit(home.spec_file("early.md", "# Early\nbody\n"), "early")
    daemon = home.start()
    home.wait_state(early, "done")  # $0.06 today
    late = home.submit(home.spec_file("late.md", "# Late\nbody\n"), "late")
    # planner, builder, reviewer, tester: $0.10 today in all, so the deployer waits
    spec = waiting_at(home, late, "05-budget1")
    assert home.role_counts(late) == {"planner": 1, "builder": 1, "reviewer": 1, "tester": 1}
    assert spec["gate_reason"] == "budget" and spec["budget_usd"] is None  # no per-spec cap
    question = spec["question"]
    assert "Today (UTC) all specs spent $0.10 of budget.daily_usd $0.10" in question
    assert "early $0.06" in question and "late $0.04" in question
    home.cli("approve", late, check=True)
    home.wait_state(late, "done")  # on for the rest of the day: no second gate for deployer or docs
    assert home.role_counts(late) == DEFAULT_ROLE_COUNTS
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert home.query("SELECT budget_day FROM iwo_specs WHERE id = ?", (late,)) == [(today,)]
    assert [g["reason"] for g in home.spec(late)["gates"]] == ["budget"]
    # any other spec today still stops: the day's spend is over the cap before its first dispatch
    third = home.submit(home.spec_file("third.md", "# Third\nbody\n"), "third")
    waiting_at(home, third, "01-budget1")
    assert home.role_counts(third) == {}
    daemon.stop()


def test_max_budget_usd_is_what_is_left_for_each_claude_code_call(home):
    """agent.kind = "claude" with the fake claude (it takes any flag and logs its argv)."""
    budget_home(home, "per_spec_usd = 0.05\ndaily_usd = 0.035", {"default": {"cost": 0.01}},
                agent='kind = "claude"\n')
    spec_id = home.submit()
    home.start()
    # daily $0.035 is the nearer cap: left $0.035, $0.025, $0.015, then $0.005 -> the CLI's least, $0.01
    waiting_at(home, spec_id, "05-budget1")
    assert "Today (UTC) all specs spent $0.04" in home.spec(spec_id)["question"]
    home.cli("approve", spec_id, check=True)  # on for the day: the spec's own cap is the nearer now
    waiting_at(home, spec_id, "06-budget1")  # $0.05 spent after the deployer's call
    assert "spent $0.05 of its $0.05 cap" in home.spec(spec_id)["question"]
    home.cli("approve", spec_id, check=True)  # the cap is $0.10 now
    home.wait_state(spec_id, "done")
    flags = {}
    for line in fake_claude.read_log(home.log):
        if line["event"] == "start":
            argv = line["argv"]
            assert argv.count("--max-budget-usd") == 1, argv
            assert "stream-json" in argv  # the argv of Claude Code, built by the daemon
            flags[line["role"]] = argv[argv.index("--max-budget-usd") + 1]
    assert flags == {"planner": "0.035", "builder": "0.025", "reviewer": "0.015", "tester": "0.01",
                     "deployer": "0.01", "docs": "0.05"}


def test_no_max_budget_usd_without_a_cap(home):
    budget_home(home, "per_spec_usd = 0", {"default": {"cost": 0.01}}, agent='kind = "claude"\n')
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    starts = [line["argv"] for line in fake_claude.read_log(home.log) if line["event"] == "start"]
    assert len(starts) == 6 and not any("--max-budget-usd" in argv for argv in starts)


def test_a_budget_gate_and_its_deadline_survive_kill9_and_approve_continues(home):
    """Two specs wait at budget gates when the daemon is killed: after the restart one is approved
    from the shell and goes on; the other's gate times out (on_timeout = "approve") at the deadline
    it was given before the crash, not a whole timeout after the restart."""
    # 20 s: the kill, 3 s down and a restart on a loaded machine must fit before the deadline
    budget_home(home, "per_spec_usd = 0.05", approvals='timeout = "20s"\non_timeout = "approve"')
    kept = home.submit(home.spec_file("kept.md", "# Kept\nbody\n"), "kept")
    timed = home.submit(home.spec_file("timed.md", "# Timed\nbody\n"), "timed")
    daemon = home.start()
    before = {spec_id: waiting_at(home, spec_id, "04-budget1") for spec_id in (kept, timed)}
    daemon.kill9()
    time.sleep(3)  # down for a while: the deadlines keep running
    home.start()
    wait_for(lambda: "daemon running" in home.daemons[-1].log(), 60)
    after = {spec_id: waiting_at(home, spec_id, "04-budget1") for spec_id in (kept, timed)}
    for spec_id in (kept, timed):
        assert after[spec_id]["deadline"] == before[spec_id]["deadline"]
        assert after[spec_id]["question"] == before[spec_id]["question"]
        assert [g["id"] for g in after[spec_id]["gates"]] == [f"{spec_id}#04-budget1"]  # no second gate
    home.cli("approve", kept, check=True)
    home.wait_state(kept, "done")
    home.wait_state(timed, "done", timeout=60)
    for spec_id, by in ((kept, "cli"), (timed, "timeout")):
        assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # nothing paid twice across the crash
        spec = home.spec(spec_id)
        assert spec["budget_usd"] == pytest.approx(0.10)  # raised once
        (gate,) = spec["gates"]
        assert (gate["answer"], gate["answered_via"]) == ("approve", by)
    for spec_id in (kept, timed):  # the deadline the gates were given before the crash, kept to the end
        assert home.spec(spec_id)["gates"][0]["deadline"] == before[spec_id]["deadline"]
    gate = home.spec(timed)["gates"][0]
    late = parse_utc(gate["answered_at"]) - parse_utc(before[timed]["deadline"])
    assert 0 <= late < 3, f"the timeout came {late:.1f}s after the deadline set before the crash"


def test_the_real_claude_code_stops_at_what_is_left_and_the_spec_asks_before_going_on(home, tmp_path):
    """The real Claude Code CLI (offline, tests/fake_anthropic.py as the API): the builder's turns cost
    $0.525 each (100k tokens in, 1k out at $5/$25 per M) and it never finishes on its own. Given
    --max-budget-usd = what is left of the spec's $1.20, the CLI stops it after the turn that passes
    that (it checks between turns: the call overshoots by at most its last turn); the next dispatch's
    budget check opens the gate, and approve runs the builder again under the raised cap."""
    claude = require_claude()
    heavy = {"input_tokens": 100_000, "output_tokens": 1000}
    turn_usd = 100_000 * 5e-6 + 1000 * 25e-6
    verdicts = {"planner": "done", "builder": "done", "reviewer": "approve", "tester": "pass", "deployer": "done",
                "docs": "done"}
    rules = [{"id": "heavy", "role": "builder", "times": 3, "tool_uses": [fa.bash("ls")], "usage": heavy}]
    for role, verdict in verdicts.items():
        rules += fa.verdict_flow(role, {"verdict": verdict, "summary": f"{role} did it"})
    api = fa.FakeAnthropic({"rules": rules}).start()
    try:
        budget_home(home, "per_spec_usd = 1.2", {})
        config = home.root / "config.toml"
        text = config.read_text()
        command = text.split("command = ", 1)[1].split("\n", 1)[0]
        config.write_text(text.replace(command, json.dumps([claude, "-p", "--output-format", "json"]))
                          .replace("[agent]\n", '[agent]\nkind = "claude"\n', 1))
        offline = offline_env(api.url, tmp_path / "claude-home")
        for key in [key for key in home.env if key.startswith(("ANTHROPIC_", "CLAUDE_"))]:
            del home.env[key]
        home.env.update({key: value for key, value in offline.items() if not key.startswith(("IWO_", "FAKE_"))})
        spec_id = home.submit()
        home.start()
        spec = waiting_at(home, spec_id, "03-budget1", timeout=120)
        assert spec["role"] == "builder" and spec["gate_reason"] == "budget"
        builder = home.spec(spec_id)["steps"][1]
        assert builder["role"] == "builder" and builder["verdict"] is None
        attempt = builder["attempts"][0]
        assert len(builder["attempts"]) == 1  # a call stopped by its budget is not retried
        assert "reached --max-budget-usd" in attempt["error"]
        given = float(attempt["error"].split("($")[1].rstrip(")"))
        planner_usd = spec["cost_usd"] - attempt["cost_usd"]
        assert given == pytest.approx(1.2 - planner_usd, abs=1e-6)  # what was left of the cap
        assert attempt["cost_usd"] == pytest.approx(3 * turn_usd)  # stopped after the third turn ...
        assert given < attempt["cost_usd"] <= given + turn_usd  # ... overshooting by at most that turn
        assert "(builder $1.58, planner $0.00)" in spec["question"]
        home.cli("approve", spec_id, check=True)
        home.wait_state(spec_id, "done", timeout=120)
        done = home.spec(spec_id)
        assert [s["role"] for s in done["steps"]] == ["planner", "builder", "builder", "reviewer", "tester",
                                                      "deployer", "docs"]
        assert [g["reason"] for g in done["gates"]] == ["budget"]  # asked once, by the budget check
        assert done["budget_usd"] == pytest.approx(2.4)
        argv = [r for r in api.messages_requests()]
        assert len([r for r in argv if r["rule"] == 0]) == 3
    finally:
        api.stop()
