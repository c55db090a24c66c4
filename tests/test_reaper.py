"""iwo_lite/runs/reaper.py (the wrapper of one attempt) and runs/proctree.py (killing a tree from
outside): every process the agent started is killed.

Real processes, nothing mocked. The fake agent (FAKE_AGENT below, a Python script) starts what
Claude Code's Bash tool leaves behind: a child in a session of its own that ignores SIGTERM, a
child in a process group of its own (also ignoring SIGTERM), and an orphan — a TERM-ignoring
process in its own session whose parent exited at once (like `cmd &` in a `bash -c` that ended).

IWO_REAPER_TEST_WRAPPER=sh runs the same tests against the old `/bin/sh` wrapper (killed the
old way: SIGTERM to its process group, SIGKILL after the grace), to see which of them it fails:
the kill tests (a) (b) (c), the output cap (e) and SIGTERM-while-writing; (f), (g) and the
missing command pin the journal contract both keep; (d) and `stop` test the new kill functions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iwo_lite.runs import reaper

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the subreaper and /proc are Linux's (macOS: see reaper.py)")

REAPER = Path(reaper.__file__).resolve()
PROCTREE = REAPER.parent / "proctree.py"
GRACE = 0.5
SLACK = 1.5  # "within grace + a little"
USE_SH = os.environ.get("IWO_REAPER_TEST_WRAPPER") == "sh"
# today's wrapper, copied from iwo_lite/dispatch.py (WRAPPER)
SH_WRAPPER = (
    'agent_umask=$(umask); umask 077\n'
    'echo $$ > "$IWO_RUN_DIR/pid.wrapper"\n'
    ': > "$IWO_RUN_DIR/stdout"; : > "$IWO_RUN_DIR/stderr"\n'
    '(umask "$agent_umask"; exec "$@") < "$IWO_RUN_DIR/prompt.md" > "$IWO_RUN_DIR/stdout" 2> "$IWO_RUN_DIR/stderr"\n'
    'code=$?\n'
    'echo $code > "$IWO_RUN_DIR/exit.tmp" && mv -f "$IWO_RUN_DIR/exit.tmp" "$IWO_RUN_DIR/exit"\n'
)

FAKE_AGENT = r'''
import json, os, signal, subprocess, sys, time
out = os.environ["FAKE_OUT"]
mode = sys.argv[1]
py = [sys.executable, "-I", "-S", "-c"]
SLEEPER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
ORPHANER = ("import subprocess, sys; p = subprocess.Popen(%r, start_new_session=True, stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL); "
            "print(p.pid)"
            % (py + [SLEEPER],))

def done(pids):
    with open(os.path.join(out, "pids.tmp"), "w") as f:
        json.dump(pids, f)
    os.replace(os.path.join(out, "pids.tmp"), os.path.join(out, "pids.json"))

if mode in ("tree", "tree-exit", "tree-write"):
    session = subprocess.Popen(py + [SLEEPER], start_new_session=True)
    group = subprocess.Popen(py + [SLEEPER], process_group=0)
    orphan = int(subprocess.run(py + [ORPHANER], capture_output=True, text=True).stdout)
    done({"agent": os.getpid(), "session": session.pid, "group": group.pid, "orphan": orphan})
    if mode == "tree-exit":
        sys.exit(5)
    while True:
        if mode == "tree-write":
            print("tick", flush=True)
        time.sleep(0.01)
elif mode == "report":
    status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
    mask = os.umask(0); os.umask(mask)
    open(os.path.join(out, "made"), "w").close()
    print(json.dumps({"stdin": sys.stdin.read(), "umask": mask, "pid": os.getpid(), "pgid": os.getpgid(0),
                      "sid": os.getsid(0), "sigign": status["SigIgn"].strip(), "sigblk": status["SigBlk"].strip(),
                      "run_dir": os.environ.get("IWO_RUN_DIR")}))
    print("to stderr", file=sys.stderr)
    done({"agent": os.getpid()})
    sys.exit(7)
elif mode == "flood":
    total, chunk = int(sys.argv[2]), b"x" * 65536
    written = 0
    while written < total:
        written += os.write(1, chunk[:total - written])
    done({"agent": os.getpid(), "written": written})
elif mode == "flood-lines":  # lines of 100 bytes, then a last line (the stream-json result, say)
    total, line = int(sys.argv[2]), b"y" * 99 + b"\n"
    written = 0
    while written < total:
        written += os.write(1, line * 655)
    written += os.write(1, b'{"type":"result","ok":true}\n')
    done({"agent": os.getpid(), "written": written})
'''


# ------------------------------------------------------------------------------ helpers

def stat(pid: int) -> tuple[str, str] | None:
    """(state, start token) of a process, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            rest = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return rest[0].decode(), rest[19].decode()


class Procs:
    """Processes a test started, by name, pinned to their start times (a reused pid is not them)."""

    def __init__(self):
        self.known: dict[str, tuple[int, str]] = {}
        self.run_dirs: list[str] = []

    def add(self, name: str, pid: int) -> None:
        now = stat(pid)  # None: already gone when the test read its pid (a slow machine): never alive
        self.known[name] = (pid, now[1] if now is not None else None)

    def alive(self, name: str) -> bool:
        pid, start = self.known[name]
        now = stat(pid)
        return start is not None and now is not None and now[0] != "Z" and now[1] == start

    def living(self, names=None) -> list[str]:
        return [name for name in (names or self.known) if self.alive(name)]

    def kill_all(self) -> None:
        for name in self.living():
            os.kill(self.known[name][0], signal.SIGKILL)
        for run_dir in self.run_dirs:  # also what the test never heard of (a fake agent stuck early)
            reaper.kill_tree(0, 0, run_dir=run_dir)


@pytest.fixture
def procs():
    known = Procs()
    yield known
    known.kill_all()  # never leave a sleeper behind, whatever the test said


class Run:
    def __init__(self, tmp: Path, procs: Procs, mode: str, *args: str, grace: float = GRACE,
                 max_output: int | None = None, umask: int | None = None, prompt: str = "the prompt\n",
                 wrapper: str = "sh" if USE_SH else "reaper", files: dict[str, str] | None = None,
                 agent: list[str] | None = None, tee: bool = False, keep: float = 0, stdout=subprocess.DEVNULL,
                 script: Path = REAPER):
        self.dir = tmp / "run"
        self.out = tmp / "out"
        self.dir.mkdir(mode=0o700)
        self.out.mkdir()
        (tmp / "agent.py").write_text(FAKE_AGENT)
        (self.dir / "prompt.md").write_text(prompt)
        for name, text in (files or {}).items():
            (self.dir / name).write_text(text)
        self.procs = procs
        procs.run_dirs.append(str(self.dir))
        self.wrapper = wrapper
        self.grace = grace
        agent = agent or [sys.executable, "-I", "-S", str(tmp / "agent.py"), mode, *args]
        env = {key: value for key, value in os.environ.items() if not key.startswith("IWO_")}
        env.update(IWO_RUN_DIR=str(self.dir), IWO_SPEC_ID="S-1", IWO_ROLE="builder", IWO_ATTEMPT="2",
                   FAKE_OUT=str(self.out))
        if wrapper == "sh":
            argv = ["/bin/sh", "-c", SH_WRAPPER, "iwo-run", *agent]
        elif wrapper == "reaper-by-path":
            options = ["--grace", str(grace)] + ([] if max_output is None else ["--max-output", str(max_output)])
            argv = [sys.executable, "-I", "-S", str(script), *options, "--", *agent]
        else:  # the daemon's way
            argv = reaper.wrapper_argv(agent, grace_s=grace, tee=tee, keep_s=keep,
                                       max_output=reaper.DEFAULT_MAX_OUTPUT if max_output is None else max_output)
        self.proc = subprocess.Popen(argv, env=env, cwd=tmp, start_new_session=True,
                                     umask=-1 if umask is None else umask,
                                     stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL)
        procs.add("wrapper", self.proc.pid)

    def pids(self, timeout: float = 10) -> dict:
        path = self.out / "pids.json"
        end = time.monotonic() + timeout
        while not path.exists():
            assert time.monotonic() < end, "the fake agent never said it was ready"
            assert self.proc.poll() is None or path.exists(), f"wrapper ended early: {self.read('stderr')}"
            time.sleep(0.01)
        pids = json.loads(path.read_text())
        for name, pid in pids.items():
            if name != "written":
                self.procs.add(name, pid)
        return pids

    def read(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text()
        except FileNotFoundError:
            return None

    def wait_exit(self, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        while (text := self.read("exit")) is None and time.monotonic() < end:
            time.sleep(0.005)
        return text

    def terminate(self) -> None:
        """What the daemon does on a timeout: the new way (SIGTERM to the reaper) or the old one."""
        if self.wrapper == "reaper":
            os.kill(self.proc.pid, signal.SIGTERM)
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):  # dispatch.Dispatcher._kill
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            end = time.monotonic() + self.grace
            while time.monotonic() < end and self.proc.poll() is None:
                time.sleep(0.01)

    def wait_gone(self, names, timeout: float) -> list[str]:
        return wait_gone(self.procs, names, timeout)


def wait_gone(procs: Procs, names, timeout: float) -> list[str]:
    """The names still alive after up to `timeout` seconds of waiting for them to go."""
    end = time.monotonic() + timeout
    while (living := procs.living(names)) and time.monotonic() < end:
        time.sleep(0.01)
    return living


TREE = ["agent", "session", "group", "orphan"]


# ------------------------------------------------------------------------------ (a) (b) (c) kills

def test_sigterm_to_the_wrapper_kills_the_whole_tree(tmp_path, procs):
    """(a) a timeout/cancel/stall: SIGTERM to the wrapper; the agent, the child in its own session,
    the child in its own process group and the orphan all die within grace + a little, `exit` is
    written after them, and the TERM-ignoring ones got the full grace before SIGKILL."""
    run = Run(tmp_path, procs, "tree")
    run.pids()
    assert procs.living(TREE) == TREE
    started = time.monotonic()
    run.terminate()
    exit_text = run.wait_exit(GRACE + SLACK)
    elapsed = time.monotonic() - started
    living = run.wait_gone(TREE, 0 if exit_text else GRACE + SLACK)  # at once: `exit` comes last
    assert living == [], f"survived the kill: {living}"
    assert exit_text == "143\n"  # the agent's own status: killed by SIGTERM
    assert GRACE * 0.9 <= elapsed <= GRACE + SLACK
    assert run.proc.wait(timeout=5) in (143, 0 if USE_SH else 143)


def test_agent_killed_alone_its_orphans_are_still_killed(tmp_path, procs):
    """(b) the CLI crashes (SIGKILL of the agent alone): its orphans re-parent to the wrapper,
    which kills them and writes exit = 137 once they are gone."""
    run = Run(tmp_path, procs, "tree")
    pids = run.pids()
    os.kill(pids["agent"], signal.SIGKILL)
    exit_text = run.wait_exit(GRACE + SLACK)
    assert run.wait_gone(TREE, 0 if exit_text else GRACE) == []
    assert exit_text == "137\n"


def test_agent_exits_leaving_background_children_they_are_killed_first(tmp_path, procs):
    """(c) the agent exits 5 by itself, leaving three TERM-ignoring processes: they are killed
    (after the grace) before `exit` = "5" is written — at the moment it appears none is left."""
    run = Run(tmp_path, procs, "tree-exit")
    run.pids()
    exit_text = run.wait_exit(GRACE + SLACK + 5)
    living = procs.living(["session", "group", "orphan"])
    assert exit_text == "5\n"
    assert living == [], f"still running when `exit` was written: {living}"
    assert run.proc.wait(timeout=5) == 5


# ------------------------------------------------------------------------------ (d) kill_tree

def test_kill_tree_after_the_wrapper_was_sigkilled(tmp_path, procs):
    """(d) the wrapper itself is SIGKILLed, then the daemon (or `cancel`) calls kill_tree with the
    pid from pid.wrapper. What is reachable: the agent and everything still parented under it
    (its session's members and their descendants, even in sessions of their own) — and, with
    `run_dir`, every process started with IWO_RUN_DIR=run_dir, so also the orphan that had
    re-parented to the dead wrapper and then to init. First without run_dir: all but the orphan."""
    run = Run(tmp_path, procs, "tree", wrapper="reaper")
    run.pids()
    wrapper_pid = int(run.read("pid.wrapper"))
    assert wrapper_pid == run.proc.pid
    os.kill(wrapper_pid, signal.SIGKILL)
    run.proc.wait(timeout=5)
    assert procs.living(TREE) == TREE  # the wrapper's death killed nothing

    count = reaper.kill_tree(wrapper_pid, GRACE)
    assert count == 3
    assert run.wait_gone(["agent", "session", "group"], 1) == []
    assert procs.living(["orphan"]) == ["orphan"]  # not reachable by session or parent links

    count = reaper.kill_tree(wrapper_pid, GRACE, run_dir=str(run.dir))
    assert count == 1
    assert run.wait_gone(["orphan"], 1) == []
    assert run.read("exit") is None  # nobody wrote it: the caller knows it killed the run


def test_kill_tree_with_run_dir_reaches_everything_at_once(tmp_path, procs):
    """(d) the fallback as the daemon uses it: one call with the run's directory, grace 0."""
    run = Run(tmp_path, procs, "tree", wrapper="reaper")
    run.pids()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(timeout=5)
    started = time.monotonic()
    assert reaper.kill_tree(run.proc.pid, 0, run_dir=str(run.dir)) == 4
    assert run.wait_gone(TREE, 1) == []
    assert time.monotonic() - started < 1.5


def test_kill_tree_never_touches_a_process_that_is_not_the_one_meant(tmp_path, procs):
    """(d) pid reuse: a live process whose start time or run tag does not match is left alone,
    and so are its children; a live root that matches is killed with its tree."""
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "time.sleep(60)")
    stranger = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], start_new_session=True)
    procs.add("stranger", stranger.pid)
    end = time.monotonic() + 5
    while not (children := reaper.descendants(stranger.pid)) and time.monotonic() < end:
        time.sleep(0.01)
    assert len(children) == 1
    procs.add("child", children[0])
    assert reaper.kill_tree(stranger.pid, 0, start_time="not-its-start") == 0
    assert reaper.kill_tree(stranger.pid, 0, run_dir=str(tmp_path / "some-run")) == 0
    assert procs.living(["stranger", "child"]) == ["stranger", "child"]
    assert reaper.kill_tree(stranger.pid, 0, start_time=reaper.start_time(stranger.pid)) == 2
    stranger.wait(timeout=5)
    assert wait_gone(procs, ["child"], 1) == []


def test_stop_asks_the_wrapper_first(tmp_path, procs):
    """stop(run_dir): SIGTERM to the wrapper named in pid.wrapper; the wrapper kills its tree and
    writes `exit`; the sweep after it finds nothing left."""
    run = Run(tmp_path, procs, "tree", wrapper="reaper")
    run.pids()
    assert reaper.stop(run.dir, grace_s=GRACE) == 0
    assert run.read("exit") == "143\n"
    assert procs.living(TREE + ["wrapper"]) == []
    assert run.proc.wait(timeout=5) == 143


# ------------------------------------------------------------------------------ (e) output cap

def test_output_cap_keeps_the_first_bytes_and_keeps_draining(tmp_path, procs):
    """(e) 5 MiB through a 1 MiB cap: `stdout` holds the first 1 MiB, `stdout.cut` the dropped
    byte count, and the agent wrote everything (no block, no EPIPE) and exited 0."""
    size, cap = 5 * 2**20, 2**20
    run = Run(tmp_path, procs, "flood", str(size), max_output=cap)
    assert run.wait_exit(10) == "0\n"
    assert run.pids()["written"] == size
    assert (run.dir / "stdout").stat().st_size == cap
    assert run.read("stdout.cut") == f"{size - cap}\n"


def test_past_the_cap_the_last_line_is_kept_after_the_cut(tmp_path, procs):
    """(e) A stream of lines far over the cap: the head up to the cap, then the output's last line
    on a line of its own (the `result` event: the call is read, not paid again)."""
    cap = 2**20 + 37  # the head ends mid-line
    run = Run(tmp_path, procs, "flood-lines", str(5 * 2**20), max_output=cap)
    assert run.wait_exit(10) == "0\n"
    data = (run.dir / "stdout").read_bytes()
    last = b'{"type":"result","ok":true}\n'
    assert data.endswith(b"\n" + last) and len(data) == cap + 1 + len(last)
    assert data[:cap] == (b"y" * 99 + b"\n") * (cap // 100) + b"y" * (cap % 100)
    assert int(run.read("stdout.cut")) == run.pids()["written"] - cap - len(last)


def test_no_cap_below_it_and_with_zero(tmp_path, procs):
    """(e) under the cap nothing is cut and no marker is written; --max-output 0 = straight to the file."""
    for sub, cap in (("under", 2**20), ("zero", 0)):
        (tmp_path / sub).mkdir()
        run = Run(tmp_path / sub, procs, "flood", str(300_000), max_output=cap)
        assert run.wait_exit(10) == "0\n"
        assert (run.dir / "stdout").read_bytes() == b"x" * 300_000
        assert run.read("stdout.cut") is None


# ------------------------------------------------------------------------------ (f) (g) the journal

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_umask(tmp_path, procs, umask):
    """(f) the agent runs with the caller's umask; the run's own files are 0600 whatever it is."""
    run = Run(tmp_path, procs, "report", umask=umask)
    assert run.wait_exit(10) == "7\n"
    report = json.loads(run.read("stdout"))
    assert report["umask"] == umask
    assert (run.out / "made").stat().st_mode & 0o777 == 0o666 & ~umask
    for name in ("pid.wrapper", "stdout", "stderr", "exit"):
        assert (run.dir / name).stat().st_mode & 0o777 == 0o600, name


def test_journal_files(tmp_path, procs):
    """(g) pid.wrapper = the wrapper's pid; stdout/stderr truncated (stale content from an earlier
    start is gone) and filled by the agent; stdin = prompt.md; exit = its status (temp + rename,
    nothing left over); the agent in the wrapper's session and process group with no signal
    ignored or blocked (as under /bin/sh), IWO_RUN_DIR passed on."""
    stale = {"stdout": "stale output " * 1000, "stderr": "stale errors " * 1000}
    run = Run(tmp_path, procs, "report", prompt="line one\nline two\n", files=stale,
              wrapper="sh" if USE_SH else "reaper-by-path")
    assert run.wait_exit(10) == "7\n"
    assert run.proc.wait(timeout=5) in (7, 0)  # the reaper exits with the status; sh with mv's
    assert run.read("pid.wrapper") == f"{run.proc.pid}\n"
    report = json.loads(run.read("stdout"))
    assert report["stdin"] == "line one\nline two\n"
    assert (report["pgid"], report["sid"]) == (run.proc.pid, run.proc.pid)
    assert report["run_dir"] == str(run.dir)
    assert run.read("stderr") == "to stderr\n"
    assert sorted(p.name for p in run.dir.iterdir()) == ["exit", "pid.wrapper", "prompt.md", "stderr", "stdout"]


def test_agent_signal_state_is_the_default(tmp_path, procs):
    """(g) what the agent sees at exec: no signal ignored (Python, which runs the reaper, ignores
    SIGPIPE and SIGXFSZ), none blocked, none caught — as when /bin/sh started it."""
    run = Run(tmp_path, procs, "cat", agent=["cat", "/proc/self/status"])
    assert run.wait_exit(10) == "0\n"
    status = dict(line.split(":\t", 1) for line in run.read("stdout").splitlines() if ":\t" in line)
    # what this test's own process inherited ignored stays ignored (a job started in the background
    # by a non-interactive shell ignores SIGINT and SIGQUIT); Python's own SIGPIPE/SIGXFSZ do not pass
    inherited = int(dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
                         if ":\t" in line)["SigIgn"], 16) & ~((1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1)))
    assert int(status["SigIgn"], 16) == inherited, ("SigIgn", status["SigIgn"])
    for key in ("SigBlk", "SigCgt"):
        assert int(status[key], 16) == 0, (key, status[key])


def test_tee_and_keep_for_a_tmux_pane(tmp_path, procs):
    """--tee copies the agent's output to the wrapper's own stdout (a pane's live view) and
    --keep stays after `exit` is written, saying how the attempt ended; SIGTERM ends the stay."""
    if USE_SH:
        pytest.skip("the sh wrapper has no --tee/--keep")
    run = Run(tmp_path, procs, "report", tee=True, keep=30, stdout=subprocess.PIPE)
    assert run.wait_exit(10) == "7\n"
    assert run.proc.poll() is None  # staying
    os.kill(run.proc.pid, signal.SIGTERM)
    shown = run.proc.stdout.read().decode()
    assert run.proc.wait(timeout=2) == 7
    assert run.read("stdout").rstrip("\n") in shown.splitlines()
    assert "to stderr\n" in shown
    assert shown.endswith("\n[iwo-lite] S-1 builder attempt 2 exited 7\n")


def test_a_missing_command_is_status_127(tmp_path):
    """The agent cannot be started: the reason on stderr, exit = 127 (what /bin/sh wrote)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "prompt.md").write_text("x")
    argv = ([sys.executable, "-I", "-S", str(REAPER), "--", "no-such-agent-command"] if not USE_SH else
            ["/bin/sh", "-c", SH_WRAPPER, "iwo-run", "no-such-agent-command"])
    subprocess.run(argv, env=dict(os.environ, IWO_RUN_DIR=str(run_dir)), timeout=10, check=False)
    assert (run_dir / "exit").read_text() == "127\n"
    assert "no-such-agent-command" in (run_dir / "stderr").read_text()


def test_sigterm_while_the_agent_writes_past_the_cap(tmp_path, procs):
    """SIGTERM while the agent keeps writing to the capped pipe: still every process is killed
    and `exit` written (the wrapper keeps draining during the grace)."""
    run = Run(tmp_path, procs, "tree-write", max_output=100)
    run.pids()
    end = time.monotonic() + 5
    while (run.dir / "stdout").stat().st_size < 100 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.1)  # and past the cap
    run.terminate()
    exit_text = run.wait_exit(GRACE + SLACK)
    assert run.wait_gone(TREE, 0 if exit_text else GRACE) == []
    assert exit_text == "143\n"
    assert (run.dir / "stdout").read_text() in ("tick\n" * 20, "tick\n" * 21)  # the last line kept after the cut
    assert int(run.read("stdout.cut")) >= 5


def test_the_fallback_without_a_subreaper(tmp_path, procs):
    """What macOS gets, on Linux: a copy of reaper.py with LINUX = False (no prctl, `ps` instead
    of /proc, no run tag). SIGTERM to it kills the agent and what is still parented under it
    (here the children in their own session and group), but the orphan has re-parented to init
    and escapes; after a SIGKILL of the wrapper, kill_tree finds the same three through the dead
    wrapper's process group."""
    if USE_SH:
        pytest.skip("tests the reaper's fallback")
    source = PROCTREE.read_text()
    assert source.count('LINUX = sys.platform.startswith("linux")') == 1
    fallback = tmp_path / "fallback" / "reaper.py"  # run by path: it imports the proctree.py and streams.py beside it
    fallback.parent.mkdir()
    fallback.write_text(REAPER.read_text())
    (fallback.parent / "streams.py").write_text((REAPER.parent / "streams.py").read_text())
    fallback_tree = fallback.parent / "proctree.py"
    fallback_tree.write_text(source.replace('LINUX = sys.platform.startswith("linux")', "LINUX = False"))
    for name, kill in (("term", "SIGTERM"), ("kill", "SIGKILL")):
        (tmp_path / name).mkdir()
        run = Run(tmp_path / name, procs, "tree", wrapper="reaper-by-path", script=fallback)
        run.pids()
        os.kill(run.proc.pid, getattr(signal, kill))
        run.proc.wait(timeout=GRACE + SLACK + 5)
        if kill == "SIGKILL":
            spec = importlib.util.spec_from_file_location("proctree_fallback", fallback_tree)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert module.kill_tree(run.proc.pid, GRACE, run_dir=str(run.dir)) == 3
        else:
            assert run.read("exit") == "143\n"
        assert wait_gone(procs, ["agent", "session", "group"], 1) == [], name
        assert procs.living(["orphan"]) == ["orphan"], name
        os.kill(procs.known["orphan"][0], signal.SIGKILL)


def test_old_wrapper_leaves_the_session_child_behind(tmp_path, procs):
    """The control: with today's /bin/sh wrapper and its kill (process group SIGTERM, SIGKILL),
    the fake agent's children in their own session and process group and the orphan survive —
    the bug this fixes (the real CLI's Bash tool leaves `sleep` running the same way)."""
    run = Run(tmp_path, procs, "tree", wrapper="sh")
    run.pids()
    run.terminate()
    run.proc.wait(timeout=5)
    time.sleep(0.2)
    assert procs.living(TREE) == ["session", "group", "orphan"]
