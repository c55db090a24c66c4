"""The journal of one attempt: its run directory, and who its process is.

Each attempt lives in `runs/<spec>/<NN>-<role>/attempt-<k>/`:

    prompt.md    what went on the agent's stdin
    launch       written just before the process is started: the UTC time, and the monotonic
                 clock with the boot it belongs to (time limits count time the machine was awake)
    pid.wrapper  written by the wrapper as its first act (its own pid)
    pid          "<pid> <start-time>", written by the daemon once the process runs
    stdout       the agent's stdout (Claude Code's JSON result)
    stderr       the agent's stderr
    exit         the agent's exit status, written (temp + rename) by the wrapper when it ends
    stdout.cut   written by the wrapper when stdout went over agent.max_output (bytes dropped)
    timed_out    written before a run that overran agent.timeout is killed
    stalled      written before a run that printed nothing for agent.stall_timeout is killed
    cancelled    written before a run is killed by `iwo-lite cancel`
    over_budget  written before a run whose cost so far reached what the spec may still spend is
                 killed (an agent kind whose CLI has no budget limit of its own: Codex)
    sandbox      written when the attempt runs in the OS sandbox (iwo_lite/sandbox.py): JSON
                 {"hidden", "visible", "branch"}: to tell its refusals apart, and the branch it may
                 move, applied when it is collected (sandbox.sync_branch)
    git-refs/    in the sandbox: the attempt's private copy of its branch's ref directory
    git-logs/    ... and of that branch's reflog directory

The directory is the truth about the attempt: a finished run (an exit status, or a kill
marker) is collected and never started again; a live run is one whose pid *and* start time
match the recorded ones (so a reused pid is never mistaken for it); only a run that never
started is started. `AwakeClock`: how long a run has gone and been quiet in time the machine was
awake (the limits of runs/dispatcher.py), and whether its watcher just woke up. Standard library only.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from pathlib import Path

from iwo_lite.text import clean

HOST = socket.gethostname()


def boot_id() -> str:
    """This boot of the machine (Linux); "" elsewhere. A monotonic time means something only in its boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def launch_text(now_iso: str) -> str:
    """The `launch` file: when (UTC), and the monotonic clock of this boot (time.monotonic: on Linux
    CLOCK_MONOTONIC, on macOS mach time; neither advances while the machine sleeps)."""
    return f"{now_iso}\nmonotonic {time.monotonic():.3f} {boot_id() or '-'}\n"
KILL_MARKERS = ("timed_out", "stalled", "cancelled", "over_budget")
WAKE_GAP_S = 5.0  # more time than this passed beyond a watcher's own sleep: the machine (or it) slept


def process_start_time(pid: int) -> str | None:
    """An opaque start-time token for `pid` (None if it is not running, a zombie included); guards pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X"):  # a zombie waiting for its parent (or init) to reap it: gone
            return None
        return fields[19].decode()
    except FileNotFoundError:
        return None
    except OSError:
        pass
    if not pid_exists(pid):
        return None
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


class RunDir:
    """One attempt's directory and what its files say."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> str | None:
        try:
            return self.file(name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def write(self, name: str, text: str) -> None:
        temp = self.file(name + ".tmp-daemon")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, self.file(name))

    def started(self) -> bool:
        return self.file("launch").exists()

    def finished(self) -> bool:
        """The run wrote its exit status, or was killed on purpose: collect it, never restart it."""
        return self.exit_code() is not None or self.kill_marker() is not None

    def kill_marker(self) -> str | None:
        """Why the run was killed on purpose ("timed_out", "stalled", "cancelled", "over_budget"), or None."""
        return next((name for name in KILL_MARKERS if self.file(name).exists()), None)

    def exit_code(self) -> int | None:
        text = self.read("exit")
        if text is None or not text.strip():
            return None
        try:
            return int(text.strip())
        except ValueError:
            return -1

    def recorded_pid(self) -> tuple[int, str | None] | None:
        """(pid, start time) from `pid`, else (pid, None) from `pid.wrapper`, else None."""
        text = (self.read("pid") or "").split()
        if len(text) >= 2 and text[0].isdigit():
            return int(text[0]), " ".join(text[1:])
        wrapper = (self.read("pid.wrapper") or "").strip()
        if wrapper.isdigit():
            return int(wrapper), None
        return None

    def last_output_epoch(self) -> float:
        """When the agent last wrote to its stdout (or started, when it has not yet)."""
        try:
            return max(self.file("stdout").stat().st_mtime, self.started_epoch())
        except FileNotFoundError:
            return self.started_epoch()

    def awake_since_launch(self) -> float:
        """Seconds this machine was awake since the run was launched: by the monotonic clock when
        `launch` recorded it in this boot, else (an older run directory) by the wall clock."""
        for line in (self.read("launch") or "").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "monotonic" and parts[2] == (boot_id() or "-"):
                try:
                    return max(0.0, time.monotonic() - float(parts[1]))
                except ValueError:
                    break
        return max(0.0, time.time() - self.started_epoch())

    def started_epoch(self) -> float:
        for name in ("pid", "pid.wrapper", "launch"):
            try:
                return self.file(name).stat().st_mtime
            except FileNotFoundError:
                continue
        return time.time()

    def is_live(self) -> bool:
        recorded = self.recorded_pid()
        if recorded is None:
            return False
        pid, start = recorded
        now_start = process_start_time(pid)
        if now_start is None:
            return False
        if start is not None:
            return now_start == start
        try:  # only pid.wrapper: our wrapper leads its own session
            return os.getsid(pid) == pid
        except OSError:
            return False

    def tail(self, name: str, limit: int = 300) -> str:
        """The last non-empty line of a file, clipped: enough to say why an agent failed."""
        try:
            with open(self.file(name), "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
                lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
        except FileNotFoundError:
            return ""
        return clean(lines[-1][-limit:]) if lines else ""

    def read_capped(self, name: str, limit: int) -> str | None:
        """The file's text, "" when missing, None when over `limit` bytes (left unread)."""
        try:
            with open(self.file(name), "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            return ""
        if len(data) > limit:
            return None
        return data.decode("utf-8", errors="replace")


class AwakeClock:
    """How long a run has been going and how long it has been quiet, in time the machine was awake
    (time.monotonic: CLOCK_MONOTONIC on Linux, which stops while the machine is suspended), and
    whether the dispatcher just woke up: more time passed since its last look than it slept for
    (a suspend and resume, seen as the wall clock jumping ahead of the monotonic one, or this
    process stopped with SIGSTOP)."""

    def __init__(self, run: RunDir):
        self.run = run
        now = time.monotonic()
        self.launched = now - run.awake_since_launch()
        # quiet since: what the file says (wall clock), never more than the run's awake time
        self.output_mark = self._output_mark()
        self.last_output = now - min(max(0.0, time.time() - run.last_output_epoch()), now - self.launched)
        self.looked_mono, self.looked_wall, self.slept_for = now, time.time(), 0.0

    def _output_mark(self) -> tuple:
        try:
            stat = self.run.file("stdout").stat()
            return stat.st_size, stat.st_mtime_ns
        except OSError:
            return None, None

    def awake(self) -> float:
        return time.monotonic() - self.launched

    def quiet(self) -> float:
        mark = self._output_mark()
        if mark != self.output_mark:
            self.output_mark, self.last_output = mark, time.monotonic()
        return time.monotonic() - self.last_output

    def overdue(self, timeout: float, stall_timeout: float | None) -> str | None:
        """"timed_out" / "stalled" when the run overran `timeout` / `stall_timeout` (None: no stall
        watch) in awake time, else None."""
        if self.awake() >= timeout:
            return "timed_out"
        if stall_timeout is not None and self.quiet() > stall_timeout:
            return "stalled"
        return None

    def will_sleep(self, seconds: float) -> None:
        self.slept_for = seconds

    def woke_up(self) -> bool:
        mono, wall = time.monotonic(), time.time()
        gap = max(mono - self.looked_mono, wall - self.looked_wall) - self.slept_for
        self.looked_mono, self.looked_wall, self.slept_for = mono, wall, 0.0
        return gap > WAKE_GAP_S

    def settled(self) -> None:
        self.looked_mono, self.looked_wall, self.slept_for = time.monotonic(), time.time(), 0.0
