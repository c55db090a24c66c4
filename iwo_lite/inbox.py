"""The inbox: a spec file dropped into `<home>/inbox/` is submitted once, then moved away.

Owns: noticing complete files (not hidden, not editor or download temp files, and unchanged
in size and mtime for SETTLE_S), submitting each exactly once, and moving it to `inbox/done/`
(or, when it is not a valid spec, to `inbox/rejected/` with a `.why` file beside it). The
spec id is derived from the file's name and content (submit.derive_id), so a crash between
"submitted" and "moved" resubmits the same id, which starts nothing new.

A cheap poll (one directory listing a second) rather than a file-watching library: the inbox
is one flat folder that receives a few files a day, polling works the same on Linux and macOS
and on network filesystems, and it adds no dependency.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable

from iwo_lite.errors import UserError
from iwo_lite.intake import Spec, load_spec

log = logging.getLogger("iwo_lite.inbox")

POLL_S = 1.0
SETTLE_S = 1.0
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
        while True:
            try:
                await self.scan()
            except Exception as error:  # a vanished or unreadable file: log it, keep watching
                log.warning("inbox: %s", error)
            await asyncio.sleep(POLL_S)

    async def scan(self) -> None:
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


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem-N.suffix` when that exists."""
    target = folder / name
    counter = 1
    while target.exists():
        stem, dot, suffix = name.partition(".")
        target = folder / f"{stem}-{counter}{dot}{suffix}"
        counter += 1
    return target
