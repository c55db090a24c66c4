"""The home directory: where every file lives inside it, and writing files there safely.

Owns the layout (`iwo.sqlite`, `daemon.lock`, `inbox/`, `specs/<id>/spec.md`,
`specs/<id>/handoffs/NN-<role>.md`, `runs/`, `worktrees/<id>`), creating it (folders 0700), the one way files
are written into it (atomically, never rewriting one that exists), and the probe that tells
whether a daemon holds the home's lock. Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path


@dataclass(frozen=True)
class Home:
    """Every path inside an iwo-lite home."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "iwo.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def spec_dir(self, spec_id: str) -> Path:
        return self.specs / spec_id

    def handoff_dir(self, spec_id: str) -> Path:
        return self.spec_dir(spec_id) / "handoffs"

    def handoff_path(self, spec_id: str, step: int, role: str) -> Path:
        return self.handoff_dir(spec_id) / f"{handoff_name(step, role)}.md"

    @property
    def worktrees(self) -> Path:
        return self.root / "worktrees"

    def worktree(self, spec_id: str) -> Path:
        return self.worktrees / spec_id

    def run_dir(self, spec_id: str, step: int, role: str, attempt: int) -> Path:
        return self.runs / spec_id / f"{step:02d}-{role}" / f"attempt-{attempt}"

    def create(self) -> None:
        """The home and its folders, mode 0700 — also a home the user made beforehand (mkdir leaves
        it 0755, readable by everyone on the machine), when it is theirs."""
        for folder in (self.root, self.inbox, self.specs, self.runs):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = self.root.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(self.root, 0o700)

    def save_spec(self, spec_id: str, text: str) -> Path:
        """`specs/<id>/spec.md`, written once (the only place spec.md is written)."""
        path = self.spec_dir(spec_id) / "spec.md"
        write_once(path, text)
        return path


def handoff_name(step: int, role: str) -> str:
    return f"{step:02d}-{role}"


def write_once(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically unless it exists; True when this call wrote it.

    A temp file left by a write that a kill -9 cut short (`.<name>.XXXXXXXX`) is removed.
    """
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*") if path.parent.is_dir() else ():
        leftover.unlink(missing_ok=True)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.unlink(temp_name)
            return False
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return True


def read_text(path: Path) -> str:
    """A file's text (undecodable bytes replaced), or a note saying why it could not be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(could not read {path}: {error.strerror})"


def daemon_pid(lock_path: Path) -> int | None:
    """The pid of the daemon holding `lock_path`, or None when no daemon holds it.

    Takes a shared flock for a moment: it fails only while a daemon holds the exclusive one,
    so the pid written in the file is then the live daemon's (never a stale, reused pid).
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
