"""What reaches a person: every command's output is terminal-safe, a closed pipe ends quietly,
`status --watch` into a pipe, output to a pipe not cut at 80 columns; and a newcomer's path
(runnable suggestions, a home made 0700, `clean --branches` keeping unmerged work)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys

import fake_claude
from conftest import IwoHome, wait_for
from test_worktrees import make_home

# an escape (clear screen, red), a bidi override, a C1 control: none may reach the terminal
HOSTILE = "\x1b[2J\x1b[31mred\u202eevil\x9b6n"
UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def assert_safe(result: subprocess.CompletedProcess, what: str) -> None:
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        found = UNSAFE.findall(text)
        assert not found, f"{what}: {name} holds {found!r}:\n{text[-2000:]}"


def test_every_commands_output_is_terminal_safe(home: IwoHome, tmp_path):
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": f"Ship {HOSTILE}?",
                                           "summary": f"looked {HOSTILE}"}]}})
    spec_id = home.submit(home.spec_file("evil.md", f"# Title {HOSTILE}\nbody {HOSTILE}\n"), "evil")
    home.start()
    home.wait_state(spec_id, "waiting")
    runs = {
        "status": home.cli("status"),
        "status --all": home.cli("status", "--all"),
        "status ID": home.cli("status", spec_id),
        "status --json": home.cli("status", "--json"),
        "status ID --json": home.cli("status", spec_id, "--json"),
        "status --sql (a column name)": home.cli("status", "--sql", f'SELECT title AS "t{HOSTILE}" FROM iwo_specs'),
        "status --sql --json": home.cli("status", "--sql", f'SELECT title AS "t{HOSTILE}" FROM iwo_specs', "--json"),
        "doctor": home.cli("doctor"),
        "submit (a missing file)": home.cli("submit", str(tmp_path / f"no{HOSTILE}.md")),
        "approve (an unknown id)": home.cli("approve", f"x{HOSTILE}"),
        "status (an unknown id)": home.cli("status", f"x{HOSTILE}"),
        "fork (a bad role)": home.cli("fork", spec_id, "--from", f"r{HOSTILE}"),
        "a usage error (an unknown flag, echoed)": home.cli("status", f"--x{HOSTILE}"),
        "a usage error (a bad choice)": home.cli("service", f"x{HOSTILE}"),
        "logs ID": home.cli("logs", spec_id),
    }
    for what, result in runs.items():
        assert_safe(result, what)
    assert "red" in runs["status"].stdout and "evil" in runs["status ID"].stdout
    assert json.loads(runs["status --json"].stdout)[0]["title"] == f"Title {HOSTILE}"  # JSON keeps it, escaped
    assert "no such spec" in runs["approve (an unknown id)"].stderr


def _big_output_cmd(home: IwoHome, *args: str) -> subprocess.CompletedProcess:
    """`iwo-lite ARGS | head -1` in a shell: the command's exit status and stderr, the head's stdout."""
    import shlex

    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "iwo_lite", *args])
    return subprocess.run(["bash", "-c", f"{command} 2>err | head -c 100 >/dev/null; s=${{PIPESTATUS[0]}};"
                                         " cat err >&2; exit $s"],
                          env=home.env, capture_output=True, text=True, timeout=60, cwd=home.root)


def test_a_closed_pipe_ends_every_command_quietly(home: IwoHome):
    home.submit()
    big = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9000) SELECT i, 'x' AS pad FROM n"
    for args in (("status", "--sql", big), ("status", "--sql", big, "--json"), ("--help",), ("status", "--all"),
                 ("doctor",), ("status", "--json")):
        alone = home.cli(*args)  # the same command, its output read to the end
        result = _big_output_cmd(home, *args)
        # its own status, or 0 when the closed pipe cut it short (the reader had what it wanted)
        assert result.returncode in (0, alone.returncode) and result.stderr == alone.stderr, (args, result, alone.stderr)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    # the endless ones: the reader leaving is how they end, quietly and with 0
    for args in (("status", "--watch"), ("status", "--all", "--watch")):
        result = _big_output_cmd(home, *args)
        assert result.returncode == 0 and result.stderr == "", (args, result)


def test_watch_into_a_pipe_prints_plain_snapshots(home: IwoHome):
    home.submit()
    proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", "status", "--watch"], env=home.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: proc.poll() is None and (home.root / "iwo.sqlite").exists(), 10)
    import time
    time.sleep(2.5)  # two or three snapshots, one a second
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert out.count("iwo-lite specs") >= 2 and "\x1b" not in out, out[:500]


def test_output_to_a_pipe_is_not_cut_at_80_columns(home: IwoHome):
    long_title = "A spec whose title is longer than eighty columns would allow, and then some more words"
    home.submit(home.spec_file("long.md", f"# {long_title.strip()}\nbody\n"), "long")
    env = {k: v for k, v in home.env.items() if k != "COLUMNS"}
    shown = subprocess.run([sys.executable, "-m", "iwo_lite", "status"], env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)  # no terminal anywhere (rich would fall back to 80)
    assert long_title.strip() in shown.stdout, shown.stdout
    sql = subprocess.run([sys.executable, "-m", "iwo_lite", "status", "--sql", "SELECT id, title, text FROM iwo_specs"],
                         env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert long_title.strip() in sql.stdout, sql.stdout
    narrow = subprocess.run([sys.executable, "-m", "iwo_lite", "status"], env=dict(env, COLUMNS="70"),
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 70 and "…" in narrow.stdout


def test_a_home_the_user_made_is_made_private(tmp_path):
    home = IwoHome(tmp_path / "home")
    try:
        os.chmod(home.root, 0o755)  # as `mkdir ~/.iwo-lite` leaves it
        home.submit()
        assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    finally:
        home.cleanup()


def test_the_demo_suggests_commands_that_run_as_printed(home: IwoHome):
    out = home.cli("demo", timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    explore = next(line for line in out.stdout.splitlines() if line.startswith("explore:"))
    command = explore.split(":", 1)[1].strip()
    ran = subprocess.run(["bash", "-c", command], env={k: v for k, v in home.env.items() if k != "IWO_HOME"},
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "demo-greet" in ran.stdout, (command, ran.stderr)


def test_clean_branches_keeps_unmerged_work_without_force(tmp_path):
    home, work = make_home(tmp_path, top='workspace = "worktree"')
    home.scenario({"roles": {"builder": [{"write": {"feature.txt": "built\n"}}]}})
    try:
        home.submit(home.spec_file("keep.md", "# keep\nbody\n"), "keep")
        home.start()
        home.wait_state("keep", "done")
        out = home.cli("clean", "--branches", check=True)
        assert "iwo/keep" in work.branches() and "not merged" in out.stdout and "--force" in out.stdout
        out = home.cli("clean", "--branches", "--force", check=True)
        assert "iwo/keep" not in work.branches() and "deleted branch iwo/keep" in out.stdout
    finally:
        home.cleanup()


def test_first_real_spec_walkthrough(tmp_path):
    """The README's "Your first real spec", command for command, on a scratch repository, with a
    fake `claude` first on PATH (the sandbox on when bubblewrap is here, as for a user)."""
    scratch_home = tmp_path / "user"
    repo = scratch_home / "src" / "myapp"
    repo.mkdir(parents=True)
    git = ["git", "-c", "user.name=me", "-c", "user.email=me@localhost", "-C", str(repo)]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    (repo / "README.md").write_text("# myapp\n")
    subprocess.run(git + ["add", "README.md"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "first"], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "claude"
    scenario = json.dumps({"roles": {"builder": [{"write": {"hello.py": "print('Hello!')\n"}}]}})
    # the scenario written where the agent can read it (inside the sandbox this is its private /tmp)
    shim.write_text(f"#!/bin/sh\nf=\"${{TMPDIR:-/tmp}}/walkthrough-$$.json\"\ncat > \"$f\" <<'EOF'\n{scenario}\nEOF\n"
                    f"FAKE_CLAUDE_SCENARIO=\"$f\" exec {sys.executable} {fake_claude.SCRIPT} \"$@\"\n")
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IWO_", "FAKE_CLAUDE"))}
    env.update(HOME=str(scratch_home), PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:{env['PATH']}",
               TMUX_TMPDIR=str(tmp_path), IWO_QUEUE_POLL_S="0.5",
               GIT_AUTHOR_NAME="me", GIT_AUTHOR_EMAIL="me@localhost", GIT_COMMITTER_NAME="me",
               GIT_COMMITTER_EMAIL="me@localhost")
    readme = (fake_claude.SCRIPT.parent.parent / "README.md").read_text()
    block = readme.split("## Your first real spec", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    script = block.replace('export PATH="$PWD/.venv/bin:$PATH"\n', "")
    script = script.replace("iwo-lite run &", "iwo-lite run > daemon.log 2>&1 &\necho $! > daemon.pid")
    script = script.replace("iwo-lite status hello-3f2a9c1b", 'iwo-lite status "$(tail -n 1 submitted)"')
    script = script.replace("iwo-lite submit hello.md", "iwo-lite submit hello.md | tee submitted")
    script = script.replace("iwo-lite doctor ", "iwo-lite doctor || true ")
    work = tmp_path / "cwd"
    work.mkdir()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=work, capture_output=True,
                          text=True, timeout=120)
    daemon_pid = int((work / "daemon.pid").read_text())
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        spec_id = (work / "submitted").read_text().split()[-1]
        status = lambda: json.loads(subprocess.run(["iwo-lite", "status", spec_id, "--json"], env=env,
                                                   capture_output=True, text=True).stdout)[0]
        wait_for(lambda: status()["state"] == "done", 90, lambda: f"{status()}\n{(work / 'daemon.log').read_text()}")
        shown = subprocess.run(["git", "-C", str(repo), "show", f"iwo/{spec_id}:hello.py"], capture_output=True,
                               text=True)
        assert shown.stdout == "print('Hello!')\n"
        assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                              text=True).stdout == ""  # the user's checkout is as it was
    finally:
        os.kill(daemon_pid, signal.SIGTERM)
