"""Spec intake: read and check a spec file, choose its id, queue it (daemon running or not).

Owns: what a valid spec file is (UTF-8 text, not empty, at most MAX_SPEC_BYTES; the rule itself
is text.validate_spec_text, shared with Telegram), the spec id (`--id`, else
`<file-stem>-<8 hex of the content's sha256>`, so the same file twice is the same spec; a spec
sent as a message: `<slug of its first line>-<8 hex of its sha256>`, text_spec_id), and
queueing from the shell: a `queued` row in iwo_specs plus a DBOS workflow enqueued under the
spec's id. Enqueueing an id that exists attaches to it: nothing new runs. The inbox and the
daemon queue through the daemon (daemon.submit_in_daemon).
"""

from __future__ import annotations

import hashlib
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.home import Home
from iwo_lite.store import Store
from iwo_lite.store import specs as spec_rows
from iwo_lite.text import MAX_SPEC_BYTES, validate_spec_text

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
    return validate_spec_text(data, str(path))


def spec_title(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:100]
    return "untitled"


def derive_id(path: Path, text: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._")[:40] or "spec"
    return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


TEXT_SLUG_CHARS = 40


def text_spec_id(text: str) -> str:
    """The id of a spec sent as text (not a file): `<slug of its first line>-<8 hex of its sha256>`.

    The slug is the first non-blank line in lower-case ASCII (accents dropped: "Café" -> "cafe"),
    every other run of characters one "-", at most TEXT_SLUG_CHARS; "spec" when nothing is left
    (a line of emoji or punctuation, a script with no ASCII letters). The same text twice is the
    same id, so it starts nothing new.
    """
    first = next((line for line in text.splitlines() if line.strip()), "")
    ascii_only = unicodedata.normalize("NFKD", first).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only.lower()).strip("-")[:TEXT_SLUG_CHARS].rstrip("-") or "spec"
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


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


def load_spec_from_stdin(stream, spec_id: str | None) -> Spec:
    """`iwo-lite submit -`: the spec read from standard input (a binary stream), checked like a file;
    its id by the rule for a spec sent as text (text_spec_id), unless --id gives one."""
    checked = validate_spec_text(stream.read(MAX_SPEC_BYTES + 1), "- (standard input)")
    chosen = check_id(spec_id) if spec_id is not None else text_spec_id(checked)
    return Spec(id=chosen, title=spec_title(checked), text=checked, source="stdin")


def spec_from_text(text: str | bytes, filename: str | None, source: str | None) -> Spec:
    """A spec sent as a message (no file name) or a document: checked like a file, its id from the
    file rule (a document) or the message rule (text_spec_id)."""
    checked = validate_spec_text(text, filename or "the spec text")
    spec_id = derive_id(Path(filename), checked) if filename else text_spec_id(checked)
    return Spec(id=spec_id, title=spec_title(checked), text=checked, source=source)


def foreign_branch(config: Config, spec_id: str, repo: dict) -> str | None:
    """Why a new spec must not start: a workdir that cannot give it a branch (worktree mode, or a
    repository without a commit where the mode is ""), or its branch `iwo/<id>` already exists in the workdir's repository
    (another home's spec, or one of a home since deleted) — this home never built on it, and will not
    without a yes. None when the branch is free or the spec works in the shared workdir."""
    from iwo_lite import workspace

    if config.workspace == "shared":
        return None
    if not repo.get("repository") or not repo.get("head"):  # the daemon could only fail it (or go shared)
        if repo.get("repository"):
            return (f"{spec_id}: workdir {config.workdir} is a git repository without a commit, so the spec"
                    f" cannot have its own branch: make a first commit there (git commit --allow-empty -m start),"
                    f" or set workspace = \"shared\" in the config to work in the workdir itself")
        if config.workspace == "worktree":
            return (f"{spec_id}: workspace = \"worktree\", but workdir {config.workdir} is not a git repository:"
                    f" git init and commit there, or set workdir to your repository")
        return None
    branch = workspace.spec_branch(spec_id)
    tip = workspace.branch_head(repo["toplevel"], branch)
    if tip is None:
        return None
    return (f"{spec_id}: branch {branch} already exists in {repo['toplevel']} (at {tip[:12]}) and this home did not"
            f" make it (another home's spec, or one from a deleted home): delete or rename it (`git branch -m"
            f" {branch} {branch}-old`), or submit with another --id")


def submit(config: Config, spec: Spec) -> bool:
    """Queue `spec` from the shell; False when a spec with that id already existed (nothing new starts).

    No DBOS here (a submit is one small write): the row holds the spec's text and the workdir's git
    HEAD; the running daemon is poked (SIGUSR1; on Postgres NOTIFY iwo_specs reaches every worker)
    and starts the spec's workflow at once. With no daemon running it waits in the queue.
    """
    from iwo_lite.gates import poke_daemon

    created = queue(config, spec)
    poke_daemon(Home(config.home).lock)
    return created


def queue(config: Config, spec: Spec) -> bool:
    """The one submit path (the shell, the web, and the daemon's inbox and notifiers): refused when the
    workdir cannot give it a branch or its branch is another home's; the row (with the workdir's HEAD
    and branch), NOTIFY iwo_specs, spec.md. False when the id already existed. Pokes nobody."""
    from iwo_lite import store as storage
    from iwo_lite import workspace

    home = Home(config.home)
    home.create()
    storage.prepare(config.database_url)
    base = workspace.describe_repo(str(config.workdir))
    with Store.open(config.database_url) as db:
        if db.run(spec_rows.state(spec.id)) is None:
            foreign = foreign_branch(config, spec.id, base)
            if foreign:
                raise UserError(foreign)
        created = db.run(spec_rows.queued(spec.id, spec.title, spec.source, spec.text, base["head"], base["branch"]))
        db.run(spec_rows.announce_queued())
    if created:
        home.save_spec(spec.id, spec.text)
    return created
