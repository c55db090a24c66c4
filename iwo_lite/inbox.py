"""The inbox: a spec file dropped into `<home>/inbox/` is submitted once, then moved away.

Owns: noticing complete files (not hidden, not editor or download temp files, and unchanged
in size and mtime for SETTLE_S), submitting each exactly once, and moving it to `inbox/done/`
(or, when it is not a valid spec, to `inbox/rejected/` with a `.why` file beside it). The
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
        """Take each settled file; how many are still settling (look again SETTLE_S later)."""
        with os.scandir(self.inbox) as entries:
            files = [entry for entry in entries if entry.is_file(follow_symlinks=False) and is_candidate(entry.name)]
        present = {entry.name for entry in files}
        self._seen = {name: key for name, key in self._seen.items() if name in present}
        for entry in files:
            stat = entry.stat(follow_symlinks=False)
            key = (stat.st_size, stat.st_mtime_ns)
            if self._seen.get(entry.name) != key or stat.st_mtime > time.time() - SETTLE_S:
                self._seen[entry.name] = key  # still being written, or just arrived: look again
                continue
            del self._seen[entry.name]
            await self.take(Path(entry.path))
        return len(self._seen)

    async def take(self, path: Path) -> None:
        try:
            spec = await asyncio.to_thread(load_spec, path, None)  # reading stays off the event loop
        except UserError as error:
            target = _free_name(self.inbox / "rejected", path.name)
            os.replace(path, target)
            target.with_name(target.name + ".why").write_text(f"{error}\n", encoding="utf-8")
            log.warning("inbox: rejected %s: %s", path.name, error)
            return
        target = _free_name(self.inbox / "done", path.name)
        created = await self.submit(replace(spec, source=str(target)))
        os.replace(path, target)
        log.info("inbox: %s %s as spec %s", "submitted" if created else "already had", path.name, spec.id)


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
