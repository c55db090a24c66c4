"""`iwo-lite doctor`: what it checks and how it says what is wrong."""

from __future__ import annotations

import sqlite3


def test_doctor_counts_unfinished_specs_of_another_replay_version(home):
    from iwo_lite.store.checkpoints import REPLAY_VERSION

    home.env["COLUMNS"] = "1000"  # one line per check
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Which way?"}]}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    daemon.stop()
    ok = home.cli("doctor")
    # the one ✗: the daemon is not running while the spec waits for it
    assert [line for line in ok.stdout.splitlines() if line.startswith("✗")] == [
        line for line in ok.stdout.splitlines() if line.startswith("✗ daemon: NOT RUNNING — 1 unfinished")], ok.stdout
    assert f"✓ replay version: {REPLAY_VERSION} (no unfinished specs" in ok.stdout
    conn = sqlite3.connect(home.root / "iwo.sqlite")
    with conn:
        conn.execute("UPDATE workflow_status SET application_version = 'iwo-replay-0' WHERE workflow_uuid = ?",
                     (spec_id,))
    conn.close()
    stranded = home.cli("doctor")
    assert stranded.returncode == 1
    assert "1 unfinished spec(s) of another version (iwo-replay-0: 1)" in stranded.stdout
    assert "run the build that started them" in stranded.stdout
    assert home.spec(spec_id)["state"] == "waiting"  # status still shows it as it was


def test_a_full_profile_as_root_without_is_sandbox_is_said_at_start_up(home):
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("Claude Code refuses --dangerously-skip-permissions only as root")
    home.env["COLUMNS"] = "1000"
    home.env.pop("IS_SANDBOX", None)
    config = (home.root / "config.toml").read_text().replace("[agent]\n", '[agent]\nkind = "claude"\n')
    (home.root / "config.toml").write_text(config + '\n[roles.builder]\npermissions = "full"\n')
    doctor = home.cli("doctor")
    assert doctor.returncode == 1 and "IS_SANDBOX=1" in doctor.stdout and "roles.builder" in doctor.stdout
    refused = home.cli("run", timeout=60)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "IS_SANDBOX=1" in refused.stderr and "roles.builder.permissions" in refused.stderr
    home.env["IS_SANDBOX"] = "1"
    assert "refuses" not in home.cli("doctor").stdout


def test_doctor_names_unfinished_specs_left_under_another_executor_id(home):
    """The hostname (the default executor id) changed with the network: doctor says so, and that
    the next run recovers them."""
    home.env["COLUMNS"] = "1000"
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Which way?"}]}})
    spec_id = home.submit()
    home.env["IWO_EXECUTOR_ID"] = "cafe-wifi"
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    daemon.kill9()
    home.env["IWO_EXECUTOR_ID"] = "home-wifi"
    out = home.cli("doctor")
    assert [line for line in out.stdout.splitlines() if line.startswith("✗")] == [
        line for line in out.stdout.splitlines() if line.startswith("✗ daemon: NOT RUNNING")], out.stdout
    assert ("unfinished specs under executor id(s) cafe-wifi (this machine's is home-wifi): the next "
            "`iwo-lite run` recovers them") in out.stdout
    home.env["IWO_EXECUTOR_ID"] = "cafe-wifi"
    assert "none under an executor id other than cafe-wifi" in home.cli("doctor").stdout


def test_doctor_checks_each_agent_kind_in_use(home, tmp_path):
    home.env["COLUMNS"] = "1000"
    config = (home.root / "config.toml").read_text()
    (home.root / "config.toml").write_text(
        config + '\n[roles.reviewer]\nagent = "codex"\n[agents.codex]\ncommand = ["/nonexistent/codex"]\n')
    out = home.cli("doctor")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(line.startswith("✓ agent command (json): ") for line in lines)
    assert any(line.startswith("✓ agent kind: json for planner, builder, tester, deployer, docs") for line in lines)
    assert any(line.startswith("✗ agent command (codex): /nonexistent/codex not found") for line in lines)
    assert any(line.startswith("✓ agent kind: codex; permissions: reviewer read (read-only)") for line in lines)
    # a CODEX_HOME under $TMPDIR breaks Codex's sandbox: said
    home.env.update(TMPDIR=str(tmp_path), CODEX_HOME=str(tmp_path / "codex-home"))
    assert "lies under $TMPDIR" in home.cli("doctor").stdout
    # a kind nobody uses is not checked
    (home.root / "config.toml").write_text(config)
    assert "(codex)" not in home.cli("doctor").stdout and "agent kind: codex" not in home.cli("doctor").stdout


def test_a_prompt_file_that_cannot_be_read_stops_run_and_is_marked_by_doctor(home):
    """Every prompt of that role would go out without its brief (the old daemon sent "(could not
    read ...)" in its place): `run` refuses to start, one line naming the file and key, exit 2."""
    home.configure(extra=f'[roles.reviewer]\nprompt_file = "{home.root / "reviewer-brief.md"}"\n')
    refused = home.cli("run", timeout=60)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "roles.reviewer.prompt_file" in refused.stderr and "reviewer-brief.md: No such file" in refused.stderr
    doctor = home.cli("doctor")
    assert doctor.returncode == 1 and "✗ " in doctor.stdout and "roles.reviewer.prompt_file" in doctor.stdout
    (home.root / "reviewer-brief.md").write_text("Review the tests first.\n")
    assert "roles.reviewer.prompt_file" not in home.cli("doctor").stdout
    spec_id = home.submit()
    home.start()
    assert home.wait_state(spec_id, "done", "waiting") in ("done", "waiting")
