"""The OS sandbox every agent process tree runs in (bubblewrap), and what it may write.

Owns `agent.sandbox` ("auto" | "bwrap" | "off"), `agent.sandbox_rw`, `agent.sandbox_hide`:
whether bubblewrap is here and works (`probe`, tried once per process), and the `bwrap` command
line that goes in front of an agent's argv (`Sandbox.wrap`). The reaper (runs/reaper.py) then
runs `bwrap ... -- AGENT...` as its child, so the wrapper, its pid, its journal and its kill
path stay outside and unchanged; bwrap gets a PID namespace of its own (`--unshare-pid`: when the
agent ends, everything it left, a `setsid` child included, is killed by the kernel) and
`--die-with-parent` (a SIGKILLed wrapper takes the sandbox with it; the daemon is not its parent,
so the daemon's death does not).

Inside, the whole file system is read-only, except:

* the directory the dispatch works in (the spec's worktree, or `workdir` in shared mode);
* for a worktree, the least git needs to commit on the worktree's branch: the worktree's admin
  directory (`.git/worktrees/<id>`) and `.git/objects` (new loose objects; `objects/pack` and
  `objects/info` stay read-only); the branch's ref and reflog directories
  (`refs/heads/iwo/`, `logs/refs/heads/iwo/`) are private directories of the run holding only
  its own ref (`prepare_branch`), applied to the real branch when the run is collected
  (`sync_branch`): no other ref can be moved or made (`main` lives in `refs/heads/` or
  `packed-refs`, both read-only);
* a private `/tmp` (a fresh tmpfs; paths under /tmp the agent needs stay visible, read-only);
* the attempt's own run directory, and the agent CLI's own state (`writable_state` of the kind:
  Claude Code's `~/.claude` and `~/.claude.json`);
* `agent.sandbox_rw`.

Hidden: the iwo-lite home (a read-only empty tmpfs over it: no database, no config, no other
spec; only this attempt's run directory, its spec's handoffs read-only and its worktree come
back), the database file if it lives elsewhere, and the credentials in DEFAULT_HIDE plus
`agent.sandbox_hide` (a directory becomes an empty read-only one, a file an empty read-only one).
The network is not confined. Standard library only.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("auto", "bwrap", "off")
INSTALL = "apt-get install bubblewrap"
# The usual places of credentials, relative to $HOME (README "Sandbox" lists them).
DEFAULT_HIDE: tuple[str, ...] = (
    ".ssh", ".aws", ".gnupg", ".config/gh", ".config/hub", ".netrc", ".docker", ".kube", ".azure",
    ".config/gcloud", ".git-credentials", ".config/git/credentials", ".pypirc", ".npmrc", ".yarnrc",
    ".gem/credentials", ".cargo/credentials", ".cargo/credentials.toml", ".terraform.d", ".vault-token",
    ".pgpass", ".my.cnf", ".password-store", ".local/share/keyrings", ".config/rclone", ".s3cfg",
    ".config/doctl", ".oci", ".config/op", ".mozilla", ".config/google-chrome", ".config/chromium",
)
# Sockets that hand out the user's (or root's) power without a file write: the Docker / containerd /
# Podman daemons. Hidden (an empty read-only file over each).
SYSTEM_HIDE: tuple[str, ...] = ("/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock",
                                "/run/podman/podman.sock")
# Agents of the user's keys (ssh-agent, gpg-agent, the keyring on the session bus): unset inside, and
# $XDG_RUNTIME_DIR (where their sockets live) and the ssh-agent socket's directory hidden.
AGENT_SOCKETS = ("SSH_AUTH_SOCK", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS")
_PROBED: dict[str, str | None] = {}  # bwrap path -> None (works) or why not


def probe(bwrap: str) -> str | None:
    """None when `bwrap` can make a sandbox here (tried once per process), else why not."""
    if bwrap not in _PROBED:
        try:
            proc = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent",
                                   "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "true"],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
            why = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        except (OSError, subprocess.SubprocessError) as error:
            why = str(error)
        _PROBED[bwrap] = why
    return _PROBED[bwrap]


@dataclass(frozen=True)
class Choice:
    """What `agent.sandbox` resolved to on this machine: `bwrap` (its path) or None (unconfined), and why."""

    mode: str  # the configured "auto" | "bwrap" | "off"
    bwrap: str | None
    why: str  # one line for doctor and the daemon's log

    @property
    def on(self) -> bool:
        return self.bwrap is not None

    @property
    def error(self) -> bool:
        """`agent.sandbox = "bwrap"` but bubblewrap cannot run here: no agent may start."""
        return self.mode == "bwrap" and self.bwrap is None


def choose(mode: str, path: str | None = None) -> Choice:
    """Resolve `agent.sandbox` here: "bwrap" when bubblewrap is on PATH (`path`: a PATH string) and works."""
    if mode == "off":
        return Choice(mode, None, 'agent.sandbox = "off": agents run unconfined (with your permissions)')
    found = shutil.which("bwrap", path=path)
    why = "bubblewrap (bwrap) is not installed" if found is None else probe(found)
    if why is None:
        return Choice(mode, found, f"agents run in a bubblewrap sandbox ({found}): read-only outside their "
                                   "worktree, credentials hidden, network open")
    if mode == "bwrap":
        return Choice(mode, None, f'agent.sandbox = "bwrap", but {why}; no agent can start ({INSTALL})')
    return Choice(mode, None, f"agents run unconfined: {why} ({INSTALL})")


def unconfined(mode: str, env: Mapping[str, str]) -> str | None:
    """For an attempt's trace: why it runs unconfined under `agent.sandbox = "auto"`, or None."""
    choice = choose(mode, env.get("PATH")) if mode == "auto" else None
    if choice is None or choice.on:
        return None
    return "unconfined: " + choice.why.split(": ", 1)[-1]


@dataclass(frozen=True)
class Confinement:
    """What one attempt's sandbox lets through."""

    cwd: Path  # the worktree (or the shared workdir): writable
    run_dir: Path  # writable
    home: Path  # the iwo-lite home: hidden except what is named here
    handoff_dir: Path | None = None  # read-only
    state: tuple[str, ...] = ()  # the agent CLI's own state: writable (created when missing)
    rw: tuple[str, ...] = ()  # agent.sandbox_rw
    hide: tuple[str, ...] = ()  # agent.sandbox_hide (beside DEFAULT_HIDE)
    db_path: Path | None = None  # the SQLite database, hidden wherever it is
    empty_file: Path | None = None  # an empty read-only file to hide files with
    visible: tuple[str, ...] = ()  # paths under /tmp to keep (read-only), e.g. the agent's executable
    branch: dict | None = None  # prepare_branch: the one ref the agent may move
    env: Mapping[str, str] = field(default_factory=dict)  # HOME for "~"


def _expand(path: str, env: Mapping[str, str]) -> Path:
    if path == "~" or path.startswith("~/"):
        return Path(env.get("HOME") or os.path.expanduser("~")) / path[2:]
    return Path(path)


def _under(path: Path, parent: Path) -> bool:
    """`path` is `parent` or lies inside it (by their text: both absolute and normal)."""
    text, base = str(path), str(parent).rstrip("/")
    return text == base or text.startswith(base + "/") or base == ""


def git_writable(cwd: Path) -> tuple[list[Path], str | None, str | None]:
    """For a git worktree at `cwd`: (the directories git must write to commit in it: its admin
    directory and the objects; the repository's common dir; the worktree's branch ref, e.g.
    "refs/heads/iwo/s1", or None when detached). Nothing for anything else (a main checkout in
    shared mode is writable as a whole)."""
    dotgit = cwd / ".git"
    try:
        text = dotgit.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return [], None, None
    if not text.startswith("gitdir:"):
        return [], None, None
    admin = (cwd / text[len("gitdir:"):].strip()).resolve()
    try:
        common = (admin / (admin / "commondir").read_text(encoding="utf-8").strip()).resolve()
        head = (admin / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return [admin], None, None
    ref = head[len("ref: "):] if head.startswith("ref: refs/heads/") else None
    return [admin, common / "objects"], str(common), ref


def ref_value(common: str, ref: str) -> str | None:
    """The commit `ref` points at in the repository whose common dir is `common` (loose, else packed)."""
    try:
        value = (Path(common) / ref).read_text(encoding="ascii").strip()
        if _is_sha(value):
            return value
    except (OSError, UnicodeDecodeError):
        pass
    try:
        for line in (Path(common) / "packed-refs").read_text(encoding="utf-8", errors="replace").splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref and _is_sha(sha):
                return sha
    except OSError:
        pass
    return None


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def prepare_branch(cwd: Path, run_dir: Path) -> dict | None:
    """The branch the agent may move, kept apart: its ref directory (e.g. `refs/heads/iwo/`) and reflog
    directory are, inside the sandbox, private directories of the run (`git-refs/`, `git-logs/`) that
    hold only this branch's ref, at its current value. Every other ref stays out of reach (loose ones
    unseen, packed ones read-only), and the agent's commits move only the run's copy; `sync_branch`
    applies it when the run is collected. {"common", "ref", "start", "refs", "logs"} or None."""
    _, common, ref = git_writable(cwd)
    if common is None or ref is None:
        return None
    start = ref_value(common, ref)
    name = ref.rsplit("/", 1)[-1]
    refs, logs = run_dir / "git-refs", run_dir / "git-logs"
    for folder in (refs, logs, (Path(common) / ref).parent, (Path(common) / "logs" / ref).parent):
        folder.mkdir(parents=True, exist_ok=True)
    if start is not None and not (refs / name).exists():
        (refs / name).write_text(start + "\n")
    return {"common": common, "ref": ref, "start": start, "refs": str(refs), "logs": str(logs)}


def sync_branch(branch: dict | None) -> tuple[str | None, list[str]]:
    """After a run: move the real branch to where the agent's commits left the run's copy of it (only from
    the value it had when the run started, and only to a commit); (the new head or None, the other refs the
    agent made in its private ref directory, which are dropped: not its branch)."""
    if not branch:
        return None, []
    name = branch["ref"].rsplit("/", 1)[-1]
    try:
        made = sorted(entry for entry in os.listdir(branch["refs"]) if entry not in (name, name + ".lock"))
        value = (Path(branch["refs"]) / name).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None, []
    others = [branch["ref"].rsplit("/", 1)[0] + "/" + entry for entry in made]
    if not _is_sha(value) or value == branch["start"] or ref_value(branch["common"], branch["ref"]) == value:
        return None, others
    git = ["git", "--git-dir", branch["common"]]
    if subprocess.run(git + ["cat-file", "-e", value + "^{commit}"], capture_output=True).returncode != 0:
        return None, others
    moved = subprocess.run(git + ["update-ref", "-m", "iwo-lite: the agent's commits (sandbox)", branch["ref"], value,
                                  branch["start"] or ""], capture_output=True, text=True)
    return (value if moved.returncode == 0 else None), others


@dataclass(frozen=True)
class Sandbox:
    """A working bubblewrap: `wrap` puts it in front of an agent's argv."""

    bwrap: str

    def args(self, c: Confinement) -> list[str]:
        """The bwrap options for `c` (everything before `--`)."""
        env = c.env
        home_dir = _expand("~", env)
        tmp = Path("/tmp")
        git_rw, common, _ = git_writable(c.cwd)
        args = [self.bwrap, "--die-with-parent", "--unshare-pid", "--new-session",
                "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # what lives under /tmp and must stay visible (read-only) in the private one
        visible = [home_dir, c.cwd, *(Path(p) for p in c.visible)]
        if common:
            visible.append(Path(common).parent)
        for path in _outermost(p for p in visible if _under(p, tmp) and p != tmp and p.exists()):
            args += ["--ro-bind", str(path), str(path)]
        writable = [c.cwd, *git_rw]
        for path in c.state:
            writable.append(_ensure(_expand(path, env)))
        writable += [_expand(p, env) for p in c.rw]
        for path in writable:
            if path.exists():
                args += ["--bind", str(path), str(path)]
        if common:  # a commit adds loose objects; the packs (most of the history) and objects/info stay read-only
            for sub in ("pack", "info"):
                folder = Path(common) / "objects" / sub
                folder.mkdir(parents=True, exist_ok=True)
                args += ["--ro-bind", str(folder), str(folder)]
        # the iwo-lite home: an empty read-only tmpfs, then what of it this attempt may see
        args += ["--tmpfs", str(c.home)]
        for path, mode in ((c.handoff_dir, "--ro-bind"), *((p, "--bind") for p in writable), (c.run_dir, "--bind")):
            if path is not None and _under(path, c.home) and path != c.home and path.exists():
                args += [mode, str(path), str(path)]
        args += ["--remount-ro", str(c.home)]
        # hidden: the database wherever it is, the credentials
        hidden = [_expand("~/" + p, env) for p in DEFAULT_HIDE] + [_expand(p, env) for p in c.hide]
        hidden += [Path(p) for p in SYSTEM_HIDE] + _socket_dirs(env)
        if c.db_path is not None and not _under(c.db_path, c.home):
            hidden += [c.db_path, Path(f"{c.db_path}-wal"), Path(f"{c.db_path}-shm")]
        hidden = [p.resolve() if p.is_symlink() else p for p in hidden]  # a link's target is what to hide
        for path in _outermost(p for p in hidden if not _under(p, c.home)):  # (the home is hidden already)
            if path.is_dir():
                args += ["--tmpfs", str(path), "--remount-ro", str(path)]
            elif path.exists() and c.empty_file is not None:
                args += ["--ro-bind", str(c.empty_file), str(path)]
        if c.branch:  # the branch's ref and reflog directories: the run's private copies (prepare_branch)
            args += ["--bind", c.branch["refs"], str((Path(c.branch["common"]) / c.branch["ref"]).parent),
                     "--bind", c.branch["logs"], str((Path(c.branch["common"]) / "logs" / c.branch["ref"]).parent)]
        for name in AGENT_SOCKETS:
            if name in env:
                args += ["--unsetenv", name]
        tmpdir = env.get("TMPDIR")
        if tmpdir and tmpdir.rstrip("/") != "/tmp" and not any(_under(Path(tmpdir), w) for w in writable):
            args += ["--setenv", "TMPDIR", "/tmp"]  # elsewhere it is read-only, or gone: the private /tmp
        return args + ["--setenv", "IS_SANDBOX", "1", "--chdir", str(c.cwd)]

    def wrap(self, argv: Iterable[str], c: Confinement) -> list[str]:
        return [*self.args(c), "--", *argv]


def _socket_dirs(env: Mapping[str, str]) -> list[Path]:
    """$XDG_RUNTIME_DIR and the directory of $SSH_AUTH_SOCK (not /tmp itself, private anyway)."""
    found = []
    for value in (env.get("XDG_RUNTIME_DIR"), os.path.dirname(env.get("SSH_AUTH_SOCK") or "")):
        if value and os.path.isabs(value) and value not in ("/", "/tmp", "/run", "/var/run"):
            found.append(Path(value))
    return found


def _ensure(path: Path) -> Path:
    """A state path that must exist to be bound: a file when it looks like one (a suffix), else a directory."""
    if not path.exists():
        try:
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:  # an empty .json file is "corrupted" to Claude Code
                    handle.write("{}\n" if path.suffix == ".json" else "")
            else:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            pass
    return path


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """`paths` without those that lie under another of them, shortest first."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(_under(path, other) for other in kept):
            kept.append(path)
    return kept


def empty_file(home: Path) -> Path:
    """The empty read-only file that hidden files are replaced with (made once in the home)."""
    path = home / "sandbox-empty"
    if not path.exists() or path.stat().st_size:
        path.write_bytes(b"")
        path.chmod(0o400)
    return path


def hidden_paths(config, home: Path, env: Mapping[str, str]) -> list[str]:
    """What the sandbox hides from an attempt: the iwo-lite home, the database, the credentials."""
    paths = [str(home)] + [str(_expand("~/" + p, env)) for p in DEFAULT_HIDE]
    paths += [str(_expand(p, env)) for p in config.agent.sandbox_hide]
    return paths + ([str(config.db_path)] if config.db_path is not None else [])


def visible_paths(argv: list[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """What the agent's program needs in order to run, kept visible (read-only) when it lives under
    /tmp (the sandbox's /tmp is private): its executable and the installation it belongs to, the
    interpreter of a `#!` script likewise, every argument that is an existing absolute path, and
    where a Python agent imports from: $PYTHONPATH, its virtual environment, the paths that
    environment's `.pth` files and editable installs name, and iwo-lite's own package (the built-in
    and demo agents import it, from a checkout anywhere)."""
    items = [arg for arg in argv if arg.startswith("/")]
    program = shutil.which(argv[0], path=env.get("PATH")) if argv else None
    interpreter = _interpreter(program) if program else None
    for exe in (program, shutil.which(interpreter, path=env.get("PATH")) if interpreter else None):
        installed = _installation(exe) if exe else []
        items += ([exe] if exe else []) + installed
        items += [path for prefix in installed for path in _site_paths(Path(prefix))]
    items += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p.startswith("/")]
    items.append(str(Path(__file__).resolve().parent))
    found = []
    for item in items:
        if os.path.exists(item):
            found += [os.path.abspath(item), os.path.realpath(item)]
    return tuple(dict.fromkeys(found))


def _interpreter(program: str) -> str | None:
    """The program a `#!` script runs under (`#!/usr/bin/env node` -> node), or None."""
    try:
        with open(program, "rb") as file:
            line = file.readline(256)
    except OSError:
        return None
    words = line[2:].decode(errors="replace").split() if line.startswith(b"#!") else []
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
    return words[0] if words else None


def _installation(exe: str) -> list[str]:
    """The directories `exe` is installed in, by its path and by its real path: the one above a
    `bin/` (a virtual environment, a prefix), or the outermost `node_modules` (a package's
    dependencies lie beside it)."""
    found = []
    for path in (Path(os.path.abspath(exe)), Path(os.path.realpath(exe))):
        if "node_modules" in path.parts:
            found.append(str(Path(*path.parts[:path.parts.index("node_modules") + 1])))
        elif path.parent.name == "bin":
            found.append(str(path.parent.parent))
    return found


def _site_paths(prefix: Path) -> list[str]:
    """For a virtual environment: the base installation it was made from (`home` in pyvenv.cfg) and
    the directories its site-packages' `.pth` files and setuptools' editable finders point at."""
    config = prefix / "pyvenv.cfg"
    if not config.is_file():
        return []
    found = []
    for line in config.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            found.append(str(Path(value.strip()).parent))
    for site in prefix.glob("lib/python*/site-packages"):
        for pth in site.glob("*.pth"):
            for line in pth.read_text(errors="replace").splitlines():
                if line.strip() and not line.startswith(("#", "import ", "import\t")):
                    found.append(str(site / line.strip()))  # an absolute line stays absolute
        for finder in site.glob("__editable__*finder.py"):
            found += _editable_mapping(finder.read_text(errors="replace"))
    return found


def _editable_mapping(source: str) -> list[str]:
    """The package directories a setuptools editable finder maps to (its MAPPING / NAMESPACES)."""
    found = []
    for name in ("MAPPING", "NAMESPACES"):
        match = re.search(rf"^{name}\b[^=\n]*=\s*(\{{.*\}})\s*$", source, re.MULTILINE)
        try:
            value = ast.literal_eval(match.group(1)) if match else {}
        except (ValueError, SyntaxError):
            continue
        for target in value.values() if isinstance(value, dict) else ():
            found += [target] if isinstance(target, str) else [t for t in target if isinstance(t, str)]
    return found


def for_attempt(config, home: Path, agent, argv: list[str], env: Mapping[str, str], cwd: Path, run_dir: Path,
                handoff_dir: Path | None) -> tuple[list[str], dict | None]:
    """`argv` as this attempt runs it, inside the sandbox when `agent.sandbox` resolves to bubblewrap here,
    and what to journal about it (the run directory's `sandbox` file: {"hidden", "visible", "branch"}), or
    (argv unchanged, None). OSError when `agent.sandbox = "bwrap"` and bubblewrap cannot run here."""
    choice = choose(config.agent.sandbox, env.get("PATH"))
    if choice.error:
        raise OSError(choice.why)
    if not choice.on:
        return list(argv), None
    state = getattr(agent, "writable_state", None)
    cwd, run_dir = Path(cwd).resolve(), Path(run_dir).resolve()
    confinement = Confinement(  # symlinks resolved: bwrap mounts on real directories
        cwd=cwd, run_dir=run_dir, home=Path(home).resolve(),
        handoff_dir=Path(handoff_dir).resolve() if handoff_dir is not None else None,
        state=tuple(state(env)) if state else (), rw=tuple(config.agent.sandbox_rw),
        hide=tuple(config.agent.sandbox_hide), db_path=config.db_path, empty_file=empty_file(Path(home)),
        visible=visible_paths(list(argv), env), env=env, branch=prepare_branch(cwd, run_dir))
    journal = {"hidden": hidden_paths(config, Path(home), env),
               "visible": [str(cwd), str(run_dir)] + ([str(handoff_dir)] if handoff_dir else []),
               "branch": confinement.branch}
    return Sandbox(choice.bwrap).wrap(argv, confinement), journal
