"""The command line as a user's script sees it: exit codes, one-line errors, ids, empty homes."""

from __future__ import annotations

import json

from conftest import wait_for



def test_submit_prints_the_id_last_and_the_same_id_twice_starts_nothing_new(home):
    path = home.spec_file()
    first = home.cli("submit", str(path), check=True)
    second = home.cli("submit", str(path), check=True)
    spec_id = first.stdout.strip().splitlines()[-1]
    assert second.stdout.strip().splitlines()[-1] == spec_id
    assert "already exists" in second.stderr
    assert spec_id.startswith("spec-") and len(spec_id) == len("spec-") + 8
    assert home.cli("submit", str(path), "--id", "mine", check=True).stdout.strip() == "mine"
    assert home.query("SELECT COUNT(*) FROM iwo_specs WHERE state = 'queued'") == [(2,)]
    assert [s["state"] for s in home.specs()] == ["queued", "queued"]
    home.start()
    home.wait_state(spec_id, "done")
    home.wait_state("mine", "done")
    assert home.invocations("planner") == 2
    assert home.cli("submit", str(path), check=True).returncode == 0
    assert home.invocations("planner") == 2


def test_bad_spec_files_exit_2_with_one_line_naming_the_file(home):
    empty = home.spec_file("empty.md", "  \n")
    binary = home.root / "bin.md"
    binary.write_bytes(b"\x00\x01\x02")
    latin = home.root / "latin.md"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    huge = home.spec_file("huge.md", "x" * (1024 * 1024 + 1))
    for path, words in ((home.root / "missing.md", "no such file"), (empty, "empty"), (binary, "binary"),
                        (latin, "not UTF-8"), (huge, "limit"), (home.root, "directory")):
        out = home.cli("submit", str(path))
        assert out.returncode == 2, path
        assert out.stderr.count("\n") == 1 and str(path) in out.stderr and words in out.stderr
        assert "Traceback" not in out.stderr
    out = home.cli("submit", str(home.spec_file()), "--id", "../escape")
    assert out.returncode == 2 and "--id '../escape'" in out.stderr


def test_bad_config_exits_2_naming_file_and_key(home):
    (home.root / "config.toml").write_text('[agent]\ntimeout = "soon"\n')
    out = home.cli("submit", str(home.spec_file()))
    assert out.returncode == 2
    assert "config.toml: agent.timeout:" in out.stderr and out.stderr.count("\n") == 1


def test_status_on_a_missing_database_is_empty(home):
    assert not (home.root / "iwo.sqlite").exists()
    assert json.loads(home.cli("status", "--json", check=True).stdout) == []
    out = home.cli("status", check=True)
    assert "iwo-lite specs" in out.stdout
    assert not (home.root / "iwo.sqlite").exists()


def test_version_and_help(home):
    assert home.cli("--version", check=True).stdout.startswith("iwo-lite ")
    help_text = home.cli("--help", check=True).stdout
    for command in ("run", "submit", "status", "approve", "reject", "revise", "cancel", "resume", "fork",
                    "demo", "doctor"):
        assert command in help_text
    assert home.cli().returncode == 2


def test_demo_runs_the_whole_loop_offline(home):
    out = home.cli("demo", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo finished" in out.stdout and "Traceback" not in out.stderr
    assert "agent_failed" not in out.stdout  # no agent failed on the way (the demo never approves past one)


def test_the_demo_says_so_and_exits_1_when_an_agent_fails(home, tmp_path):
    """A broken sandbox here (a `bwrap` that passes the probe but runs nothing): every agent fails.
    The demo stops at the first agent_failed gate instead of approving past it, names the role and
    the error, and exits 1; it never says "demo finished"."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text('#!/bin/sh\nfor last; do :; done\n[ "$last" = true ] && exit 0\n'
                                'echo "bwrap: cannot confine here" >&2\nexit 1\n')
    (fake / "bwrap").chmod(0o755)
    home.env["PATH"] = f"{fake}:{home.env['PATH']}"
    out = home.cli("demo", timeout=180)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "demo failed: The planner agent failed" in out.stdout and "cannot confine here" in out.stdout and "demo finished" not in out.stdout
    assert "Traceback" not in out.stderr


def test_cancel_resume_and_fork(home):
    home.scenario({"roles": {"tester": [{"verdict": "blocker", "question": "Skip flaky?"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    assert home.cli("cancel", spec_id, check=True).returncode == 0
    assert home.state(spec_id) == "cancelled"
    refused = home.cli("approve", spec_id)
    assert refused.returncode == 2 and "not waiting" in refused.stderr
    out = home.cli("resume", "nope")
    assert out.returncode == 2 and "nope: no such spec" in out.stderr
    home.cli("resume", spec_id, check=True)
    home.wait_state(spec_id, "waiting")
    home.cli("approve", spec_id, check=True)
    home.wait_state(spec_id, "done")
    assert home.cli("resume", spec_id).returncode == 2
    assert home.cli("cancel", spec_id).returncode == 2
    before = home.role_counts(spec_id)
    out = home.cli("fork", spec_id, "--from", "deployer", check=True)
    fork_id = out.stdout.strip().splitlines()[-1]
    assert fork_id == f"{spec_id}-fork1"
    home.wait_state(fork_id, "done")
    assert home.role_counts(spec_id) == before  # the original's calls were replayed, not repeated
    assert home.role_counts(fork_id) == {"deployer": 1, "docs": 1}
    fork = home.spec(fork_id)
    assert fork["parent_id"] == spec_id
    bad = home.cli("fork", spec_id, "--from", "painter")
    assert bad.returncode == 2 and "--from 'painter'" in bad.stderr


def test_doctor_reports_each_check(home):
    out = home.cli("doctor")
    assert out.returncode == 0 and "daemon: not running (nothing waits for it)" in out.stdout, out.stdout
    home.submit()
    out = home.cli("doctor")
    assert "database integrity: ok" in out.stdout and "database journal: wal" in out.stdout
    assert "agent command" in out.stdout
    # a stopped daemon with a spec waiting for it is the one thing wrong: ✗, and status says it too
    assert out.returncode == 1 and [line for line in out.stdout.splitlines() if line.startswith("✗")] == [
        line for line in out.stdout.splitlines() if line.startswith("✗ daemon: NOT RUNNING — 1 unfinished")]
    assert "daemon: NOT RUNNING — 1 unfinished spec(s) wait for it" in home.cli("status").stdout
    spec_id = home.query("SELECT id FROM iwo_specs")[0][0]
    assert "daemon: NOT RUNNING" in home.cli("status", spec_id).stdout  # one spec's trace says it too
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    assert f"daemon: running (pid {daemon.pid})" in home.cli("status").stdout
    assert "daemon" not in home.cli("status", spec_id).stdout.splitlines()[0]  # running: the trace as before


def test_usage_errors_are_one_line_and_exit_2(home):
    for args in (("submit",), ("status", "--bogus"), ("nope",), ("revise", "x"), ("fork", "x", "--from")):
        out = home.cli(*args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--help" in out.stderr, (args, out.stderr)
    # an empty ID or path is a mistake in a script, never "all specs" or "the default": every command
    for args in (("status", ""), ("status", " ", "--json"), ("approve", ""), ("reject", ""), ("revise", "", "-m", "x"),
                 ("cancel", ""), ("resume", ""), ("fork", "", "--from", "builder"), ("diff", ""), ("logs", "\t"),
                 ("clean", "s1", ""), ("submit", ""), ("--config", "", "status"), ("--home", "", "status")):
        out = home.cli(*args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (args, out.stderr)
        assert "empty string" in out.stderr or "got '" in out.stderr, (args, out.stderr)
        assert out.stdout == "", (args, out.stdout)


def test_submit_dash_reads_the_spec_from_standard_input(home):
    """`iwo-lite submit -`: the spec from stdin, checked like a file, its id by the text rule (the
    same text twice starts nothing new); `./-` is a file named "-"."""
    import subprocess
    import sys

    def submit(*args: str, text: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "iwo_lite", "submit", *args], env=home.env, input=text,
                              capture_output=True, timeout=60)

    first = submit("-", text=b"# Greet from a pipe\n\nSay hello.\n")
    spec_id = first.stdout.decode().split()[-1]
    assert first.returncode == 0 and spec_id.startswith("greet-from-a-pipe-"), first
    again = submit("-", text=b"# Greet from a pipe\n\nSay hello.\n")
    assert again.returncode == 0 and again.stdout.decode().split()[-1] == spec_id and b"already exists" in again.stderr
    assert submit("-", "--id", "piped", text=b"# Other\n").stdout.decode().split()[-1] == "piped"
    for bad, words in ((b"", b"spec is empty"), (b"\xff\xfe#", b"not UTF-8"), (b"# x\0y", b"binary")):
        refused = submit("-", text=bad)
        assert refused.returncode == 2 and refused.stderr.startswith(b"iwo-lite: - (standard input): "), refused
        assert words in refused.stderr and b"Traceback" not in refused.stderr
    (home.root / "-").write_text("# A file named dash\n")
    named = subprocess.run([sys.executable, "-m", "iwo_lite", "submit", "./-"], env=home.env, cwd=home.root,
                           capture_output=True, text=True, timeout=60)
    assert named.returncode == 0, named.stderr
    assert home.query("SELECT title FROM iwo_specs ORDER BY title") == [
        ("A file named dash",), ("Greet from a pipe",), ("Other",)]
