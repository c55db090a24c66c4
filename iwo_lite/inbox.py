"""The inbox: a spec file dropped into `<home>/inbox/` is submitted once, then moved away.

Owns: noticing complete files (not hidden, not editor or download temp files, unchanged in size
and mtime for SETTLE_S, and — on Linux — held open for writing by no process, so a writer that
pauses mid-file is waited for), submitting each exactly once, and moving it to `inbox/done/`
(or, when it is not a valid spec — or not a regular file at all: a symlink, a FIFO, a directory —
to `inbox/rejected/` with a `.why` file beside it; an ignored name is said once in the log). The
spec id is derived from the file's name and content (submit.derive_id), so a crash between
"submitted" and "moved" resubmits the same id, which starts nothing new.

Quiet when idle: on Linux the folder is watched with inotify (through ctypes: no dependency),
so a dropped file is looked at at once and the daemon otherwise sleeps (a sweep every
SWEEP_S in case an event was lost, e.g. on a network filesystem); elsewhere, or when inotify is
not available, a cheap poll (one directory listing every POLL_S). A file not yet settled is
looked at again SETTLE_S later.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable

from iwo_lite.errors import UserError
from iwo_lite.intake import Spec, load_spec

log = logging.getLogger("iwo_lite.inbox")

POLL_S = 1.0  # without inotify
SWEEP_S = 60.0  # with inotify: a safety net
SETTLE_S = 1.0
# inotify(7): a file closed after writing, moved in, created, or its metadata changed
IN_EVENTS = 0x8 | 0x80 | 0x100 | 0x4
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".swx", ".crdownload", ".download", "~")


def is_candidate(name: str) -> bool:
    return not name.startswith((".", "#", "~")) and not name.endswith(IGNORED_SUFFIXES)


class InboxWatcher:
    def __init__(self, inbox: Path, submit: Callable[[Spec], Awaitable[bool]]):
        self.inbox = inbox
        self.submit = submit
        self._seen: dict[str, tuple[int, int]] = {}
        self._ignored: set[str] = set()

    async def run_forever(self) -> None:
        for folder in (self.inbox, self.inbox / "done", self.inbox / "rejected"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        wake = asyncio.Event()
        watch = _inotify(self.inbox)
        loop = asyncio.get_running_loop()
        if watch is not None:
            loop.add_reader(watch, lambda: (_drain(watch), wake.set()))
        try:
            while True:
                unsettled = 0
                try:
                    unsettled = await self.scan()
                except Exception as error:  # a vanished or unreadable file: log it, keep watching
                    log.warning("inbox: %s", error)
                quiet = SWEEP_S if watch is not None else POLL_S
                try:
                    await asyncio.wait_for(wake.wait(), SETTLE_S + 0.05 if unsettled else quiet)
                except asyncio.TimeoutError:
                    pass
                wake.clear()
        finally:
            if watch is not None:
                loop.remove_reader(watch)
                os.close(watch)

    async def scan(self) -> int:
        """Take each settled file; how many are still settling (look again SETTLE_S later). An entry
        that is not a regular file (a symlink, a FIFO, a directory, ...) is moved to rejected/ with
        the reason; an ignored name (hidden, an editor's or a download's temp file) is said once."""
        with os.scandir(self.inbox) as entries:
            listed = [entry for entry in entries if entry.name not in ("done", "rejected")]
        files = []
        for entry in listed:
            if not is_candidate(entry.name):
                if entry.name not in self._ignored:
                    self._ignored.add(entry.name)
                    log.info("inbox: not taking %s: a hidden or temporary file (editor, download)", entry.name)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry)
            else:
                self.reject(Path(entry.path), f"{entry.name}: {_kind(entry)}, not a regular file: only a spec file"
                                              " dropped here is taken")
        self._ignored &= {entry.name for entry in listed}
        present = {entry.name for entry in files}
        self._seen = {name: key for name, key in self._seen.items() if name in present}
        for entry in files:
            stat = entry.stat(follow_symlinks=False)
            key = (stat.st_size, stat.st_mtime_ns)
            if self._seen.get(entry.name) != key or stat.st_mtime > time.time() - SETTLE_S:
                self._seen[entry.name] = key  # still being written, or just arrived: look again
                continue
            if await asyncio.to_thread(open_for_writing, Path(entry.path)):
                continue  # a writer still holds it open (paused mid-write): look again at its close
            del self._seen[entry.name]
            await self.take(Path(entry.path), key)
        return len(self._seen)

    def reject(self, path: Path, why: str) -> None:
        """Move an entry that is not taken to rejected/, with `<name>.why` beside it."""
        target = _free_name(self.inbox / "rejected", path.name)
        try:
            os.replace(path, target)
        except OSError as error:
            log.warning("inbox: %s (and it could not be moved to rejected/: %s)", why, error)
            return
        target.with_name(target.name + ".why").write_text(f"{why}\n", encoding="utf-8")
        log.warning("inbox: rejected %s", why)

    async def take(self, path: Path, settled: tuple[int, int] | None = None) -> None:
        try:
            spec = await asyncio.to_thread(load_spec, path, None)  # reading stays off the event loop
        except UserError as error:
            self.reject(path, f"{path.name}: {error}")
            return
        try:
            after = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return  # taken away while it was read: nothing to submit
        if settled is not None and (after.st_size, after.st_mtime_ns) != settled:
            return  # written to while it was read (a writer we cannot see): settle again, read again
        target = _free_name(self.inbox / "done", path.name)
        try:
            created = await self.submit(replace(spec, source=str(target)))
        except UserError as error:  # e.g. its branch belongs to another home
            self.reject(path, f"{path.name}: {error}")
            return
        os.replace(path, target)
        log.info("inbox: %s %s as spec %s", "submitted" if created else "already had", path.name, spec.id)


def _kind(entry: os.DirEntry) -> str:
    if entry.is_symlink():
        return "a symbolic link"
    if entry.is_dir(follow_symlinks=False):
        return "a directory"
    mode = entry.stat(follow_symlinks=False).st_mode
    import stat

    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or other special file"


def open_for_writing(path: Path) -> bool:
    """Linux: whether any process (that we may look at) holds `path` open for writing — a writer that
    paused longer than SETTLE_S has not finished. Elsewhere False (the settle time alone decides)."""
    if not sys.platform.startswith("linux"):
        return False
    target = os.path.realpath(path)
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
            except (OSError, ValueError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


def _inotify(folder: Path) -> int | None:
    """A non-blocking inotify descriptor watching `folder`, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(folder), IN_EVENTS) < 0:
            os.close(fd)
            return None
        return fd
    except (OSError, AttributeError):
        return None


def _drain(fd: int) -> None:
    """Read the pending events (what changed does not matter: the folder is scanned)."""
    try:
        while os.read(fd, 65536):
            pass
    except (BlockingIOError, OSError):
        pass


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem-N.suffix` when that exists."""
    target = folder / name
    counter = 1
    while target.exists():
        stem, dot, suffix = name.partition(".")
        target = folder / f"{stem}-{counter}{dot}{suffix}"
        counter += 1
    return target
