"""One spec at a time: the lock every shell command that changes a spec holds while it works.

Owns `spec_lock`. Two commands on one spec at the same instant (cancel and resume, two resumes,
an answer and a cancel, clean and resume) would otherwise each read the spec's state, both find
it allows them, and both act: a workflow resumed and cancelled at once, an answer recorded on a
spec that was just cancelled. Holding this lock, the second command starts only after the first
has finished, reads the state the first left, and is done or refused with one line.

SQLite: `fcntl.flock` on `<home>/locks/<spec id>.lock` (0600), which the kernel releases when
the process dies, so a killed command never leaves the spec locked. Postgres (several
machines): a session-level advisory lock on the spec id, released when its connection closes.
The lock is only for the shell's commands: the daemon's own changes are guarded UPDATEs (the
states a change may come from are in its WHERE), which need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from iwo_lite.errors import UserError
from iwo_lite.store import is_postgres

WAIT_S = 60.0  # how long a command waits for another one on the same spec
POLL_S = 0.02


@contextlib.contextmanager
def spec_lock(database_url: str, home_root: Path, spec_id: str, wait_s: float = WAIT_S):
    """Hold the spec's lock for the `with` block; UserError (exit 2) when another command keeps it
    longer than `wait_s`."""
    if is_postgres(database_url):
        with _pg_lock(database_url, spec_id, wait_s):
            yield
        return
    locks = Path(home_root) / "locks"
    locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(locks / f"{spec_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        end = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise UserError(_busy(spec_id, wait_s)) from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _pg_lock(database_url: str, spec_id: str, wait_s: float):
    from iwo_lite.store import pg

    conn = pg.connect(database_url)
    try:
        end = time.monotonic() + wait_s
        while not conn.execute("SELECT pg_try_advisory_lock(hashtext(?)) AS ok",
                               ("iwo-spec:" + spec_id,)).fetchone()["ok"]:
            if time.monotonic() > end:
                raise UserError(_busy(spec_id, wait_s))
            time.sleep(POLL_S * 5)
        yield
    finally:
        conn.close()  # ends the session: the advisory lock goes with it


def _busy(spec_id: str, wait_s: float) -> str:
    return (f"{spec_id}: another iwo-lite command has been working on this spec for over {wait_s:.0f}s;"
            " try again when it has finished")
