"""The six-role loop end to end: real daemon, real CLI, fake claude executable."""

from __future__ import annotations

import os
import stat

from conftest import DEFAULT_ROLE_COUNTS, wait_for
import fake_claude


def test_spec_runs_all_six_roles_and_writes_one_handoff_per_dispatch(home):
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    handoffs = sorted(p.name for p in (home.root / "specs" / spec_id / "handoffs").iterdir())
    assert handoffs == ["01-planner.md", "02-builder.md", "03-reviewer.md", "04-tester.md",
                        "05-deployer.md", "06-docs.md"]
    assert (home.root / "specs" / spec_id / "spec.md").read_text().startswith("# Add a greeting")
    spec = home.spec(spec_id)
    assert spec["state"] == "done" and spec["role"] == "docs" and spec["step"] == 6
    assert spec["dispatches"] == 6 and abs(spec["cost_usd"] - 0.06) < 1e-9
    assert spec["title"] == "Add a greeting"


def test_agent_gets_the_contract_argv_env_stdin_and_cwd(home):
    home.configure('[roles.reviewer]\nextra_args = ["--allowedTools", "Read"]\nmodel = "opus"\n')
    home.env["FAKE_CLAUDE_LOG_PROMPT"] = "1"
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    lines = [line for line in fake_claude.read_log(home.log) if line["event"] == "start"]
    reviewer = next(line for line in lines if line["role"] == "reviewer")
    assert reviewer["argv"][-4:] == ["--allowedTools", "Read", "--model", "opus"]
    assert reviewer["cwd"] == str(home.root / "work")
    assert reviewer["spec"] == spec_id and reviewer["workflow"] == spec_id and reviewer["attempt"] == 1
    assert "Make greet() say hello." in reviewer["prompt"]
    assert "01-planner" in reviewer["prompt"] and "02-builder" in reviewer["prompt"]
    planner = next(line for line in lines if line["role"] == "planner")
    assert planner["argv"][-2:] == ["--output-format", "json"]


def test_reviewer_changes_and_tester_fail_go_back_to_builder(home):
    home.scenario({"roles": {"reviewer": [{"verdict": "changes"}, {"verdict": "approve"}],
                             "tester": [{"verdict": "fail"}, {"verdict": "pass"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == {"planner": 1, "builder": 3, "reviewer": 3, "tester": 2,
                                         "deployer": 1, "docs": 1}


def test_too_many_reworks_open_a_gate_and_approve_sends_back_to_builder(home):
    home.configure("[loop]\nmax_rework = 1\n")
    home.scenario({"roles": {"reviewer": [{"verdict": "changes"}, {"verdict": "changes"}, {"verdict": "approve"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    spec = home.spec(spec_id)
    assert spec["gates"][0]["reason"] == "rework_limit" and "max_rework = 1" in spec["question"]
    assert home.role_counts(spec_id) == {"planner": 1, "builder": 2, "reviewer": 2}
    home.cli("approve", spec_id, check=True)
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == {"planner": 1, "builder": 3, "reviewer": 3, "tester": 1,
                                         "deployer": 1, "docs": 1}


def test_blocker_gate_reject_ends_rejected(home):
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "Add a dependency?"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    spec = home.spec(spec_id)
    assert spec["question"] == "Add a dependency?" and spec["deadline"].endswith("Z")
    out = home.cli("reject", spec_id, "-m", "no new deps", check=True)
    assert f"{spec_id}#03" in out.stdout
    home.wait_state(spec_id, "rejected")
    gate = home.spec(spec_id)["gates"][0]
    assert (gate["answer"], gate["note"], gate["answered_via"]) == ("reject", "no new deps", "cli")
    assert home.role_counts(spec_id) == {"planner": 1, "builder": 1, "reviewer": 1}


def test_revise_sends_text_to_builder_and_approve_continues_after_asking_role(home):
    home.env["FAKE_CLAUDE_LOG_PROMPT"] = "1"
    home.scenario({"roles": {"tester": [{"verdict": "blocker", "question": "Flaky test: skip it?"},
                                        {"verdict": "pass"}],
                             "deployer": [{"verdict": "blocker", "question": "Ship?"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    home.cli("revise", spec_id, "-m", "quarantine the flaky test", check=True)
    wait_for(lambda: home.spec(spec_id)["role"] == "deployer" and home.state(spec_id) == "waiting")
    builder_prompts = [line["prompt"] for line in fake_claude.read_log(home.log)
                       if line["event"] == "start" and line["role"] == "builder"]
    assert len(builder_prompts) == 2 and "quarantine the flaky test" in builder_prompts[1]
    home.cli("approve", spec_id, check=True)
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == {"planner": 1, "builder": 2, "reviewer": 2, "tester": 2,
                                         "deployer": 1, "docs": 1}


def test_answers_to_a_spec_that_is_not_waiting_exit_2_and_record_nothing(home):
    spec_id = home.submit()
    out = home.cli("approve", spec_id)
    assert out.returncode == 2 and "not waiting" in out.stderr and "Traceback" not in out.stderr
    out = home.cli("approve", "no-such-spec")
    assert out.returncode == 2 and "no-such-spec: no such spec" in out.stderr
    assert home.query("SELECT COUNT(*) FROM iwo_gates") == [(0,)]


def test_a_second_answer_to_one_gate_is_told_the_first_won(home):
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Which DB?"}]}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    daemon.stop()
    assert home.cli("approve", spec_id, check=True).returncode == 0
    second = home.cli("reject", spec_id)
    assert second.returncode == 2 and "already answered: approve" in second.stderr, second.stderr
    home.start()
    home.wait_state(spec_id, "done")
    assert home.spec(spec_id)["gates"][0]["answer"] == "approve"


def test_gate_timeout_applies_the_policy_and_records_it(home):
    home.configure(approvals='timeout = "2s"\non_timeout = "approve"')
    home.scenario({"roles": {"deployer": [{"verdict": "blocker", "question": "Ship?"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    gate = home.spec(spec_id)["gates"][0]
    assert (gate["answer"], gate["answered_via"]) == ("approve", "timeout")
    assert home.role_counts(spec_id)["docs"] == 1


def test_database_and_run_files_are_private(home):
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "done")
    assert stat.S_IMODE(os.stat(home.root / "iwo.sqlite").st_mode) == 0o600
    run_dir = home.root / "runs" / spec_id / "01-planner" / "attempt-1"
    for name in ("prompt.md", "stdout", "stderr", "exit", "pid"):
        assert stat.S_IMODE(os.stat(run_dir / name).st_mode) == 0o600, name
    assert home.query("PRAGMA journal_mode") == [("wal",)]
    serializations = {row[0] for row in home.query("SELECT DISTINCT serialization FROM operation_outputs"
                                                   " WHERE serialization IS NOT NULL")}
    assert serializations == {"portable_json"}
    output = home.query("SELECT json_extract(output, '$.verdict') FROM operation_outputs"
                        " WHERE workflow_uuid = ? AND function_name = 'dispatch' ORDER BY function_id", (spec_id,))
    assert [row[0] for row in output] == ["done", "done", "approve", "pass", "done", "done"]


def test_many_specs_share_the_agent_limit(home):
    home.configure(max_concurrent=2)
    home.scenario({"default": {"sleep": 0.3}})
    ids = [home.submit(home.spec_file(f"s{i}.md", f"# Spec {i}\nbody {i}\n")) for i in range(4)]
    home.start()
    for spec_id in ids:
        home.wait_state(spec_id, "done", timeout=120)
    events = sorted(((line["t"], 1 if line["event"] == "start" else -1)
                     for line in fake_claude.read_log(home.log)), key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2
    assert all(home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS for spec_id in ids)
