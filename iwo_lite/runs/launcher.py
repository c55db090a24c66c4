"""Starting an attempt's process detached from the daemon, and the one way a run is killed.

Owns the wrapper (one generator for both modes): `/bin/sh` in a session of its own that
records its pid, runs the agent with stdin from `prompt.md` and stdout/stderr into the run
directory, and writes the exit status (temp + rename) when the agent ends — whether or not the
daemon is alive. `subprocess` mode starts it as a child with start_new_session; `tmux` mode as
the shell of a window of tmux session "iwo" (tmux makes each pane's process a session leader),
which also shows the output live. `kill_run` is the only kill path (timeouts and `cancel`):
a marker file saying why, then SIGTERM to the run's process group, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from iwo_lite.runs.journal import RunDir, process_start_time
from iwo_lite.times import iso_utc

TMUX_SESSION = "iwo"
KILL_GRACE_S = 3.0  # SIGTERM to SIGKILL
POLL_S = 0.05

_HEAD = ('agent_umask=$(umask); umask 077\n'
         'echo $$ > "$IWO_RUN_DIR/pid.wrapper"\n'
         ': > "$IWO_RUN_DIR/stdout"; : > "$IWO_RUN_DIR/stderr"\n')
_RUN = ('(umask "$agent_umask"; exec "$@") < "$IWO_RUN_DIR/prompt.md" > "$IWO_RUN_DIR/stdout"'
        ' 2> "$IWO_RUN_DIR/stderr"\n'
        'code=$?; echo $code > "$IWO_RUN_DIR/exit.tmp" && mv -f "$IWO_RUN_DIR/exit.tmp" "$IWO_RUN_DIR/exit"\n')
# tmux: the same run in the background while the pane shows its output with `tail -f`, then
# keeps the window open for agent.tmux_keep seconds.
_LIVE_VIEW = ('tail -f "$IWO_RUN_DIR/stdout" "$IWO_RUN_DIR/stderr" & viewer=$!\n'
              'while [ ! -f "$IWO_RUN_DIR/exit" ]; do sleep 0.2; done\n'
              'sleep 0.3; kill $viewer 2>/dev/null\n'
              'echo; echo "[iwo-lite] $IWO_SPEC_ID $IWO_ROLE attempt $IWO_ATTEMPT exited $(cat "$IWO_RUN_DIR/exit")"\n'
              'sleep "$IWO_TMUX_KEEP"\n')


def wrapper_script(live_view: bool = False) -> str:
    """The wrapper's /bin/sh text; its arguments ("$@") are the agent's argv."""
    if not live_view:
        return _HEAD + _RUN
    return _HEAD + "( " + _RUN.replace("\n", "\n  ", 1).rstrip("\n") + " ) &\n" + _LIVE_VIEW


@dataclass(frozen=True)
class Launch:
    """How to start one attempt."""

    argv: tuple[str, ...]
    env: dict[str, str]  # the whole environment of the agent
    cwd: Path
    title: str  # tmux window name
    unset: tuple[str, ...] = ()  # variables a tmux window must not inherit from the tmux server
    tmux_keep_s: float = 600.0


async def start(run: RunDir, launch: Launch, mode: str) -> asyncio.subprocess.Process | None:
    """Start the wrapper for `run`; writes `pid`. The process handle in subprocess mode, None in tmux.

    An OSError (the workdir is missing, tmux failed) is raised for the caller to record.
    """
    proc = None
    if mode == "tmux":
        pid = await _start_in_tmux(launch)
    else:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", wrapper_script(), "iwo-run", *launch.argv,
            cwd=launch.cwd, env=launch.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        pid = proc.pid
    run.write("pid", f"{pid} {process_start_time(pid) or '?'}\n")
    return proc


async def _start_in_tmux(launch: Launch) -> int:
    """Open window `<title>` in tmux session `iwo` running the wrapper; the pane's pid.

    The pane inherits the tmux server's environment (the daemon's, when the daemon started
    the server); the IWO_* variables are passed with -e, and `launch.unset` are removed.
    """
    if await _tmux("has-session", "-t", TMUX_SESSION, check=False) != 0:
        await _tmux("new-session", "-d", "-s", TMUX_SESSION, "-n", "iwo-lite", check=False)
    passed = {k: v for k, v in launch.env.items() if k.startswith("IWO_")}
    passed["IWO_TMUX_KEEP"] = f"{launch.tmux_keep_s:g}"
    unset = [arg for name in launch.unset for arg in ("-u", name)]
    command = ["env", *unset, "/bin/sh", "-c", wrapper_script(live_view=True), "iwo-run", *launch.argv]
    out = await _tmux(
        "new-window", "-d", "-t", f"{TMUX_SESSION}:", "-n", launch.title, "-c", str(launch.cwd),
        "-P", "-F", "#{pane_pid}",
        *[arg for key, value in passed.items() for arg in ("-e", f"{key}={value}")],
        shlex.join(command), capture=True,
    )
    return int(out.strip())


async def _tmux(*args: str, check: bool = True, capture: bool = False):
    """Run a tmux command; its stdout when `capture`, else its exit status."""
    proc = await asyncio.create_subprocess_exec(
        "tmux", *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise OSError(f"tmux {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode() if capture else proc.returncode


def kill_run(run: RunDir, marker: str, grace_s: float = KILL_GRACE_S) -> bool:
    """Stop a run on purpose: write `marker` (why), SIGTERM its process group, SIGKILL after `grace_s`.

    The marker comes first, so whoever collects the run (this daemon, or the next one after a
    crash) knows it was stopped and never starts it again. True when a live process was signalled.
    """
    run.write(marker, iso_utc(time.time()) + "\n")
    recorded = run.recorded_pid()
    if recorded is None or not run.is_live():
        return False
    group = recorded[0]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        end = time.time() + grace_s
        while time.time() < end and group_alive(group):
            time.sleep(POLL_S)
        if not group_alive(group):
            break
    return True


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
