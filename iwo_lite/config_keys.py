"""The config file's keys: each section a frozen dataclass, each key a field holding its default and checker.

Owns the key names and defaults documented in config.example.toml (a contract: users and their
scripts rely on them), the allowed values of the keys with a fixed set (`WORKSPACES`,
`AGENT_KINDS`, ...), and which section class holds which keys (`SECTIONS`, `KIND_SECTIONS`).
config.py reads a file into these; the keys a file may hold are derived from the fields.
Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any

from iwo_lite import config_checks as check
from iwo_lite.roles import ROLES

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
    done_command: str = key("", check.command_template)  # with on_done = "command", e.g. "gh pr create --fill --head {branch}"
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
