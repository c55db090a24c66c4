"""Spec intake: read and check a spec file, choose its id, queue it (daemon running or not).

Owns: what a valid spec file is (UTF-8 text, not empty, at most MAX_SPEC_BYTES), the spec id
(`--id`, else `<file-stem>-<8 hex of the content's sha256>`, so the same file twice is the
same spec), and queueing from the shell: a `queued` row in iwo_specs plus a DBOS workflow
enqueued under the spec's id. Enqueueing an id that exists attaches to it: nothing new runs.
The inbox and the daemon queue through the daemon (daemon.submit_in_daemon).
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.home import Home
from iwo_lite.store import Store
from iwo_lite.store import specs as spec_rows

MAX_SPEC_BYTES = 1024 * 1024
SPEC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Spec:
    id: str
    title: str
    text: str
    source: str | None

    def workflow_input(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text, "source": self.source}


def read_spec_file(path: Path) -> str:
    """The spec's text; UserError naming the file when it is not a readable, small UTF-8 text file."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"{path}: is a directory, not a spec file")
        if not stat.S_ISREG(mode):
            raise UserError(f"{path}: not a regular file (a pipe, device or socket is not a spec file)")
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)  # never more: a huge file is refused unread
    except FileNotFoundError:
        raise UserError(f"{path}: no such file")
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror}")
    if len(data) > MAX_SPEC_BYTES:
        raise UserError(f"{path}: spec is over the limit of {MAX_SPEC_BYTES} bytes")
    if b"\x00" in data:
        raise UserError(f"{path}: looks binary (contains NUL bytes); a spec is a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (bad byte at offset {error.start})")
    if not text.strip():
        raise UserError(f"{path}: spec file is empty")
    return text


def spec_title(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:100]
    return "untitled"


def derive_id(path: Path, text: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._")[:40] or "spec"
    return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def check_id(spec_id: str) -> str:
    if not SPEC_ID.match(spec_id):
        raise UserError(
            f"--id {spec_id!r}: a spec id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return spec_id


def load_spec(path: Path, spec_id: str | None) -> Spec:
    text = read_spec_file(path)
    chosen = check_id(spec_id) if spec_id is not None else derive_id(path, text)
    return Spec(id=chosen, title=spec_title(text), text=text, source=str(path.resolve()))


def submit(config: Config, spec: Spec) -> bool:
    """Queue `spec`; False when a spec with that id already existed (nothing new starts)."""
    from iwo_lite import durable

    durable.prepare_database(config)
    with Store.open(config.database_url) as store:
        created = store.run(spec_rows.queued(spec.id, spec.title, spec.source))
    if created:
        Home(config.home).save_spec(spec.id, spec.text)
    with durable.Client(config) as client:
        client.enqueue(spec.workflow_input())
    return created
