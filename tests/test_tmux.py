"""agent.dispatch = "tmux": each dispatch in a window of tmux session `iwo`, re-attached after a
crash exactly like subprocess mode. Uses a private tmux server (TMUX_TMPDIR), never the user's."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import DEFAULT_ROLE_COUNTS, wait_for
import fake_claude

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"),
                                reason="tmux is not installed (CI installs it)")


@pytest.fixture
def tmux_home(home, tmp_path):
    socket_dir = tmp_path / "tmux"
    socket_dir.mkdir()
    home.env["TMUX_TMPDIR"] = str(socket_dir)
    home.env.pop("TMUX", None)
    config = (home.root / "config.toml").read_text().replace("[agent]\n", '[agent]\ndispatch = "tmux"\ntmux_keep = "30s"\n')
    (home.root / "config.toml").write_text(config)
    yield home
    subprocess.run(["tmux", "kill-server"], env=home.env, capture_output=True)


def tmux(home, *args: str) -> str:
    return subprocess.run(["tmux", *args], env=home.env, capture_output=True, text=True).stdout


def test_each_dispatch_gets_a_window_and_its_output_is_visible_and_captured(tmux_home):
    home = tmux_home
    home.scenario({"roles": {"tester": [{"sleep": 2.0}]}})
    spec_id = home.submit()
    home.start()
    wait_for(lambda: f"{spec_id}:tester" in tmux(home, "list-windows", "-t", "iwo", "-F", "#{window_name}"), 60)
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    names = tmux(home, "list-windows", "-t", "iwo", "-F", "#{window_name}").split()
    assert f"{spec_id}:planner" in names and f"{spec_id}:docs" in names  # finished windows stay readable
    screen = tmux(home, "capture-pane", "-p", "-t", f"iwo:{names.index(f'{spec_id}:planner')}")
    assert '"type": "result"' in screen or '"type":"result"' in screen
    assert f"{spec_id} planner attempt 1 exited 0" in screen
    stdout = home.root / "runs" / spec_id / "01-planner" / "attempt-1" / "stdout"
    assert '"is_error": false' in stdout.read_text() or '"is_error":false' in stdout.read_text()


def test_kill9_mid_run_in_tmux_collects_the_run_never_restarts_it(tmux_home):
    home = tmux_home
    home.scenario({"roles": {"tester": [{"sleep": 2.0}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: any(l["role"] == "tester" for l in fake_claude.read_log(home.log)), 60)
    daemon.kill9()
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    assert home.query("SELECT reattached FROM iwo_attempts WHERE spec_id = ? AND role = 'tester'", (spec_id,)) == [(1,)]


def test_tmux_timeout_kills_the_window_process_group(tmux_home):
    home = tmux_home
    config = (home.root / "config.toml").read_text().replace('timeout = "60s"', 'timeout = "2s"').replace(
        "retries = 1", "retries = 0")
    (home.root / "config.toml").write_text(config)
    home.scenario({"roles": {"planner": [{"mode": "spawn_child"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    from conftest import pid_alive
    line = next(l for l in fake_claude.read_log(home.log) if l["role"] == "planner")
    assert not pid_alive(line["pid"]) and not pid_alive(line["child_pid"])
    assert "timed out" in home.spec(spec_id)["question"]


def test_missing_tmux_is_a_clear_error_at_start_up(tmux_home, tmp_path):
    home = tmux_home
    bare = tmp_path / "bin"
    bare.mkdir()
    env = dict(home.env, PATH=str(bare))
    import sys
    out = subprocess.run([sys.executable, "-m", "iwo_lite", "run"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "tmux is not installed" in out.stderr and out.stderr.count("\n") == 1
    doctor = subprocess.run([sys.executable, "-m", "iwo_lite", "doctor"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "✗ tmux: not found" in doctor.stdout
