"""The inbox's rule "take a file only when complete" at the unit level: a file written to while it
was read (by a writer the /proc scan cannot see: another user's process, another machine over a
network filesystem) is not submitted from that read; it settles again and is read again whole.

The process-level half (a paused writer, entries that are not regular files) is tests/test_inbox.py.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from iwo_lite.inbox import InboxWatcher

pytestmark = pytest.mark.unit


def test_a_file_that_changed_while_it_was_read_is_read_again(tmp_path):
    inbox = tmp_path / "inbox"
    for folder in (inbox, inbox / "done", inbox / "rejected"):
        folder.mkdir()
    submitted = []

    async def submit(spec):
        submitted.append(spec)
        return True

    watcher = InboxWatcher(inbox, submit)
    path = inbox / "grow.md"
    path.write_text("# Growing\nfirst half\n")
    stat = path.stat()
    settled = (stat.st_size, stat.st_mtime_ns)
    with open(path, "a") as handle:  # the rest arrives after the scan saw it settled
        handle.write("second half\n")
    asyncio.run(watcher.take(path, settled))
    assert submitted == [] and path.exists() and not (inbox / "done" / "grow.md").exists()
    old = time.time() - 10
    os.utime(path, (old, old))
    for _ in range(2):  # seen, then seen unchanged: taken
        asyncio.run(watcher.scan())
    assert [spec.text for spec in submitted] == ["# Growing\nfirst half\nsecond half\n"]
    assert (inbox / "done" / "grow.md").read_text() == submitted[0].text
