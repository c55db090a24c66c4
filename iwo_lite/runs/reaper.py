"""The wrapper of one agent attempt: the program that runs the agent detached and journals it.

Standard library only (Python >= 3.10). It imports nothing outside the standard library; start it isolated::

    IWO_RUN_DIR=/abs/run/dir  python3 -I -S /path/to/reaper.py [OPTIONS] -- ARGV...

or, the same without compiling this file at every start (~5 ms; what `wrapper_argv()` builds)::

    IWO_RUN_DIR=/abs/run/dir  python3 -I -S -c "$BOOTSTRAP" /path/to/runs [OPTIONS] -- ARGV...

    --grace S        SIGTERM-to-SIGKILL grace when the tree is killed (default 3)
    --max-output N   bytes of the agent's stdout kept in `stdout` (default 20 MiB); the agent's
                     stdout is then a pipe that the wrapper copies, and what is beyond N is still
                     read (the agent never blocks on it nor gets EPIPE) but dropped, and
                     `stdout.cut` says how many bytes were. 0: no cap, stdout is the file itself
    --tee            also copy the agent's stdout and stderr (both then pipes) to this process's
                     stdout: a tmux pane's live view. Never blocks: what the terminal does not
                     take at once is not shown (the files get everything)
    --interrupt S    when the run is stopped, first SIGINT to the agent alone (under bwrap: to the
                     command bwrap runs; the rest of its tree
                     frozen) and up to S seconds for it to end, then the SIGTERM to all (default
                     0: none). Claude Code's abort: no further API call, unlike SIGTERM
    --keep S         after `exit` is written, print "[iwo-lite] <IWO_SPEC_ID> <IWO_ROLE> attempt
                     <IWO_ATTEMPT> exited <status>" and stay S seconds (a tmux window stays
                     open); SIGTERM/SIGINT/SIGHUP end the stay at once

The run directory comes from the environment variable IWO_RUN_DIR (as for the old /bin/sh
wrapper); the agent and everything it starts inherit it, and `kill_tree(..., run_dir=)` uses it
to recognise the run's processes. The options are arguments so that they do not leak into the
agent's environment. The journal is the old wrapper's:

    pid.wrapper  this process's pid, written first (temp + rename)
    stdout       the agent's stdout, created/truncated 0600      (stdout.cut: bytes dropped; past
                 the cap, the last line, up to 1 MiB, is kept after the cut)
    stderr       the agent's stderr, created/truncated 0600      (not capped)
    exit         the agent's exit status as text ("0", "1", or 128+N when signal N killed it),
                 written (exit.tmp + rename) once the agent AND every process it started is gone;
                 127/126 when ARGV cannot be executed, 2 when prompt.md cannot be opened (with
                 the reason in `stderr`), 128+N when signal N came before the agent started

The wrapper runs with umask 077 (its own files are 0600); the agent runs with the umask the
wrapper was started with, stdin = `prompt.md`, in the wrapper's session and process group, with
no signal ignored, caught or blocked (fork + exec, as /bin/sh did; a signal already ignored when
the wrapper started, e.g. SIGHUP under nohup, stays ignored). On Linux the wrapper is a child
subreaper (prctl PR_SET_CHILD_SUBREAPER): every orphan of the tree re-parents to it, whatever
session or process group it put itself in, so its tree is exactly the agent's processes.

SIGTERM, SIGINT or SIGHUP to the wrapper ends the run: the tree is frozen (SIGSTOP until no new
process appears), sent SIGTERM and SIGCONT, given the grace (a second such signal cuts it
short), frozen again and SIGKILLed; then `exit` is written (the agent's own status: 143 when
SIGTERM killed it) and the wrapper exits. When the agent exits by itself, whatever it left
running (background tools) is ended the same way before `exit` is written. A process that
cannot be killed (another user's, e.g. under sudo; stuck in the kernel) is waited for 5 s after
SIGKILL, then named in `stderr` and `exit` is written anyway. The wrapper's own exit status is
the status it wrote. If the wrapper itself is SIGKILLed, nothing is written and the tree goes
on (with a cap, the agent's next write to stdout fails: EPIPE/SIGPIPE): that is `kill_tree`'s job
— except in iwo-lite's sandbox (ARGV = `bwrap --die-with-parent --unshare-pid ... -- AGENT`),
whose whole PID namespace the kernel ends with the wrapper.

Elsewhere (macOS, BSD) there is no subreaper: processes still parented to the tree are found
with `ps -A -o pid=,ppid=,pgid=,stat=`, and so are those left in the wrapper's process group,
but an orphan in a session or group of its own re-parents to launchd and escapes (neither is
it waited for before `exit`), and `kill_tree` has no run tag (no /proc/PID/environ).

The daemon's side (killing a run's tree from outside) is runs/proctree.py, which this program
imports for the same freezing and killing (and runs/streams.py, its output plumbing); `wrapper_argv(agent_argv, ...)` here builds the
command line that starts the wrapper.
"""

import errno
import os
import sys
import time

try:  # `signal` imports enum (~3 ms at start-up); its C half has all that is needed here
    import _signal as signal
except ImportError:  # pragma: no cover
    import signal

DEFAULT_MAX_OUTPUT = 20 * 2**20
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PIPE_SIZE = 1 << 20  # Linux: fewer wake-ups for writer and copier (the default pipe is 64 KiB)
PR_SET_CHILD_SUBREAPER = 36
USAGE = ("usage: IWO_RUN_DIR=DIR python3 -I -S reaper.py [--grace S] [--max-output BYTES] "
         "[--tee] [--keep S] [--interrupt S] -- ARGV...\n")

try:  # as part of the package (the daemon builds the command line here)
    from iwo_lite.runs.proctree import (  # noqa: F401
        LINUX, DEFAULT_GRACE_S, RUN_DIR_ENV, KILL_WAIT_S, Proc, process_table, process_table_row, descendants,
        has_tag, kill_tree, tagged_pids, sweep, wrapper_pid, stop, start_time, _freeze, _living, _signal,
        _alive, _seeds, _tagged, _children_map, _ps_table, _run_dir_of)
    from iwo_lite.runs.streams import CHUNK, _read_retry, _Stream, _Tee, _write_all
except ImportError:  # as the wrapper program (`python -I -S`): proctree.py from this file's directory
    if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
        sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from proctree import (  # noqa: F401
        LINUX, DEFAULT_GRACE_S, RUN_DIR_ENV, KILL_WAIT_S, Proc, process_table, process_table_row, descendants,
        has_tag, kill_tree, tagged_pids, sweep, wrapper_pid, stop, start_time, _freeze, _living, _signal,
        _alive, _seeds, _tagged, _children_map, _ps_table, _run_dir_of)
    from streams import CHUNK, _read_retry, _Stream, _Tee, _write_all


BOOTSTRAP = "import sys; sys.path.append(sys.argv[1]); import reaper; reaper.script(sys.argv[2:])"


def wrapper_argv(agent_argv: list[str] | tuple[str, ...], *, grace_s: float = DEFAULT_GRACE_S,
                 max_output: int = DEFAULT_MAX_OUTPUT, tee: bool = False, keep_s: float = 0.0,
                 python: str | None = None, interrupt_s: float = 0.0) -> list[str]:
    """The argv that runs `agent_argv` under this wrapper (IWO_RUN_DIR must be in its environment).

    `python -I -S -c BOOTSTRAP DIR OPTIONS -- ARGV`: the same as `python -I -S reaper.py OPTIONS
    -- ARGV`, but imports this file as the top-level module `reaper` from its directory (put last
    on sys.path, so nothing there shadows the standard library), which uses the cached .pyc
    (written when the daemon imported this module) instead of compiling ~800 lines at every
    start (~5 ms)."""
    here = os.path.abspath(__file__)
    if not os.path.isfile(here):  # imported from inside a zip: there is no file to run
        raise FileNotFoundError(f"the wrapper needs reaper.py on disk, not {here}")
    argv = [python or sys.executable, "-I", "-S", "-c", BOOTSTRAP, os.path.dirname(here),
            "--grace", f"{grace_s:g}", "--max-output", str(int(max_output))]
    if tee:
        argv.append("--tee")
    if keep_s:
        argv += ["--keep", f"{keep_s:g}"]
    if interrupt_s:
        argv += ["--interrupt", f"{interrupt_s:g}"]
    return argv + ["--", *agent_argv]


# ---------------------------------------------------------------------------- the wrapper

class _Usage(Exception):
    pass


def _parse(args: list[str]) -> dict:
    opts = {"grace": DEFAULT_GRACE_S, "max_output": DEFAULT_MAX_OUTPUT, "tee": False, "keep": 0.0, "interrupt": 0.0}
    i = 0
    while i < len(args) and args[i] != "--":
        arg = args[i]
        name, eq, value = arg.partition("=")
        key = {"--grace": "grace", "--max-output": "max_output", "--keep": "keep", "--interrupt": "interrupt"}.get(name)
        if arg == "--tee":
            opts["tee"] = True
        elif key is not None:
            if not eq:
                i += 1
                if i >= len(args):
                    raise _Usage(f"{name} needs a value")
                value = args[i]
            try:
                opts[key] = int(value) if key == "max_output" else float(value)
            except ValueError:
                raise _Usage(f"{name}: not a number: {value!r}") from None
            if opts[key] < 0:
                raise _Usage(f"{name} must not be negative")
        else:
            raise _Usage(f"unknown option {arg!r}")
        i += 1
    if i >= len(args) or i + 1 >= len(args):
        raise _Usage("no agent command after --")
    opts["argv"] = args[i + 1:]
    return opts


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class _Reaper:
    def __init__(self, run_dir: str, argv: list[str], grace: float, max_output: int, tee: bool, keep: float,
                 interrupt: float = 0.0):
        self.run_dir = run_dir
        self.interrupt = interrupt
        self.argv = argv
        self.grace = grace
        self.max_output = max_output
        self.tee = _Tee() if tee else None
        self.keep = keep
        self.me = os.getpid()
        self.agent = 0
        self.status: int | None = None
        self.stops = 0
        self.stop_sig = 0
        self.no_children = False
        self.streams: list[_Stream] = []
        self.notes: list[str] = []

    # -- files
    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def write_atomic(self, name: str, text: str) -> None:
        temp = self.path(name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(temp, self.path(name))

    def wrote(self, name: str, text: str) -> bool:
        """write_atomic; False when the disk is full (nothing half-written is left)."""
        try:
            self.write_atomic(name, text)
            return True
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            try:
                os.unlink(self.path(name + ".tmp"))
            except OSError:
                pass
            return False

    def wait_for_room(self, done) -> None:
        """Until `done()` (a write) succeeds: on a full disk the output and the exit status wait
        here, in memory, so the finished call is collected (never paid again) once there is room.
        A second stop signal gives up (the run then looks vanished, as after a crash)."""
        warned = False
        while not done():
            if not warned:
                sys.stderr.write("iwo-lite wrapper: the disk is full; waiting for room to save the agent's output\n")
                warned = True
            if self.stops >= 2:
                return
            self.poll(1.0)

    def create(self, name: str) -> int:
        fd = os.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    # -- signals
    def on_stop(self, signum, frame) -> None:
        self.stops += 1
        self.stop_sig = self.stop_sig or signum

    def run(self) -> int:
        for fd in (0, 1, 2):  # so that no pipe of ours lands on them
            try:
                os.fstat(fd)
            except OSError:
                os.open(os.devnull, os.O_RDWR)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        kept_ignored = []
        for sig in STOP_SIGNALS:
            if sig != signal.SIGTERM and signal.getsignal(sig) == signal.SIG_IGN:
                kept_ignored.append(sig)  # e.g. SIGHUP under nohup: the agent inherits it ignored
                continue
            signal.signal(sig, self.on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the loop via wake_w
        agent_umask = os.umask(0o077)
        self.write_atomic("pid.wrapper", f"{self.me}\n")
        if LINUX:
            _become_subreaper()
        out_fd = self.create("stdout")
        err_fd = self.create("stderr")
        try:
            os.unlink(self.path("stdout.cut"))
        except FileNotFoundError:
            pass
        self.spawn(out_fd, err_fd, agent_umask, kept_ignored)
        while self.status is None and not self.stop_sig and self.agent:
            self.poll(None)
            self.reap()
        self.end_tree()
        self.drain()
        if self.streams and self.streams[0].cap is not None:
            self.streams[0].keep_last_line()
        self.wait_for_room(lambda: all(stream.flush() for stream in self.streams))
        os.close(out_fd)
        os.close(err_fd)
        if self.notes:
            with open(self.path("stderr"), "ab") as handle:
                handle.write("".join(self.notes).encode())
        if self.status is None:  # stopped before the agent started, or it could not be reaped
            self.status = 128 + (self.stop_sig or signal.SIGKILL)
        dropped = self.streams[0].dropped if self.streams and self.streams[0].cap is not None else 0
        if dropped:
            self.wait_for_room(lambda: self.wrote("stdout.cut", f"{dropped}\n"))
        self.wait_for_room(lambda: self.wrote("exit", f"{self.status}\n"))
        if self.keep > 0 and self.stop_sig != signal.SIGHUP:
            self.linger()
        return self.status

    def spawn(self, out_fd: int, err_fd: int, agent_umask: int, kept_ignored: list[int]) -> None:
        try:
            prompt_fd = os.open(self.path("prompt.md"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            _write_all(err_fd, f"iwo-lite wrapper: cannot open prompt.md: {error.strerror}\n".encode())
            self.status = 2
            return
        child_out, child_err = out_fd, err_fd
        cap = self.max_output if self.max_output > 0 else None
        if cap is not None or self.tee is not None:
            read_fd, child_out = os.pipe()
            self.streams.append(_Stream(read_fd, out_fd, cap))
        if self.tee is not None:
            read_fd, child_err = os.pipe()
            self.streams.append(_Stream(read_fd, err_fd, None))
        for stream in self.streams:
            os.set_blocking(stream.fd, False)
            if LINUX:
                try:
                    import fcntl
                    fcntl.fcntl(stream.fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                except (OSError, AttributeError):
                    pass
        defaults = {signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, *STOP_SIGNALS} - set(kept_ignored)
        try:
            if not self.stop_sig:
                self.agent, error = _fork_exec(self.argv, prompt_fd, child_out, child_err, agent_umask, defaults)
                if error:
                    _write_all(err_fd, f"iwo-lite wrapper: {self.argv[0]}: {os.strerror(error)}\n".encode())
                    self.status = 127 if error == errno.ENOENT else 126
                    os.waitpid(self.agent, 0)
                    self.agent = 0
        finally:
            os.close(prompt_fd)
            for fd in {child_out, child_err} - {out_fd, err_fd}:
                os.close(fd)

    # -- the loop
    def poll(self, timeout: float | None) -> None:
        import select

        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        live = {stream.fd: stream for stream in self.streams if stream.open}
        for fd in live:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            if fd == self.wake_r:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            else:
                live[fd].pump(self.tee)

    def reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.no_children = True
                return
            if pid == 0:
                return
            if pid == self.agent:
                self.status = _exit_code(wait_status)

    def tree(self) -> dict[int, Proc]:
        """Where a kill of our tree starts: our children (Linux: every descendant hangs under
        them); elsewhere also what is left in our process group."""
        table = process_table()
        return {pid: info for pid, info in table.items() if not info.zombie and pid != self.me
                and (info.ppid == self.me or (not LINUX and info.pgid == self.me))}

    def alone(self, known: dict[int, Proc] | None = None) -> bool:
        """No child left (Linux: so no descendant either), nor any of `known` still running."""
        self.reap()
        if not self.no_children:
            return False
        if _living(known or {}):
            return False
        return LINUX or not self.tree()

    def end_tree(self) -> None:
        """Terminate whatever is still running under us (nothing, usually): freeze, SIGTERM +
        SIGCONT, the grace, freeze again, SIGKILL; wait for it to vanish, draining the pipes.
        Whatever was seen once is killed even if it is orphaned meanwhile (which, without a
        subreaper, takes it out of our tree)."""
        if self.alone():
            return
        never = frozenset((self.me,))
        known = _freeze(self.tree(), never)
        if self.interrupt > 0 and self.status is None and self.agent in known:
            self.interrupt_agent()
            known = _living(known)
        if known and self.grace > 0:
            for pid in known:
                _signal(pid, signal.SIGTERM)
            for pid in known:
                _signal(pid, signal.SIGCONT)
            end = time.monotonic() + self.grace
            while time.monotonic() < end and self.stops < 2 and not self.alone(known):
                self.poll(min(0.05, end - time.monotonic()))
        end = time.monotonic() + KILL_WAIT_S
        while not self.alone(known):
            seeds = self.tree()
            seeds.update(_living(known))
            frozen = _freeze(seeds, never)
            known.update(frozen)
            for pid in frozen:
                _signal(pid, signal.SIGKILL)
            self.poll(0.02)
            if time.monotonic() > end:
                left = sorted(set(_living(known)) | set(self.tree()))
                self.notes.append(f"iwo-lite wrapper: could not kill {left}\n")
                break

    def interrupt_agent(self) -> None:
        """--interrupt S: SIGINT to the agent alone (the rest of its tree stays frozen) and up to
        S seconds for it to end, before the SIGTERM to all. Claude Code takes SIGINT as an
        abort: it stops its tools and makes no further API call, where on SIGTERM while a tool
        has run for a few seconds it stops that tool and asks the model for one more (paid) turn."""
        chain = _sandbox_chain(self.agent)  # in a sandbox (bwrap), the command bwrap runs gets the SIGINT
        _signal(chain[-1], signal.SIGINT)
        for pid in chain:
            _signal(pid, signal.SIGCONT)
        end = time.monotonic() + self.interrupt
        while self.status is None and self.stops < 2 and time.monotonic() < end:
            self.poll(min(0.05, max(0.0, end - time.monotonic())))
            self.reap()

    def drain(self) -> None:
        """What is still in the pipes, now that every writer is gone (never waits for one that
        is not: what a writer that escaped the tree still sends after a second is lost)."""
        end = time.monotonic() + 1.0
        for stream in self.streams:
            while stream.open:
                before = stream.kept + stream.dropped
                stream.pump(self.tee)
                if stream.open and (stream.kept + stream.dropped == before or time.monotonic() > end):
                    os.close(stream.fd)
                    stream.open = False

    def linger(self) -> None:
        env = os.environ
        banner = (f"\n[iwo-lite] {env.get('IWO_SPEC_ID', '')} {env.get('IWO_ROLE', '')} attempt "
                  f"{env.get('IWO_ATTEMPT', '')} exited {self.status}\n")
        (self.tee or _Tee()).write(banner.encode())
        end = time.monotonic() + self.keep
        stops = self.stops
        while self.stops == stops and time.monotonic() < end:
            self.poll(end - time.monotonic())
            self.reap()


def _sandbox_chain(pid: int) -> list[int]:
    """[pid] for an agent run directly; for one run by bubblewrap (`bwrap ... -- CMD`), bwrap, its
    pid-1 init in the new PID namespace, and CMD: the last is the one an interrupt is for."""
    chain = [pid]
    if not LINUX:
        return chain
    for _ in range(3):
        try:
            with open(f"/proc/{chain[-1]}/comm", "rb") as handle:
                if handle.read().strip() != b"bwrap":
                    return chain
            with open(f"/proc/{chain[-1]}/task/{chain[-1]}/children", "rb") as handle:
                children = [int(x) for x in handle.read().split()]
        except (OSError, ValueError):
            return chain
        if not children:
            return chain
        chain.append(min(children))
    return chain


def _fork_exec(argv: list[str], stdin: int, stdout: int, stderr: int, umask: int,
               defaults: set[int]) -> tuple[int, int]:
    """Start argv as our child with these stdin/stdout/stderr, umask, signals in `defaults`
    back to SIG_DFL and an empty signal mask. (pid, errno of a failed exec or 0).

    Not posix_spawn: glibc's leaves its internal signals 32 and 33 ignored in the child, which
    /bin/sh (fork + exec) never did."""
    err_r, err_w = os.pipe()  # close-on-exec: EOF = the exec worked
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = errno.EINVAL
        try:
            signal.set_wakeup_fd(-1)
            for sig in defaults:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.umask(umask)
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            os.execvp(argv[0], argv)
        except OSError as error:
            code = error.errno or errno.EINVAL
        finally:
            try:
                os.write(err_w, str(code).encode())
            finally:
                os._exit(127)
    os.close(err_w)
    try:
        data = b""
        while chunk := _read_retry(err_r):
            data += chunk
    finally:
        os.close(err_r)
    return pid, int(data) if data.isdigit() else 0


def _become_subreaper() -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(args: list[str] | None = None) -> int:
    try:
        opts = _parse(sys.argv[1:] if args is None else args)
    except _Usage as error:
        os.write(2, f"reaper: {error}\n{USAGE}".encode())
        return 2
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        os.write(2, f"reaper: {RUN_DIR_ENV} is not set\n{USAGE}".encode())
        return 2
    return _Reaper(run_dir, opts["argv"], opts["grace"], opts["max_output"], opts["tee"], opts["keep"],
                   opts["interrupt"]).run()


def script(args: list[str] | None = None) -> None:
    """Run as the wrapper and exit with its status, skipping the interpreter's clean-up (~2 ms):
    every file of ours is closed by then and nothing is buffered (all output is os.write)."""
    os._exit(main(args))


if __name__ == "__main__":
    script()
