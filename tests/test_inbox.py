"""Spec intake by dropping a file into <home>/inbox/: submitted exactly once, then moved."""

from __future__ import annotations

import time

from conftest import DEFAULT_ROLE_COUNTS, wait_for


def ids(home) -> set[str]:
    return {spec["id"] for spec in home.specs()}


def test_a_dropped_spec_is_submitted_once_and_moved_to_done(home):
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    inbox = home.root / "inbox"
    (inbox / "add-login.md").write_text("# Add a login page\nWith a form.\n")
    done = inbox / "done" / "add-login.md"
    wait_for(done.exists, 30)
    assert not (inbox / "add-login.md").exists()
    (spec_id,) = ids(home)
    assert spec_id.startswith("add-login-")
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    assert home.spec(spec_id)["title"] == "Add a login page"


def test_partial_hidden_and_temp_files_are_left_alone(home):
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    inbox = home.root / "inbox"
    for name in (".hidden.md", "draft.md.tmp", "draft.md~", "download.md.part", "#autosave#"):
        (inbox / name).write_text("# not yet\n")
    slow = inbox / "slow.md"
    with open(slow, "w") as handle:  # written in pieces, more slowly than the daemon looks
        for piece in ("# Slow spec\n", "line two\n", "line three\n"):
            handle.write(piece)
            handle.flush()
            time.sleep(0.7)
    wait_for(lambda: (inbox / "done" / "slow.md").exists(), 30)
    (spec_id,) = ids(home)
    assert home.spec(spec_id)["title"] == "Slow spec"
    assert (home.root / "specs" / spec_id / "spec.md").read_text() == "# Slow spec\nline two\nline three\n"
    time.sleep(2.5)
    for name in (".hidden.md", "draft.md.tmp", "draft.md~", "download.md.part", "#autosave#"):
        assert (inbox / name).exists(), name
    assert len(ids(home)) == 1


def test_a_bad_file_is_moved_to_rejected_with_the_reason(home):
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    inbox = home.root / "inbox"
    (inbox / "empty.md").write_text("   \n")
    (inbox / "blob.bin").write_bytes(b"\x00\x01binary")
    wait_for(lambda: (inbox / "rejected" / "empty.md.why").exists() and (inbox / "rejected" / "blob.bin.why").exists(), 30)
    assert "empty" in (inbox / "rejected" / "empty.md.why").read_text()
    assert "binary" in (inbox / "rejected" / "blob.bin.why").read_text()
    assert (inbox / "rejected" / "blob.bin").read_bytes() == b"\x00\x01binary"
    assert ids(home) == set()
    (inbox / "good.md").write_text("# Still works\n")  # the daemon goes on
    wait_for(lambda: (inbox / "done" / "good.md").exists(), 30)


def test_a_file_already_submitted_starts_nothing_new(home):
    """The crash window between "submitted" and "moved": the file is still in the inbox after a
    restart although its spec was queued. Its id comes from its name and content, so taking it
    again attaches to the same spec."""
    text = "# Twice\nthe same spec\n"
    spec_id = home.submit(home.spec_file("twice.md", text))  # as if the daemon died right after queueing
    inbox = home.root / "inbox"
    (inbox / "twice.md").write_text(text)
    daemon = home.start()
    wait_for(lambda: (inbox / "done" / "twice.md").exists(), 30)
    home.wait_state(spec_id, "done")
    (inbox / "twice.md").write_text(text)  # and dropped again later
    wait_for(lambda: (inbox / "done" / "twice-1.md").exists(), 30)
    assert ids(home) == {spec_id}
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    assert "already had twice.md" in daemon.log()


def test_a_writer_that_pauses_longer_than_the_settle_time_is_waited_for(home):
    """A file held open for writing is not taken, however long its writer pauses (the old inbox
    took it half-written after 1 s of quiet, and the rest landed in done/ unread)."""
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    inbox = home.root / "inbox"
    with open(inbox / "paused.md", "w") as handle:
        handle.write("# A paused writer\nfirst half\n")
        handle.flush()
        time.sleep(3.5)  # a writer that pauses: three settle intervals with nothing new
        assert not (inbox / "done" / "paused.md").exists()
        handle.write("second half\n")
    wait_for((inbox / "done" / "paused.md").exists, 30)
    (spec_id,) = ids(home)
    text = (home.root / "specs" / spec_id / "spec.md").read_text()
    assert text.endswith("first half\nsecond half\n"), text


def test_entries_that_are_not_regular_files_are_rejected_with_the_reason(home, tmp_path):
    import os

    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    inbox = home.root / "inbox"
    target = tmp_path / "elsewhere.md"
    target.write_text("# Somewhere else\nbody\n")
    os.symlink(target, inbox / "link.md")
    os.mkfifo(inbox / "pipe.md")
    (inbox / "folder.md").mkdir()
    rejected = inbox / "rejected"
    for name, kind in (("link.md", "symbolic link"), ("pipe.md", "FIFO"), ("folder.md", "directory")):
        why = rejected / f"{name}.why"
        wait_for(why.exists, 30, f"{name} rejected")
        assert kind in why.read_text() and not (inbox / name).exists()
    assert target.exists() and ids(home) == set()  # nothing submitted, the link's target untouched
    assert "not a regular file" in daemon.log()
