"""Configuration: one TOML file -> frozen dataclasses (config_keys.py), validated once.

This module owns:

* where the home is (``--home`` > ``$IWO_HOME`` > ``~/.iwo-lite``) and which config file is
  read (``--config`` > ``<home>/config.toml`` > built-in defaults);
* reading the key names and defaults documented in ``config.example.toml`` (a contract: users
  and their scripts rely on them). Each key is written once, as a dataclass field whose metadata
  holds its checker (config_keys.py, config_checks.py); the keys a file may hold are derived
  from the fields;
* which settings a spec fixes when it starts (``ADMISSION``) — every other key is read live;
* the environment overrides ``$IWO_DATABASE_URL`` and ``$IWO_EXECUTOR_ID``.

Every problem is a :class:`ConfigError` whose message is one line naming the file (or the
environment variable) and the dotted key at fault. The Telegram token is never read into a
:class:`Config`: only the *name* of the variable that holds it is, so it cannot leak through
``repr`` or an error message.

Standard library only, and no DBOS import: ``status`` loads the config and must start fast.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from iwo_lite import config_checks as check
from iwo_lite.config_checks import parse_duration
from iwo_lite.config_keys import (  # the keys (config_keys.py), re-exported: callers import them from here
    AGENT_KINDS,
    AgentConfig,
    AgentsConfig,
    ApprovalsConfig,
    BudgetConfig,
    CODEX_PRICES,
    CONFIG_NAME,
    ClaudeKindConfig,
    CodexKindConfig,
    DB_NAME,
    DEFAULT_HOME,
    DISPATCH_MODES,
    EXECUTABLES,
    GitConfig,
    JsonKindConfig,
    KIND_SECTIONS,
    LoopConfig,
    MAX_BUDGET_USD,
    MIN_WORKER_TIMEOUT_S,
    NOTIFY_EVENTS,
    ON_DONE,
    ON_TIMEOUT,
    PERMISSIONS,
    RoleConfig,
    SANDBOX_MODES,
    SECTIONS,
    TelegramConfig,
    WORKSPACES,
    WebConfig,
    _default_roles,
    key,
    kind_for,
)
from iwo_lite.roles import ROLES
from iwo_lite.store import sqlite_path, sqlite_url

__all__ = [
    "ROLES",
    "ConfigError",
    "parse_duration",
    "resolve_home",
    "AgentConfig",
    "RoleConfig",
    "LoopConfig",
    "ApprovalsConfig",
    "TelegramConfig",
    "GitConfig",
    "BudgetConfig",
    "Config",
    "ADMISSION",
    "load_config",
]


class ConfigError(Exception):
    """A bad config file, key, value or environment override.

    ``str(error)`` is one line naming the file (or environment variable) and the dotted key
    at fault, e.g.::

        /h/config.toml: agent.timeout: expected a duration like 90s, 45m, 24h or 2d, got "soon"

    ``source`` and ``key`` hold those two parts when known (else None).
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.source = source
        self.key = key


# --------------------------------------------------------------------------- durations

# --------------------------------------------------------------------------- home


def _expand(text: str, environ: Mapping[str, str]) -> str:
    """``~`` and ``~/x`` expand with ``environ["HOME"]`` when set; ``~user`` as usual."""
    if text == "~" or text.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        return home + text[1:]
    return os.path.expanduser(text)


def _absolute(text: str, environ: Mapping[str, str], base: Path | None = None) -> Path:
    """Expand ``~``, then make absolute against ``base`` (default: the cwd). No symlinks resolved."""
    path = Path(_expand(text, environ))
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return Path(os.path.normpath(path))


def resolve_home(cli_home: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The home directory: ``--home`` > ``$IWO_HOME`` > ``~/.iwo-lite``.

    Returns an absolute path with ``~`` expanded; does not create it. An empty
    ``$IWO_HOME`` counts as unset; an empty ``--home`` is an error.
    """
    if cli_home is not None:
        if str(cli_home).strip() == "":
            raise ConfigError("--home: expected a directory, got an empty string", source="--home")
        return _absolute(str(cli_home), environ)
    env_home = environ.get("IWO_HOME", "")
    if env_home.strip():
        return _absolute(env_home, environ)
    return _absolute(DEFAULT_HOME, environ)


# --------------------------------------------------------------------------- the dataclasses


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Build it with :func:`load_config`."""

    home: Path
    config_path: Path | None  # the file actually read; None when running on defaults
    # resolved: $IWO_DATABASE_URL > key > sqlite:///<home>/iwo.sqlite
    database_url: str = key("", check.string)
    # resolved: $IWO_EXECUTOR_ID > key > hostname
    executor_id: str = key("", check.string)
    # Postgres: a worker silent this long is presumed gone; another recovers its specs
    worker_timeout: float = key(30.0, check.duration_at_least(MIN_WORKER_TIMEOUT_S, "a worker's heartbeat comes "
                                                             f"every {MIN_WORKER_TIMEOUT_S / 3:g}s"))
    workdir: Path = key(Path("."), check.nonempty_string)  # absolute once loaded
    workspace: str | None = key(None, check.choice_or_auto(WORKSPACES))  # None: "worktree" when workdir is a git repository
    agent: AgentConfig = field(default_factory=AgentConfig)
    roles: Mapping[str, RoleConfig] = field(default_factory=_default_roles)  # all six roles
    loop: LoopConfig = field(default_factory=LoopConfig)
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    git: GitConfig = field(default_factory=GitConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    web: WebConfig = field(default_factory=WebConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)  # [agents.<kind>]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def db_path(self) -> Path | None:
        """The SQLite file when the database is SQLite, else None."""
        if not self.database_url.startswith("sqlite:///"):
            return None
        return sqlite_path(self.database_url)  # never empty: _database_url rejects sqlite:/// alone

    @property
    def database_url_redacted(self) -> str:
        """``database_url`` with any password replaced by ``***`` (for messages and logs)."""
        return check.redact_url(self.database_url)

    def get(self, dotted: str) -> Any:
        """A value by its dotted key, e.g. ``config.get("approvals.timeout")``."""
        value: Any = self
        for part in dotted.split("."):
            value = value[part] if isinstance(value, Mapping) else getattr(value, part)
        return value

    def admission_settings(self) -> dict[str, Any]:
        """The settings a spec fixes when it starts (the `admit` step records them): see ADMISSION."""
        return {name: self.get(dotted) for name, dotted in ADMISSION.items()}


# What a spec fixes when it starts (recorded by its `admit` step, under these names), so that a
# config change never changes the rules for a spec half-way; every other key is read live, at
# the moment it is used (agent.*, roles.*, telegram.*: the next dispatch or message uses the new value).
ADMISSION: dict[str, str] = {
    "max_rework": "loop.max_rework",
    "gate_timeout": "approvals.timeout",
    "on_timeout": "approvals.on_timeout",
    "remind_every": "approvals.remind_every",
}


def database_secret_env(config: Config) -> tuple[str, ...]:
    """The variables that may hold the database's password, never to reach an agent: $IWO_DATABASE_URL,
    and on Postgres with no password in the URL, $PGPASSWORD (libpq takes the password from it)."""
    names = ("IWO_DATABASE_URL",)
    if config.database_url.startswith(("postgresql:", "postgres:")) and urlsplit(config.database_url).password is None:
        names += ("PGPASSWORD",)
    return names


def in_config_file(config: Config, text: str) -> str:
    """`text` (about a key) headed by the config file it comes from, when there is one."""
    return f"{config.config_path}: {text}" if config.config_path else text


def workdir_problem(config: Config) -> str | None:
    """Why `workdir` cannot be worked in (every agent starts in it), or None."""
    if config.workdir.is_dir():
        return None
    what = "is not a directory" if config.workdir.exists() else "does not exist"
    return f"workdir: {config.workdir} {what} (the repository the agents work in)"


def unreadable_prompt_files(config: Config) -> list[str]:
    """One line per `roles.<role>.prompt_file` that cannot be read now (the daemon refuses to start,
    `doctor` marks it ✗): every prompt of that role would go out without its brief."""
    lines = []
    for role, role_config in config.roles.items():
        path = role_config.prompt_file
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            lines.append(in_config_file(config, f"roles.{role}.prompt_file: {path}: {error.strerror or error}"))
    return lines


def _file_keys(cls: type) -> dict[str, Any]:
    """The keys a config file may hold in a section: the fields with a checker."""
    return {f.name: f for f in fields(cls) if "check" in f.metadata}


# Every key a config file may hold: top-level keys, sections, and the keys of each section.
_TOP_KEYS = tuple(_file_keys(Config)) + tuple(SECTIONS) + ("roles", "agents")
_KIND_KEYS: dict[str, tuple[str, ...]] = {name: tuple(_file_keys(cls)) for name, cls in KIND_SECTIONS.items()}
_SECTION_KEYS: dict[str, tuple[str, ...]] = {name: tuple(_file_keys(cls)) for name, cls in SECTIONS.items()}
_ROLE_KEYS = tuple(_file_keys(RoleConfig))
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- loading


def load_config(
    home: Path,
    config_path: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """Read and validate the configuration.

    ``config_path`` (``--config``) must exist. Without it ``<home>/config.toml`` is read if
    it exists, else every key takes its default. Raises :class:`ConfigError` (one line,
    naming the file and the dotted key) on the first problem found.
    """
    home = _absolute(str(home), environ)
    if config_path is not None:
        path: Path | None = _absolute(str(config_path), environ)
        data = _read_toml(path, required=True)
    else:
        candidate = home / CONFIG_NAME
        if candidate.exists():
            path = candidate
            data = _read_toml(path, required=False)
        else:
            path, data = None, {}
    return _build(home, path, data, environ)


def _read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    src = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        what = "config file not found" if required else "not found"
        raise ConfigError(f"{src}: {what}", source=src) from None
    except IsADirectoryError:
        raise ConfigError(f"{src}: cannot read the config file: it is a directory", source=src) from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{src}: cannot read the config file: {reason}", source=src) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{src}: line {line}: not valid UTF-8 (TOML files must be UTF-8)", source=src) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = "invalid TOML"
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
        if match:
            where = f"line {match.group(1)}, column {match.group(2)}: invalid TOML"
            message = message[: match.start()]
        else:
            match = re.search(r"\s*\(at end of document\)\s*$", message)
            if match:
                where = f"line {text.count(chr(10)) + 1} (end of file): invalid TOML"
                message = message[: match.start()]
        raise ConfigError(f"{src}: {where}: {message}", source=src) from None


def _build(home: Path, path: Path | None, data: dict[str, Any], environ: Mapping[str, str]) -> Config:
    src = str(path) if path is not None else "(defaults)"
    base_dir = path.parent if path is not None else home
    _reject_unknown(src, "", data, _TOP_KEYS)
    top = _checked(src, "", Config, data)
    sections = {name: cls(**_checked(src, name, cls, _table(src, name, data.get(name, {}), _SECTION_KEYS[name])))
                for name, cls in SECTIONS.items()}
    if sections["git"].on_done == "command" and not sections["git"].done_command.strip():
        raise _error(src, "git.done_command", 'required with git.on_done = "command" '
                                              '(e.g. "gh pr create --fill --head {branch}")')
    return Config(
        home=home,
        config_path=path,
        database_url=_resolve_database_url(src, top.get("database_url", ""), home, base_dir, environ),
        executor_id=_resolve_executor_id(top.get("executor_id", ""), environ),
        worker_timeout=top.get("worker_timeout", Config.worker_timeout),
        workdir=_absolute(top.get("workdir", "."), environ),
        workspace=top.get("workspace"),
        roles=_roles(src, data, base_dir, environ),
        agents=_agents(src, data),
        **sections,
    )


def _checked(src: str, prefix: str, cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """The section's keys present in `table`, each through its checker (defaults are the dataclass's)."""
    values = {}
    for name, spec in _file_keys(cls).items():
        if name not in table:
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        try:
            values[name] = spec.metadata["check"](table[name])
        except check.Bad as bad:
            raise _error(src, dotted + bad.suffix, str(bad)) from None
    return values


def _table(src: str, dotted: str, table: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """Table `dotted` of the file, its keys checked against the `allowed` ones."""
    if not isinstance(table, dict):
        raise _error(src, dotted, f"expected a table ([{dotted}]), got {check.show(table)}")
    _reject_unknown(src, dotted, table, allowed)
    return table


def _roles(src: str, data: Mapping[str, Any], base_dir: Path, environ: Mapping[str, str]) -> Mapping[str, RoleConfig]:
    roles_table = data.get("roles", {})
    if not isinstance(roles_table, dict):
        raise _error(src, "roles", f"expected a table of roles ([roles.reviewer], ...), got {check.show(roles_table)}")
    _reject_unknown(src, "roles", roles_table, ROLES, what="role")
    roles: dict[str, RoleConfig] = {}
    for role in ROLES:
        dotted = f"roles.{role}"
        values = _checked(src, dotted, RoleConfig, _table(src, dotted, roles_table.get(role, {}), _ROLE_KEYS))
        if values.get("prompt_file") is not None:
            values["prompt_file"] = _absolute(values["prompt_file"], environ, base_dir)
        roles[role] = RoleConfig(**values)
    return MappingProxyType(roles)


def _agents(src: str, data: Mapping[str, Any]) -> AgentsConfig:
    table = data.get("agents", {})
    if not isinstance(table, dict):
        raise _error(src, "agents", f"expected a table of agent kinds ([agents.claude], ...), got {check.show(table)}")
    _reject_unknown(src, "agents", table, tuple(KIND_SECTIONS), what="agent kind")
    return AgentsConfig(**{kind: cls(**_checked(src, f"agents.{kind}", cls,
                                                _table(src, f"agents.{kind}", table.get(kind, {}), _KIND_KEYS[kind])))
                           for kind, cls in KIND_SECTIONS.items()})


def _resolve_database_url(src: str, value: str, home: Path, base_dir: Path, environ: Mapping[str, str]) -> str:
    """The file's value is checked even when the environment overrides it."""
    database_url = _database_url(src, "database_url", value, home, base_dir, environ)
    db_env = environ.get("IWO_DATABASE_URL", "")
    if db_env.strip():
        database_url = _database_url("$IWO_DATABASE_URL", "database_url", db_env, home, Path.cwd(), environ)
    return database_url


def _resolve_executor_id(value: str, environ: Mapping[str, str]) -> str:
    executor_id = value.strip()
    exec_env = environ.get("IWO_EXECUTOR_ID", "")
    if exec_env.strip():
        executor_id = exec_env.strip()
    return executor_id or socket.gethostname() or "localhost"


def _error(src: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{src}: {key}: {message}", source=src, key=key)


def _dotted(prefix: str, key: str) -> str:
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{prefix}.{part}" if prefix else part


def _reject_unknown(src: str, prefix: str, table: Mapping[str, Any], allowed: tuple[str, ...], what: str = "key") -> None:
    for key in table:
        if key in allowed:
            continue
        dotted = _dotted(prefix, key)
        message = f"unknown {what}"
        if prefix == "telegram" and key == "token":
            raise _error(src, dotted, message + "; the token is never read from the config file: put it in the"
                         " environment variable named by telegram.token_env")
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean '{close[0]}'?"
        else:
            elsewhere = _find_elsewhere(key, prefix)
            if elsewhere:
                message += f"; did you mean '{elsewhere}'?"
                if "." not in elsewhere:
                    message += " (top-level keys go above the first [section])"
            else:
                message += f"; expected one of: {', '.join(allowed)}"
        raise _error(src, dotted, message)


def _find_elsewhere(key: str, prefix: str) -> str | None:
    """A key that exists under another section (e.g. ``max_rework`` written at the top level)."""
    places = [k for k in _TOP_KEYS if k not in _SECTION_KEYS and k != "roles"]
    places += [f"{s}.{k}" for s, ks in _SECTION_KEYS.items() for k in ks]
    for place in places:
        if place.rsplit(".", 1)[-1] == key and place.rsplit(".", 1)[0] != prefix:
            return place
    return None


def _database_url(src: str, key: str, value: str, home: Path, base: Path, environ: Mapping[str, str]) -> str:
    """Validate and normalise a database URL; "" means the SQLite file in the home.

    A relative SQLite path is resolved against ``base`` (the config file's directory for the
    key, the cwd for ``$IWO_DATABASE_URL``) so every command opens the same file.
    ``postgres://`` is rewritten to ``postgresql://`` (SQLAlchemy only knows the latter).
    """
    value = value.strip()
    if value == "":
        return sqlite_url(home / DB_NAME)
    if value.startswith("sqlite:///"):
        rest = value[len("sqlite:///"):]
        file_part, sep, query = rest.partition("?")
        file_part = unquote(file_part)  # as SQLAlchemy reads it: %3F is a "?" in the path
        if file_part == "" or file_part == ":memory:":
            raise _error(src, key, "expected sqlite:///<path to a file>; an in-memory database would lose every spec")
        path = _absolute(file_part, environ, base)
        return f"{sqlite_url(path)}{sep}{query}"
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        rest = value.split("://", 1)[1]
        if not rest or rest.startswith("?"):
            raise _error(src, key, "expected postgresql://user:password@host/dbname, got no host or database")
        if scheme == "postgres":
            return "postgresql://" + rest
        return value
    # Don't echo the whole value: a mistyped URL may still carry a password.
    shown = f"a URL starting with {check.show(scheme + '://')}" if scheme else check.show(check.redact_url(value)[:30])
    raise _error(src, key, f'expected "" (the SQLite file in the home), sqlite:///<path> or postgresql://..., got {shown}')
