"""The agent kinds, by name: which module implements each, and which one runs each role.

base.py    the interface every kind implements (the `Agent` Protocol, `Session`)
answer.py  the answer every agent gives (AgentAnswer) and the classes of its errors
events.py  the tool-call timeline (ToolEvent), the same for every kind
claude.py  Claude Code (`claude -p`, stream-json)
codex.py   OpenAI Codex (`codex exec --json`)
plain.py   any other command that prints one result object (agent.kind = "json")

Adding a kind is one module with a `from_config(config, roles)` and one line in KINDS (and its
name in config.AGENT_KINDS, with its `[agents.<kind>]` keys). Nothing above this package knows
which kind runs: the dispatcher asks `for_roles(config)[role]`.
"""

from __future__ import annotations

import importlib

from iwo_lite.config import kind_for

# kind -> the module that implements it (imported only when the kind is used)
KINDS: dict[str, str] = {
    "claude": "iwo_lite.agents.claude",
    "codex": "iwo_lite.agents.codex",
    "json": "iwo_lite.agents.plain",
}

__all__ = ["KINDS", "kind_for", "kind_of", "kinds_in_use", "module", "from_config", "build", "for_roles"]


def module(kind: str):
    """The module of agent kind `kind` (KeyError for an unknown kind)."""
    return importlib.import_module(KINDS[kind])


def build(config, kind: str, roles: list[str] | None = None):
    """The agent of `kind`, configured for `roles` (default: every role)."""
    return module(kind).from_config(config, list(roles) if roles is not None else list(config.roles))


def from_config(config):
    """The agent of the default kind (agent.kind, else by agent.command's executable)."""
    return build(config, getattr(config.agent, "kind", None) or kind_for(config.agent.command))


def kind_of(config, role: str) -> str:
    """The kind that runs `role`: roles.<role>.agent, else agent.kind, else by agent.command."""
    return getattr(config.roles[role], "agent", None) or getattr(config.agent, "kind", None) \
        or kind_for(config.agent.command)


def kinds_in_use(config) -> dict[str, list[str]]:
    """kind -> the roles it runs (in role order)."""
    kinds: dict[str, list[str]] = {}
    for role in config.roles:
        kinds.setdefault(kind_of(config, role), []).append(role)
    return kinds


def for_roles(config) -> dict:
    """role -> its agent (one instance per kind in use)."""
    by_role = {}
    for kind, roles in kinds_in_use(config).items():
        agent = build(config, kind, roles)
        by_role.update({role: agent for role in roles})
    return by_role
