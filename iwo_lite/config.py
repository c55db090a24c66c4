"""Configuration: one TOML file -> frozen dataclasses, validated once.

This module owns:

* where the home is (``--home`` > ``$IWO_HOME`` > ``~/.iwo-lite``) and which config file is
  read (``--config`` > ``<home>/config.toml`` > built-in defaults);
* the key names and defaults documented in ``config.example.toml`` (a contract: users and
  their scripts rely on them). Each key is written once, as a dataclass field whose metadata
  holds its checker (config_checks.py); the keys a file may hold are derived from the fields;
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
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from iwo_lite import config_checks as check
from iwo_lite.config_checks import parse_duration
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

DEFAULT_HOME = "~/.iwo-lite"
CONFIG_NAME = "config.toml"
DB_NAME = "iwo.sqlite"
MIN_WORKER_TIMEOUT_S = 3.0
MAX_BUDGET_USD = 1e6  # a budget past this is a typo (1e308 would never stop anything)
DISPATCH_MODES = ("subprocess", "tmux")
SANDBOX_MODES = ("auto", "bwrap", "off")
ON_TIMEOUT = ("reject", "approve")
AGENT_KINDS = ("claude", "codex", "json")
EXECUTABLES = {"claude": "claude", "claude.exe": "claude", "codex": "codex", "codex.js": "codex"}  # an agent.command run by this name is that kind  # agents/__init__.py KINDS: one module per kind
PERMISSIONS = ("read", "edit", "run", "full")
WORKSPACES = ("worktree", "shared")
ON_DONE = ("keep", "merge", "command")
NOTIFY_EVENTS = ("done", "failed", "rejected", "paused")


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



# --------------------------------------------------------------------------- the keys


def key(default: Any, checker, **more) -> Any:
    """A config key: its default and the checker of a value read from the file."""
    return field(default=default, metadata={"check": checker}, **more)


@dataclass(frozen=True)
class AgentConfig:
    """``[agent]``: how an agent process is started."""

    command: tuple[str, ...] = key(("claude", "-p", "--output-format", "json"), check.command)
    timeout: float = key(2700.0, check.duration)  # seconds ("45m")
    max_concurrent: int = key(2, check.int_at_least(1))
    retries: int = key(2, check.int_at_least(0))
    dispatch: str = key("subprocess", check.choice(DISPATCH_MODES))
    tmux_keep: float = key(600.0, check.duration)  # seconds a finished tmux window stays open ("10m")
    kind: str | None = key(None, check.choice_or_auto(AGENT_KINDS))  # None: "claude" when the executable is named claude
    stall_timeout: float = key(600.0, check.duration)  # no stream event for this long: the run is stalled ("10m")
    overload_wait: float = key(7200.0, check.duration)  # backing off from 429/529 at most this long in all ("2h")
    max_output: int = key(20 * 2**20, check.size_between(64 * 2**10, 2**30))  # bytes of an agent's stdout kept ("20MiB")
    global_max_concurrent: int = key(0, check.int_at_least(0))  # Postgres: across all workers; 0 = no limit
    sandbox: str = key("auto", check.choice(SANDBOX_MODES))  # "auto": bubblewrap where it works, else off
    sandbox_rw: tuple[str, ...] = key((), check.path_list)  # more writable paths inside the sandbox
    sandbox_hide: tuple[str, ...] = key((), check.path_list)  # more hidden paths (beside the credentials list)

    def default_kind(self) -> str:
        """agent.kind, else by the executable's name (EXECUTABLES), else "json"."""
        return self.kind or kind_for(self.command)


def kind_for(command) -> str:
    """The agent kind of an argv by its executable's name, else "json"."""
    name = PurePath(str(command[0])).name if command else ""
    return EXECUTABLES.get(name, "json")


@dataclass(frozen=True)
class RoleConfig:
    """``[roles.<role>]``: per-role additions to the agent command."""

    extra_args: tuple[str, ...] = key((), check.string_list)
    prompt_file: Path | None = key(None, check.nonempty_string)  # absolute (against the config file's directory)
    model: str | None = key(None, check.nonempty_string)
    permissions: str | None = key(None, check.choice(PERMISSIONS))  # None: the role's default profile
    agent: str | None = key(None, check.choice(AGENT_KINDS))  # None: agent.kind


@dataclass(frozen=True)
class ClaudeKindConfig:
    """``[agents.claude]``: the Claude Code CLI."""

    command: tuple[str, ...] = key((), check.command_or_empty)  # [] = agent.command when it is claude's, else ["claude"]


# $ per million tokens: input, cached input, output (OpenAI's list prices as of 2026-12; Codex reports
# tokens, not dollars). A model takes the longest key that starts its name; "*" is any other model
# (priced high on purpose, so that a budget still holds).
CODEX_PRICES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("gpt-5", (1.25, 0.125, 10.0)),
    ("gpt-5-mini", (0.25, 0.025, 2.0)),
    ("gpt-5-nano", (0.05, 0.005, 0.4)),
    ("gpt-5-pro", (15.0, 15.0, 120.0)),
    ("o3", (2.0, 0.5, 8.0)),
    ("o4-mini", (1.1, 0.275, 4.4)),
    ("*", (15.0, 1.5, 120.0)),
)


@dataclass(frozen=True)
class CodexKindConfig:
    """``[agents.codex]``: the OpenAI Codex CLI."""

    command: tuple[str, ...] = key((), check.command_or_empty)  # [] = agent.command when it is codex's, else ["codex"]
    model: str = key("", check.string)  # "" = Codex's own default (its config.toml); roles.<role>.model wins
    prices: tuple[tuple[str, tuple[float, float, float]], ...] = key(CODEX_PRICES, check.price_table)  # (model, $)


@dataclass(frozen=True)
class JsonKindConfig:
    """``[agents.json]``: any command that prints one result object."""

    command: tuple[str, ...] = key((), check.command_or_empty)  # [] = agent.command


@dataclass(frozen=True)
class AgentsConfig:
    """``[agents.<kind>]``: each agent kind's own settings."""

    claude: ClaudeKindConfig = field(default_factory=ClaudeKindConfig)
    codex: CodexKindConfig = field(default_factory=CodexKindConfig)
    json: JsonKindConfig = field(default_factory=JsonKindConfig)

    def command(self, kind: str, agent: AgentConfig) -> tuple[str, ...]:
        """The argv of `kind`: [agents.<kind>] command, else agent.command when it runs this kind (its
        executable is named so, or it is some other program and agent.kind names this kind), else
        the kind's executable (`kind = "codex"` with the default claude command runs codex)."""
        own = getattr(self, kind).command
        if own:
            return own
        named = kind_for(agent.command)
        if kind == "json" or named == kind or (agent.kind == kind and named == "json"):
            return agent.command
        return (kind,)


KIND_SECTIONS: dict[str, type] = {"claude": ClaudeKindConfig, "codex": CodexKindConfig, "json": JsonKindConfig}


@dataclass(frozen=True)
class LoopConfig:
    """``[loop]``."""

    max_rework: int = key(3, check.int_at_least(0))


@dataclass(frozen=True)
class ApprovalsConfig:
    """``[approvals]``: the human gate."""

    timeout: float = key(86400.0, check.duration)  # seconds ("24h")
    on_timeout: str = key("reject", check.choice(ON_TIMEOUT))
    remind_every: float | None = key(14400.0, check.duration_or_empty)  # seconds ("4h"); None = never


@dataclass(frozen=True)
class TelegramConfig:
    """``[telegram]``. Holds the *name* of the token's environment variable, never the token."""

    token_env: str = key("IWO_TELEGRAM_TOKEN", check.env_name)
    allowed_chat_ids: tuple[int, ...] = key((), check.int_list)
    allowed_user_ids: tuple[int, ...] = key((), check.int_list)  # empty = anyone in an allowed chat
    base_url: str = key("https://api.telegram.org/bot", check.http_url)
    notify: tuple[str, ...] = key(NOTIFY_EVENTS, check.subset_of(NOTIFY_EVENTS))  # spec events sent to the chats

    def token(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The bot token from ``$<token_env>``; None when unset or blank."""
        value = environ.get(self.token_env, "").strip()
        return value or None

    def enabled(self, environ: Mapping[str, str] = os.environ) -> bool:
        """True when there is a token and at least one allowed chat."""
        return self.token(environ) is not None and len(self.allowed_chat_ids) > 0


@dataclass(frozen=True)
class GitConfig:
    """``[git]``: each spec's branch and worktree (workspace = "worktree"), and what happens at its end."""

    on_done: str = key("keep", check.choice(ON_DONE))  # keep the branch | merge it | run done_command
    done_command: str = key("", check.string)  # with on_done = "command", e.g. "gh pr create --fill --head {branch}"
    remote: str = key("", check.string)  # push the spec's branch there after each dispatch ("" = never)
    author: str = key("iwo-lite <iwo-lite@localhost>", check.git_author)


@dataclass(frozen=True)
class BudgetConfig:
    """``[budget]``: spending caps in US dollars (0 = none)."""

    per_spec_usd: float = key(0.0, check.number_at_least(0, MAX_BUDGET_USD))
    daily_usd: float = key(0.0, check.number_at_least(0, MAX_BUDGET_USD))  # all specs, per UTC day

    @property
    def spec_cap_usd(self) -> float | None:
        """The cap a new spec (or fork) starts with: None when there is none."""
        return self.per_spec_usd or None


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the dashboard (`iwo-lite web`, or the daemon itself with enabled = true)."""

    host: str = key("127.0.0.1", check.host)  # anything but loopback: a warning (the token still guards it)
    port: int = key(8765, check.int_at_least(0, 65535))  # 0 = a free port
    enabled: bool = key(False, check.boolean)  # `iwo-lite run` serves it too


SECTIONS: dict[str, type] = {"agent": AgentConfig, "loop": LoopConfig, "approvals": ApprovalsConfig,
                             "telegram": TelegramConfig, "git": GitConfig, "budget": BudgetConfig,
                             "web": WebConfig}


def _default_roles() -> Mapping[str, RoleConfig]:
    return MappingProxyType({role: RoleConfig() for role in ROLES})


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
