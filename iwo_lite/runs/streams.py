"""The wrapper's output plumbing: the agent's stdout copied to its file under a cap, and a live tee.

Standard library only, like runs/reaper.py, which imports it (from the package in the daemon, from
its own directory as the isolated wrapper program). `_Stream` copies a pipe into a file up to
`max_output` bytes, keeps reading past the cap (the agent never blocks nor gets EPIPE), says in
`stdout.cut` how much was dropped and keeps the last line after the cut; `_Tee` copies what it can
to a terminal without ever blocking.
"""

import errno
import os

CHUNK = 1 << 20
TAIL_MAX = 2**20 - 1  # past the cap, the last line kept if it is no longer (stdout is read up to max_output + 1 MiB)


class _Stream:
    """One pipe from the agent, copied into its file (up to `cap` bytes) and to the tee.

    A full disk never loses what the agent printed nor blocks it: what cannot be written yet is
    kept in memory (at most `cap` bytes) and written when there is room again (`flush`)."""

    def __init__(self, read_fd: int, file_fd: int, cap: int | None):
        self.fd = read_fd
        self.file_fd = file_fd
        self.cap = cap
        self.kept = 0
        self.dropped = 0
        self.open = True
        self.pending = bytearray()
        self.tail = bytearray()  # past the cap: the last TAIL_MAX bytes dropped (for the last line)
        self.tail_trimmed = False
        self.head_ends_line = True  # the kept bytes end with a newline

    def pump(self, tee: "_Tee | None") -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open = False
            os.close(self.fd)
            return
        size = len(data)
        room = size if self.cap is None else max(0, min(size, self.cap - self.kept))
        if room:
            self.pending += data if room == size else memoryview(data)[:room]
            self.kept += room
            self.head_ends_line = data[room - 1:room] == b"\n"
            self.flush()
        if room < size:
            self.tail += memoryview(data)[room:]
            if len(self.tail) > TAIL_MAX:
                del self.tail[:len(self.tail) - TAIL_MAX]
                self.tail_trimmed = True
        self.dropped += size - room
        if tee is not None:
            tee.write(data)

    def keep_last_line(self) -> None:
        """Past the cap, the output's last line (at most TAIL_MAX bytes) is kept after the cut, on a
        line of its own: with stream-json that is the `result` event, so a call that printed too
        much is still read (and not paid for again)."""
        body = bytes(self.tail)
        end = len(body) - 1 if body.endswith(b"\n") else len(body)
        start = body.rfind(b"\n", 0, max(end, 0))
        if start < 0 and (self.tail_trimmed or not self.head_ends_line):
            return  # the last line began before what was kept of it
        line = body[start + 1:]
        if line.strip():
            self.pending += (b"" if self.head_ends_line else b"\n") + line
            self.dropped -= len(line)

    def flush(self) -> bool:
        """Write what is pending; False while the disk has no room for it (it stays pending)."""
        while self.pending:
            try:
                written = os.write(self.file_fd, self.pending)
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    return False
                raise
            del self.pending[:written]
        return True


class _Tee:
    """This process's stdout, non-blocking: what does not fit at once is not shown."""

    def __init__(self):
        self.fd = -1
        try:
            if os.isatty(1):  # a new open file description: the flag does not leak to a shell
                self.fd = os.open(os.ttyname(1), os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
            else:
                self.fd = os.dup(1)
                os.set_blocking(self.fd, False)
        except OSError:
            self.fd = -1

    def write(self, data: bytes) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            pass
        except OSError:  # the terminal went away
            os.close(self.fd)
            self.fd = -1


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_retry(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 64)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may not
            continue
