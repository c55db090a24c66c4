"""Configuration: one TOML file -> frozen dataclasses, validated once.

This module owns:

* where the home is (``--home`` > ``$IWO_HOME`` > ``~/.iwo-lite``) and which config file is
  read (``--config`` > ``<home>/config.toml`` > built-in defaults);
* the key names and defaults documented in ``config.example.toml`` (a contract: users and
  their scripts rely on them);
* validation of every key, every type and every value, up front, so the rest of the code
  can trust a :class:`Config` without re-checking it;
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
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from iwo_lite.db import sqlite_path
from iwo_lite.roles import ROLES

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
    "Config",
    "load_config",
]

DEFAULT_HOME = "~/.iwo-lite"
CONFIG_NAME = "config.toml"
DB_NAME = "iwo.sqlite"
WORKER_TIMEOUT_S = 30.0
MIN_WORKER_TIMEOUT_S = 3.0
DISPATCH_MODES = ("subprocess", "tmux")
ON_TIMEOUT = ("reject", "approve")


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

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_HELP = "expected a duration like 90s, 45m, 24h or 2d"


def parse_duration(text: str, *, allow_empty: bool = False) -> float | None:
    """Parse ``"90s"``, ``"45m"``, ``"24h"``, ``"2d"`` (also ``"1.5s"``) into seconds.

    ``""`` gives None when ``allow_empty`` (e.g. ``remind_every = ""`` means never).
    Anything else, including zero and negative durations, raises ValueError with a
    message that can follow ``"<file>: <key>: "``. Integer seconds straight from TOML are
    the caller's business (see :func:`load_config`).
    """
    if not isinstance(text, str):
        raise ValueError(f"{_DURATION_HELP}, got {_show(text)}")
    stripped = text.strip()
    if stripped == "":
        if allow_empty:
            return None
        raise ValueError(f"{_DURATION_HELP}, got an empty string")
    if stripped.startswith("-"):
        raise ValueError(f"must be greater than zero, got {_show(text)}")
    match = _DURATION_RE.fullmatch(stripped)
    if match is None:
        hint = ""
        if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
            hint = f' (add a unit: "{stripped}s" for seconds)'
        elif re.fullmatch(r"\d+(?:\.\d+)?\s*[SMHD]", stripped):
            hint = f' (units are lower case: "{stripped.lower()}")'
        raise ValueError(f"{_DURATION_HELP}, got {_show(text)}{hint}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {_show(text)}")
    if not math.isfinite(seconds):
        raise ValueError(f"{_DURATION_HELP}, got {_show(text)} (too large)")
    return seconds


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
class AgentConfig:
    """``[agent]``: how an agent process is started."""

    command: tuple[str, ...] = ("claude", "-p", "--output-format", "json")
    timeout: float = 2700.0  # seconds ("45m")
    max_concurrent: int = 2
    retries: int = 2
    dispatch: str = "subprocess"  # or "tmux"
    tmux_keep: float = 600.0  # seconds a finished tmux window stays open ("10m")
    global_max_concurrent: int = 0  # on Postgres: agent processes at once across all workers; 0 = no limit


@dataclass(frozen=True)
class RoleConfig:
    """``[roles.<role>]``: per-role additions to the agent command."""

    extra_args: tuple[str, ...] = ()
    prompt_file: Path | None = None  # absolute (resolved against the config file's directory)
    model: str | None = None


@dataclass(frozen=True)
class LoopConfig:
    """``[loop]``."""

    max_rework: int = 3


@dataclass(frozen=True)
class ApprovalsConfig:
    """``[approvals]``: the human gate."""

    timeout: float = 86400.0  # seconds ("24h")
    on_timeout: str = "reject"  # or "approve"
    remind_every: float | None = 14400.0  # seconds ("4h"); None = never


@dataclass(frozen=True)
class TelegramConfig:
    """``[telegram]``. Holds the *name* of the token's environment variable, never the token."""

    token_env: str = "IWO_TELEGRAM_TOKEN"
    allowed_chat_ids: tuple[int, ...] = ()
    allowed_user_ids: tuple[int, ...] = ()  # empty = anyone in an allowed chat
    base_url: str = "https://api.telegram.org/bot"

    def token(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The bot token from ``$<token_env>``; None when unset or blank."""
        value = environ.get(self.token_env, "").strip()
        return value or None

    def enabled(self, environ: Mapping[str, str] = os.environ) -> bool:
        """True when there is a token and at least one allowed chat."""
        return self.token(environ) is not None and len(self.allowed_chat_ids) > 0


def _default_roles() -> Mapping[str, RoleConfig]:
    return MappingProxyType({role: RoleConfig() for role in ROLES})


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Build it with :func:`load_config`."""

    home: Path
    config_path: Path | None  # the file actually read; None when running on defaults
    database_url: str  # resolved: $IWO_DATABASE_URL > key > sqlite:///<home>/iwo.sqlite
    executor_id: str  # resolved: $IWO_EXECUTOR_ID > key > hostname
    worker_timeout: float  # Postgres: a worker silent this long is presumed gone; another recovers its specs
    workdir: Path  # absolute
    agent: AgentConfig = field(default_factory=AgentConfig)
    roles: Mapping[str, RoleConfig] = field(default_factory=_default_roles)  # all six roles
    loop: LoopConfig = field(default_factory=LoopConfig)
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)

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
        return _redact_url(self.database_url)


# --------------------------------------------------------------------------- loading

# Every key a config file may hold, with the keys of each section: used to reject unknown
# keys and to suggest the right one.
_TOP_KEYS = ("database_url", "executor_id", "worker_timeout", "workdir", "agent", "roles", "loop", "approvals", "telegram")
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "agent": ("command", "timeout", "max_concurrent", "global_max_concurrent", "retries", "dispatch", "tmux_keep"),
    "loop": ("max_rework",),
    "approvals": ("timeout", "on_timeout", "remind_every"),
    "telegram": ("token_env", "allowed_chat_ids", "allowed_user_ids", "base_url"),
}
_ROLE_KEYS = ("extra_args", "prompt_file", "model")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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

    # top-level keys
    # (the file's values are checked even when the environment overrides them)
    database_url = _database_url(src, "database_url", _get(src, "database_url", data, "", _string),
                                 home, base_dir, environ)
    db_env = environ.get("IWO_DATABASE_URL", "")
    if db_env.strip():
        database_url = _database_url("$IWO_DATABASE_URL", "database_url", db_env, home, Path.cwd(), environ)

    executor_id = _get(src, "executor_id", data, "", _string).strip()
    exec_env = environ.get("IWO_EXECUTOR_ID", "")
    if exec_env.strip():
        executor_id = exec_env.strip()
    if not executor_id:
        executor_id = socket.gethostname() or "localhost"

    worker_timeout = _get(src, "worker_timeout", data, WORKER_TIMEOUT_S, _duration)
    if worker_timeout < MIN_WORKER_TIMEOUT_S:
        raise _error(src, "worker_timeout", f"expected at least {MIN_WORKER_TIMEOUT_S:g}s (a worker's heartbeat "
                     f"comes every {MIN_WORKER_TIMEOUT_S / 3:g}s), got {worker_timeout:g}s")

    workdir_text = _get(src, "workdir", data, ".", _nonempty_string)
    workdir = _absolute(workdir_text, environ)

    # [agent]
    section = _section(src, "agent", data)
    d = AgentConfig()
    agent = AgentConfig(
        command=_get(src, "agent.command", section, d.command, _command),
        timeout=_get(src, "agent.timeout", section, d.timeout, _duration),
        max_concurrent=_get(src, "agent.max_concurrent", section, d.max_concurrent, _int_at_least(1)),
        retries=_get(src, "agent.retries", section, d.retries, _int_at_least(0)),
        dispatch=_get(src, "agent.dispatch", section, d.dispatch, _choice(DISPATCH_MODES)),
        tmux_keep=_get(src, "agent.tmux_keep", section, d.tmux_keep, _duration),
        global_max_concurrent=_get(src, "agent.global_max_concurrent", section, d.global_max_concurrent,
                                   _int_at_least(0)),
    )

    # [roles.<role>]
    roles_table = data.get("roles", {})
    if not isinstance(roles_table, dict):
        raise _error(src, "roles", f"expected a table of roles ([roles.reviewer], ...), got {_show(roles_table)}")
    _reject_unknown(src, "roles", roles_table, ROLES, what="role")
    roles: dict[str, RoleConfig] = {}
    for role in ROLES:
        table = roles_table.get(role, {})
        key = f"roles.{role}"
        if not isinstance(table, dict):
            raise _error(src, key, f"expected a table ([{key}]), got {_show(table)}")
        _reject_unknown(src, key, table, _ROLE_KEYS)
        prompt_file = _get(src, f"{key}.prompt_file", table, None, _nonempty_string)
        roles[role] = RoleConfig(
            extra_args=_get(src, f"{key}.extra_args", table, (), _string_list),
            prompt_file=_absolute(prompt_file, environ, base_dir) if prompt_file is not None else None,
            model=_get(src, f"{key}.model", table, None, _nonempty_string),
        )

    # [loop]
    section = _section(src, "loop", data)
    loop = LoopConfig(max_rework=_get(src, "loop.max_rework", section, LoopConfig().max_rework, _int_at_least(0)))

    # [approvals]
    section = _section(src, "approvals", data)
    d2 = ApprovalsConfig()
    approvals = ApprovalsConfig(
        timeout=_get(src, "approvals.timeout", section, d2.timeout, _duration),
        on_timeout=_get(src, "approvals.on_timeout", section, d2.on_timeout, _choice(ON_TIMEOUT)),
        remind_every=_get(src, "approvals.remind_every", section, d2.remind_every, _duration_or_empty),
    )

    # [telegram]
    section = _section(src, "telegram", data)
    d3 = TelegramConfig()
    telegram = TelegramConfig(
        token_env=_get(src, "telegram.token_env", section, d3.token_env, _env_name),
        allowed_chat_ids=_get(src, "telegram.allowed_chat_ids", section, d3.allowed_chat_ids, _int_list),
        allowed_user_ids=_get(src, "telegram.allowed_user_ids", section, d3.allowed_user_ids, _int_list),
        base_url=_get(src, "telegram.base_url", section, d3.base_url, _http_url),
    )

    return Config(
        home=home,
        config_path=path,
        database_url=database_url,
        executor_id=executor_id,
        worker_timeout=worker_timeout,
        workdir=workdir,
        agent=agent,
        roles=MappingProxyType(roles),
        loop=loop,
        approvals=approvals,
        telegram=telegram,
    )


# --------------------------------------------------------------------------- helpers


class _Bad(ValueError):
    """Raised by a checker; ``_get`` turns it into a ConfigError naming file and key.

    ``suffix`` extends the key (``[2]`` for a list item)."""

    def __init__(self, message: str, suffix: str = ""):
        super().__init__(message)
        self.suffix = suffix


def _error(src: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{src}: {key}: {message}", source=src, key=key)


def _get(src: str, key: str, table: Mapping[str, Any], default: Any, check: Callable[[Any], Any]) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name not in table:
        return default
    try:
        return check(table[name])
    except _Bad as bad:
        raise _error(src, key + bad.suffix, str(bad)) from None


def _section(src: str, name: str, data: Mapping[str, Any]) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise _error(src, name, f"expected a table ([{name}]), got {_show(table)}")
    _reject_unknown(src, name, table, _SECTION_KEYS[name])
    return table


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


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _show(value: Any) -> str:
    """A value as it would look in TOML, on one line, shortened."""
    if isinstance(value, dict):
        return "a table"
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _got(value: Any) -> str:
    if isinstance(value, (bool, int, float, str)):
        return f"got {_show(value)} ({_type_name(value)})"
    return f"got {_type_name(value)}"


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, {_got(value)}")
    return value


def _nonempty_string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, {_got(value)}")
    if not value.strip():
        raise _Bad("expected a non-empty string, got an empty string")
    return value


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer >= {minimum}, {_got(value)}")
        if value < minimum:
            raise _Bad(f"expected an integer >= {minimum}, got {value}")
        return value

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    wanted = " or ".join(_show(o) for o in options)

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Bad(f"expected {wanted}, {_got(value)}")
        if value not in options:
            raise _Bad(f"expected {wanted}, got {_show(value)}")
        return value

    return check


def _duration(value: Any, *, allow_empty: bool = False) -> float | None:
    if isinstance(value, bool):
        raise _Bad(f"{_DURATION_HELP}, {_got(value)}")
    if isinstance(value, (int, float)):  # a bare number from TOML is seconds
        if not math.isfinite(value) or value <= 0:
            raise _Bad(f"must be greater than zero, got {_show(value)}")
        return float(value)
    if not isinstance(value, str):
        raise _Bad(f"{_DURATION_HELP}, {_got(value)}")
    try:
        return parse_duration(value, allow_empty=allow_empty)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _duration_or_empty(value: Any) -> float | None:
    return _duration(value, allow_empty=True)


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f'expected an array of strings like ["claude", "-p"], {_got(value)}')
    if not value:
        raise _Bad("expected at least the program to run, got an empty array")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Bad(f"expected a string, {_got(item)}", f"[{i}]")
        if item == "":
            raise _Bad("expected a non-empty string, got an empty string", f"[{i}]")
    return tuple(value)


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f'expected an array of strings like ["--verbose"], {_got(value)}')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Bad(f"expected a string, {_got(item)}", f"[{i}]")
    return tuple(value)


def _int_list(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _Bad(f"expected an array of integer ids like [123456789], {_got(value)}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise _Bad(f"expected an integer id, {_got(item)}", f"[{i}]")
    return tuple(value)


def _env_name(value: Any) -> str:
    # Never echo the value: a user may have pasted the token itself here.
    if not isinstance(value, str):
        raise _Bad(f"expected the name of an environment variable, got {_type_name(value)}")
    if ":" in value:
        raise _Bad("expected the NAME of an environment variable (like IWO_TELEGRAM_TOKEN), "
                   "not the token itself; put the token in that variable")
    if not _ENV_NAME.fullmatch(value):
        raise _Bad("expected the name of an environment variable (letters, digits and _, like IWO_TELEGRAM_TOKEN)")
    return value


def _http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected an http:// or https:// URL, {_got(value)}")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Bad(f"expected an http:// or https:// URL, got {_show(_redact_url(value))}")
    return value


def _redact_url(url: str) -> str:
    """Replace the password in ``scheme://user:password@host`` with ``***``."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _database_url(src: str, key: str, value: str, home: Path, base: Path, environ: Mapping[str, str]) -> str:
    """Validate and normalise a database URL; "" means the SQLite file in the home.

    A relative SQLite path is resolved against ``base`` (the config file's directory for the
    key, the cwd for ``$IWO_DATABASE_URL``) so every command opens the same file.
    ``postgres://`` is rewritten to ``postgresql://`` (SQLAlchemy only knows the latter).
    """
    value = value.strip()
    if value == "":
        return f"sqlite:///{home / DB_NAME}"
    if value.startswith("sqlite:///"):
        rest = value[len("sqlite:///"):]
        file_part, sep, query = rest.partition("?")
        if file_part == "" or file_part == ":memory:":
            raise _error(src, key, "expected sqlite:///<path to a file>; an in-memory database would lose every spec")
        path = _absolute(file_part, environ, base)
        return f"sqlite:///{path}{sep}{query}"
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        rest = value.split("://", 1)[1]
        if not rest or rest.startswith("?"):
            raise _error(src, key, "expected postgresql://user:password@host/dbname, got no host or database")
        if scheme == "postgres":
            return "postgresql://" + rest
        return value
    # Don't echo the whole value: a mistyped URL may still carry a password.
    shown = f"a URL starting with {_show(scheme + '://')}" if scheme else _show(_redact_url(value)[:30])
    raise _error(src, key, f'expected "" (the SQLite file in the home), sqlite:///<path> or postgresql://..., got {shown}')
