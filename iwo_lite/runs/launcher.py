"""Starting an attempt's process detached from the daemon, and the one way a run is killed.

Owns how an attempt is started: under the reaper (runs/reaper.py), a small wrapper in a
session of its own that records its pid, runs the agent with stdin from `prompt.md` and
stdout/stderr into the run directory (stdout capped at `agent.max_output`), and writes the
exit status (temp + rename) once the agent and every process it started are gone — whether or
not the daemon is alive. `subprocess` mode starts it as a child with start_new_session; `tmux`
mode `exec`s it as the shell of a window of tmux session "iwo" (tmux makes each pane's process
a session leader), where it also shows the output live. `kill_run` is the only kill path
(timeouts, stalls and `cancel`): a marker file saying why, then SIGTERM to the wrapper, which
kills the agent's whole process tree (tools in sessions of their own too), and a sweep of
anything left (`proctree.stop`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from iwo_lite.runs import proctree, reaper
from iwo_lite.runs.journal import RunDir, process_start_time
from iwo_lite.times import iso_utc

TMUX_SESSION = "iwo"
KILL_GRACE_S = 3.0  # SIGTERM to SIGKILL
FINISH_WAIT_S = 5.0  # an agent that exited as its deadline came: how long its wrapper gets to write `exit`
INTERRUPT_S = 2.0  # Claude Code: SIGINT first, and this long for it to end (reaper --interrupt)


@dataclass(frozen=True)
class Launch:
    """How to start one attempt."""

    argv: tuple[str, ...]
    env: dict[str, str]  # the whole environment of the agent (IWO_RUN_DIR = the run directory)
    cwd: Path
    title: str  # tmux window name
    unset: tuple[str, ...] = ()  # variables a tmux window must not inherit from the tmux server
    tmux_keep_s: float = 600.0
    max_output: int = reaper.DEFAULT_MAX_OUTPUT
    interrupt_s: float = 0.0  # stopped on purpose: SIGINT to the agent first, this long (reaper --interrupt)


async def start(run: RunDir, launch: Launch, mode: str) -> asyncio.subprocess.Process | None:
    """Start the attempt under the reaper; writes `pid`. The process handle in subprocess mode, None in tmux.

    An OSError (the working directory is missing, tmux failed) is raised for the caller to record.
    """
    proc = None
    if mode == "tmux":
        pid = await _start_in_tmux(launch)
    else:
        argv = reaper.wrapper_argv(launch.argv, grace_s=KILL_GRACE_S, max_output=launch.max_output,
                                   interrupt_s=launch.interrupt_s)
        if not launch.cwd.is_dir():  # the wrapper would start and then fail; say it plainly
            raise FileNotFoundError(2, "No such file or directory", str(launch.cwd))
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=launch.cwd, env=launch.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        pid = proc.pid
    run.write("pid", f"{pid} {process_start_time(pid) or '?'}\n")
    return proc


async def _start_in_tmux(launch: Launch) -> int:
    """Open window `<title>` in tmux session `iwo` whose shell execs the reaper; the pane's pid.

    The pane inherits the tmux server's environment (the daemon's, when the daemon started
    the server); the IWO_* variables are passed with -e, and `launch.unset` are removed. The
    reaper copies the agent's output to the pane (--tee) and keeps the window open afterwards.
    """
    if await _tmux("has-session", "-t", TMUX_SESSION, check=False) != 0:
        # the tmux server started here keeps this environment for good: no secrets in it
        await _tmux("new-session", "-d", "-s", TMUX_SESSION, "-n", "iwo-lite", check=False,
                    env={k: v for k, v in os.environ.items() if k not in launch.unset})
    passed = {k: v for k, v in launch.env.items() if k.startswith(("IWO_", "CLAUDE_CODE_"))}
    unset = [arg for name in launch.unset for arg in ("-u", name)]
    argv = reaper.wrapper_argv(launch.argv, grace_s=KILL_GRACE_S, max_output=launch.max_output, tee=True,
                               keep_s=launch.tmux_keep_s, interrupt_s=launch.interrupt_s)
    out = await _tmux(
        "new-window", "-d", "-t", f"{TMUX_SESSION}:", "-n", launch.title, "-c", str(launch.cwd),
        "-P", "-F", "#{pane_pid}",
        *[arg for key, value in passed.items() for arg in ("-e", f"{key}={value}")],
        "exec " + shlex.join(["env", *unset, *argv]), capture=True,
    )
    return int(out.strip())


async def _tmux(*args: str, check: bool = True, capture: bool = False, env: dict | None = None):
    """Run a tmux command; its stdout when `capture`, else its exit status."""
    proc = await asyncio.create_subprocess_exec(
        "tmux", *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise OSError(f"tmux {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode() if capture else proc.returncode


async def finishing(run: RunDir) -> bool:
    """Its deadline came, but the agent has exited (nothing of its tree is left alive under the
    wrapper) and the wrapper is about to write its status: wait for it (up to FINISH_WAIT_S).
    True when the run has its exit status."""
    wrapper = proctree.wrapper_pid(run.path)
    if wrapper is None or process_start_time(wrapper) is None or proctree.descendants(wrapper):
        return run.exit_code() is not None
    end = time.monotonic() + FINISH_WAIT_S
    while time.monotonic() < end and run.exit_code() is None and process_start_time(wrapper) is not None:
        await asyncio.sleep(0.05)
    return run.exit_code() is not None


def kill_run(run: RunDir, marker: str, grace_s: float = KILL_GRACE_S) -> bool:
    """Stop a run on purpose: write `marker` (why: timed_out, stalled, cancelled, over_budget), then end its
    whole process tree (SIGTERM to the wrapper, which kills everything the agent started; after
    the grace, a sweep by pid tree and run tag of anything left). Blocking.

    The marker comes first, so whoever collects the run (this daemon, or the next one after a
    crash) knows it was stopped and never starts it again. True when a live run was stopped.
    A deadline ("timed_out", "stalled", "over_budget") never marks a run that finished by itself first: one that
    has its exit status is left alone (False), and one whose wrapper wrote it just as the marker
    went down, with nothing left to stop, loses the marker again (its answer is collected).
    """
    deadline = marker != "cancelled"
    if deadline and run.exit_code() is not None:
        return False
    run.write(marker, iso_utc(time.time()) + "\n")
    was_live = run.is_live()
    if deadline and not was_live and run.exit_code() is not None:
        run.file(marker).unlink(missing_ok=True)
        return False
    recorded = run.recorded_pid()
    start = recorded[1] if recorded and recorded[1] not in (None, "?") else None
    wrapper = proctree.wrapper_pid(run.path)
    killed = proctree.stop(str(run.path), grace_s, margin_s=2.0 + INTERRUPT_S,
                         start_time=start if recorded and recorded[0] == wrapper else None)
    return was_live or killed > 0


def sweep_spec(spec_runs: Path) -> tuple[int, list[int]]:
    """After its runs were stopped: anything still running of any attempt of a spec (an agent
    orphaned by a wrapper that died, found by its IWO_RUN_DIR under `spec_runs`) is killed.
    (How many processes were signalled, the pids that still live.) Blocking."""
    if not spec_runs.is_dir():
        return 0, []
    return proctree.sweep(str(spec_runs), KILL_GRACE_S, under=True)


def cancel_report(spec_id: str, stopped: int, swept: tuple[int, list[int]]) -> str:
    """What `cancel` says: the runs stopped, the orphans found, and any process it could not stop."""
    text = f"cancelled {spec_id}" + (f"; stopped {stopped} agent run(s)" if stopped else "")
    if swept[0] and not swept[1]:
        text += f"; stopped {swept[0]} orphaned process(es) of earlier attempts"
    if swept[1]:
        text += (f"; but {len(swept[1])} of its processes could not be stopped (pids "
                 f"{' '.join(map(str, swept[1][:10]))})")
    return text


def stop_runs(run_dirs: list[str]) -> int:
    """Stop the runs of a cancelled spec (`cancel`, from the shell or a notifier); how many were live.
    A run directory not on this machine is left to its worker, which sees the spec cancelled."""
    return sum(kill_run(RunDir(Path(run_dir)), "cancelled") for run_dir in run_dirs if Path(run_dir).is_dir())
