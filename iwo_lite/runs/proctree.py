"""A run's whole process tree: find it, freeze it, kill it — from outside (the daemon, `cancel`)
and from inside (the wrapper, runs/reaper.py, imports it as a top-level module).

Standard library only (Python >= 3.10): the wrapper runs isolated (`python -I -S`) with this
directory on sys.path.

`descendants(pid)`; `kill_tree(root_pid, grace_s, run_dir=, start_time=)` for when the wrapper
is gone or does not answer; `sweep(run_dir)` = kill_tree of what is left of a run whose wrapper
died, and which of it still lives (`tagged_pids`); `stop(run_dir)` = SIGTERM to the wrapper,
wait up to grace + margin, then `kill_tree` of whatever is left. A run's processes carry its
IWO_RUN_DIR in their environment (the run tag), which is how they are recognised.
"""

import os
import sys
import time

try:  # `signal` imports enum (~3 ms at start-up); its C half has all that is needed here
    import _signal as signal
except ImportError:  # pragma: no cover
    import signal

LINUX = sys.platform.startswith("linux")
DEFAULT_GRACE_S = 3.0
RUN_DIR_ENV = "IWO_RUN_DIR"
KILL_WAIT_S = 5.0  # after SIGKILL, how long a kill waits for the tree to vanish


# ---------------------------------------------------------------------------- processes

class Proc(tuple):
    """(ppid, pgid, sid, state, start): one row of the process table. `sid` is None and
    `start` is None where `ps` is used; `start` is the same token as /proc/PID/stat's field 22."""

    __slots__ = ()

    ppid = property(lambda self: self[0])
    pgid = property(lambda self: self[1])
    sid = property(lambda self: self[2])
    state = property(lambda self: self[3])
    start = property(lambda self: self[4])

    @property
    def zombie(self) -> bool:
        """Dead, not yet reaped (or being torn down): nothing left to signal."""
        return self[3][:1] in ("Z", "X")


def process_table() -> dict[int, Proc]:
    """Every process now: pid -> Proc. Linux reads /proc/*/stat; elsewhere `ps`."""
    if not LINUX:
        return _ps_table()
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        rest = data.rsplit(b")", 1)[1].split()
        try:
            table[int(name)] = Proc((int(rest[1]), int(rest[2]), int(rest[3]), rest[0].decode(),
                                     rest[19].decode()))
        except (IndexError, ValueError):
            continue
    return table


def _ps_table() -> dict[int, Proc]:
    import subprocess

    ps = subprocess.Popen(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    out = ps.communicate()[0]
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and int(parts[0]) != ps.pid:  # not ps itself
            table[int(parts[0])] = Proc((int(parts[1]), int(parts[2]), None, parts[3], None))
    return table


def start_time(pid: int) -> str | None:
    """`pid`'s start-time token (None if it is not running); guards against pid reuse.

    The same token as iwo-lite's `pid` file: /proc/PID/stat field 22 on Linux, `ps -o lstart=`
    elsewhere."""
    if LINUX:
        info = process_table_row(pid)
        return info.start if info is not None else None
    import subprocess

    out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True,
                         check=False).stdout.strip()
    return out or None


def process_table_row(pid: int) -> Proc | None:
    if not LINUX:
        return _ps_table().get(pid)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            rest = handle.read().rsplit(b")", 1)[1].split()
        return Proc((int(rest[1]), int(rest[2]), int(rest[3]), rest[0].decode(), rest[19].decode()))
    except (OSError, IndexError, ValueError):
        return None


def _children_map(table: dict[int, Proc]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        if not info.zombie:
            children.setdefault(info.ppid, []).append(pid)
    return children


def descendants(pid: int, table: dict[int, Proc] | None = None) -> list[int]:
    """The live (non-zombie) processes under `pid` by parent links, parents before children;
    `pid` itself not included. Linux: a walk of /proc/*/stat; elsewhere `ps -A -o pid=,ppid=`."""
    table = process_table() if table is None else table
    children = _children_map(table)
    found: list[int] = []
    seen = {pid}
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), ()):
            if child not in seen:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def has_tag(pid: int, run_dir: str) -> bool:
    """Linux: `pid` was started with IWO_RUN_DIR=`run_dir` in its environment (False when
    unknown: not Linux, not ours to read, gone). Every process the agent starts inherits it,
    so it marks the run's processes even after they left the tree."""
    if not LINUX:
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return (RUN_DIR_ENV + "=" + run_dir).encode() in data.split(b"\0")


def _tagged(table: dict[int, Proc], run_dir: str) -> dict[int, Proc]:
    return {pid: info for pid, info in table.items() if not info.zombie and has_tag(pid, run_dir)}


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _freeze(seeds: dict[int, Proc], never: frozenset[int]) -> dict[int, Proc]:
    """SIGSTOP `seeds` and everything under them until no new process appears (a stopped
    process cannot fork), checking after each stop that the pid is still the process that was
    seen (else it is continued and left alone). The stopped processes: pid -> Proc."""
    frozen: dict[int, Proc] = {}
    frontier = dict(seeds)
    for _ in range(100):
        for pid, seen in frontier.items():
            if pid not in frozen and pid not in never and pid > 1 and _signal(pid, signal.SIGSTOP):
                frozen[pid] = seen
        table = process_table()
        for pid in list(frozen):
            now = table.get(pid)
            if now is None or now.zombie:
                del frozen[pid]
            elif now.start != frozen[pid].start:  # pid reused between the scan and the signal
                _signal(pid, signal.SIGCONT)
                del frozen[pid]
        children = _children_map(table)
        frontier = {child: table[child] for pid in frozen for child in children.get(pid, ())
                    if child not in frozen and child not in never}
        if not frontier:
            break
    return frozen


def _alive(pid: int, seen: Proc) -> bool:
    now = process_table_row(pid)
    return now is not None and not now.zombie and now.start == seen.start


def _living(known: dict[int, Proc]) -> dict[int, Proc]:
    """Those of `known` that still run (the same processes: same start token), from one scan."""
    if not known:
        return {}
    table = process_table() if not LINUX or len(known) > 8 else None
    living = {}
    for pid, seen in known.items():
        now = table.get(pid) if table is not None else process_table_row(pid)
        if now is not None and not now.zombie and now.start == seen.start:
            living[pid] = seen
    return living


def _seeds(root_pid: int, table: dict[int, Proc], run_dir: str | None, root_start: str | None,
           allow_root: bool = True) -> tuple[dict[int, Proc], str | None]:
    """Where a kill starts: the root if it is the process meant, the members of its session
    and process group (if the root is that process or gone), and with `run_dir` every process
    that carries the run's tag. Also the root's start token, when it is the process meant."""
    seeds: dict[int, Proc] = {}
    root = table.get(root_pid)
    dead = root is None or root.zombie
    ours = False
    if not dead and root_pid > 1 and allow_root:
        ours = root_start is None or root.start == root_start
        if ours and run_dir is not None and LINUX:
            ours = has_tag(root_pid, run_dir)
    if ours:
        seeds[root_pid] = root
    if ours or (dead and root_pid > 1):
        for pid, info in table.items():
            if info.zombie or not (info.sid == root_pid or info.pgid == root_pid):
                continue
            # a dead root's number may since have led another session: with run_dir, only tagged
            # ones where tags can be read (Linux)
            if ours or run_dir is None or not LINUX or has_tag(pid, run_dir):
                seeds[pid] = info
    if run_dir is not None:
        seeds.update(_tagged(table, run_dir))
    return seeds, (root.start if ours else None)


def kill_tree(root_pid: int, grace_s: float = DEFAULT_GRACE_S, *, run_dir: str | os.PathLike | None = None,
              start_time: str | None = None) -> int:
    """Kill `root_pid` and every process under it; how many processes were signalled.

    Freezes the tree first (SIGSTOP, until no new process appears), then SIGTERM + SIGCONT and
    up to `grace_s` for them to go (0: straight to SIGKILL), then freezes what is left (and
    anything it started meanwhile) and SIGKILLs it. Waits up to a second for them to vanish.

    Pid reuse: the root is only touched if it is still the process meant — its start token is
    `start_time` when given, and with `run_dir` (Linux) its environment carries
    IWO_RUN_DIR=run_dir. Everything else signalled is, at the moment it was frozen, a
    descendant of such a process, a member of the root's session/process group (while the root
    is that process, or gone), or (with `run_dir`, Linux) carries the run's tag. So when the
    wrapper was SIGKILLed (its orphans re-parented to init, or to the nearest subreaper),
    `run_dir` is what still finds them: every process started with IWO_RUN_DIR=run_dir in its
    environment, and all their descendants; without it, only the dead root's session and
    process group members and their descendants. The caller itself is never signalled.
    """
    tag = None if run_dir is None else os.fspath(run_dir)
    never = frozenset((os.getpid(),))
    seeds, root_start = _seeds(root_pid, process_table(), tag, start_time)
    frozen = _freeze(seeds, never)
    signalled = set(frozen)
    if frozen and grace_s > 0:
        for pid in frozen:
            _signal(pid, signal.SIGTERM)
        for pid in frozen:
            _signal(pid, signal.SIGCONT)
        end = time.monotonic() + grace_s
        while time.monotonic() < end and _living(frozen):
            time.sleep(0.02)
    table = process_table()
    left = {pid: seen for pid, seen in frozen.items()
            if pid in table and not table[pid].zombie and table[pid].start == seen.start}
    # and what appeared meanwhile (a root that was not the process meant never becomes it)
    more, _ = _seeds(root_pid, table, tag, root_start, allow_root=root_start is not None)
    left.update(more)
    frozen = _freeze(left, never)
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    signalled |= set(frozen)
    end = time.monotonic() + 1.0
    while time.monotonic() < end and _living(frozen):
        time.sleep(0.01)
    return len(signalled)


def tagged_pids(run_dir: str | os.PathLike, *, under: bool = False) -> list[int]:
    """Linux: the live processes started with IWO_RUN_DIR=`run_dir` in their environment (with
    `under`: any run directory below `run_dir`, e.g. all of one spec's runs). [] elsewhere."""
    if not LINUX:
        return []
    tag = os.fspath(run_dir)
    found = []
    for pid, info in process_table().items():
        if info.zombie or pid == os.getpid():
            continue
        value = _run_dir_of(pid)
        if value is not None and (value == tag or (under and value.startswith(tag.rstrip(os.sep) + os.sep))):
            found.append(pid)
    return found


def sweep(run_dir: str | os.PathLike, grace_s: float = DEFAULT_GRACE_S, *, under: bool = False) -> tuple[int, list[int]]:
    """Kill whatever is left of a run whose wrapper is gone (SIGKILLed, e.g. by the OOM killer):
    its orphaned agent and everything it started, found by the dead wrapper's session and the
    run's tag (with `under`: of every run below `run_dir`). (How many were signalled, the pids
    still alive after it: processes that cannot be killed.)"""
    tag = os.fspath(run_dir)
    run_dirs = {tag} if not under else set()
    if under:
        for pid in tagged_pids(tag, under=True):
            run_dirs.add(_run_dir_of(pid) or tag)
    signalled = 0
    for one in sorted(run_dirs):
        signalled += kill_tree(wrapper_pid(one) or 0, grace_s, run_dir=one)
    return signalled, tagged_pids(tag, under=under)


def _run_dir_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            env = handle.read().split(b"\0")
    except OSError:
        return None
    prefix = RUN_DIR_ENV.encode() + b"="
    return next((entry[len(prefix):].decode(errors="replace") for entry in env if entry.startswith(prefix)), None)


def wrapper_pid(run_dir: str | os.PathLike) -> int | None:
    try:
        with open(os.path.join(run_dir, "pid.wrapper"), encoding="ascii", errors="replace") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def stop(run_dir: str | os.PathLike, grace_s: float = DEFAULT_GRACE_S, margin_s: float = 2.0,
         start_time: str | None = None) -> int:
    """End a run from outside (timeout, cancel, stall): SIGTERM to its wrapper (the pid in
    `pid.wrapper`, if it is still that process), wait up to `grace_s` + `margin_s` for it to
    end, then `kill_tree(pid, 0, run_dir=run_dir)` of whatever is left (nothing, when the
    wrapper did its job). Blocking; returns how many processes that last sweep killed.
    `run_dir` must be the same string as the run's IWO_RUN_DIR; `start_time`: the wrapper's
    start token if known (e.g. from the `pid` file when its pid is the wrapper's)."""
    tag = os.fspath(run_dir)
    pid = wrapper_pid(tag) or 0
    if pid > 1:
        info = process_table_row(pid)
        ours = info is not None and not info.zombie and (start_time is None or info.start == start_time)
        if ours and LINUX:
            ours = has_tag(pid, tag)
        elif ours:
            ours = info.pgid == pid  # the wrapper leads its own process group (and session)
        if ours and _signal(pid, signal.SIGTERM):
            end = time.monotonic() + grace_s + margin_s
            while time.monotonic() < end and _alive(pid, info):
                time.sleep(0.02)
    return kill_tree(pid, 0, run_dir=tag, start_time=start_time)
