"""`iwo-lite service install`: the systemd unit and the launchd plist that keep the daemon running."""

from __future__ import annotations

import plistlib
import subprocess
import sys
from pathlib import Path

import pytest


def unit_lines(text: str) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            lines.setdefault(key, []).append(value)
    return lines


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are written on Linux")
def test_service_install_print_gives_a_systemd_user_unit(home, tmp_path):
    env = dict(home.env, HOME=str(tmp_path / "user"))
    console_script = Path(sys.executable).parent / "iwo-lite"
    cases = [([sys.executable, "-m", "iwo_lite"], f"{sys.executable} -m iwo_lite")]
    if console_script.exists():
        cases.append(([str(console_script)], str(console_script)))
    for argv, launcher in cases:
        proc = subprocess.run([*argv, "service", "install", "--print"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        unit = unit_lines(proc.stdout)
        assert unit["ExecStart"] == [f"{launcher} --home {home.root} run"]
        assert unit["Restart"] == ["on-failure"] and unit["KillMode"] == ["process"]
        assert unit["WorkingDirectory"] == [str(tmp_path)] and unit["WantedBy"] == ["default.target"]
        assert not (tmp_path / "user" / ".config").exists()  # --print writes nothing

    written = subprocess.run([sys.executable, "-m", "iwo_lite", "service", "install"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    unit_file = tmp_path / "user" / ".config" / "systemd" / "user" / "iwo-lite.service"
    assert f"wrote {unit_file}" in written.stdout and "systemctl --user" in written.stdout
    assert "ExecStart=" in unit_file.read_text()


def test_launchd_plist_keeps_the_daemon_alive(tmp_path, monkeypatch):
    from iwo_lite.config import load_config
    from iwo_lite.service import render, service_file

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "iwo")
    plist = plistlib.loads(render(config, platform="darwin", argv0="-c").encode())
    assert plist["Label"] == "dev.iwo-lite" and plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == [sys.executable, "-m", "iwo_lite", "--home", str(tmp_path / "iwo"), "run"]
    assert plist["AbandonProcessGroup"] is True and plist["WorkingDirectory"] == str(tmp_path)
    assert service_file("darwin") == tmp_path / "Library" / "LaunchAgents" / "dev.iwo-lite.plist"
