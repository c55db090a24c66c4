"""A plain JSON agent: `agent.command` as written, the prompt on stdin, one result object on stdout.

The protocol of any agent command that is not Claude Code: argv = `agent.command` + the
role's `extra_args` (+ `--model M`), and stdout is a result object like Claude Code's
`--output-format json` (see agents/answer.py). It implements agents.base.Agent, where
sessions, budgets and streaming do nothing: no session flags, no environment additions, the
prompt as given, no session to resume, no progress while it runs, no tool-call timeline.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from iwo_lite.agents.answer import AgentAnswer, parse_agent_output
from iwo_lite.agents.base import Session, SessionKey
from iwo_lite.agents.events import ToolEvent


@dataclass(frozen=True)
class PlainAgent:
    command: tuple[str, ...]
    extra_args: dict[str, tuple[str, ...]]  # by role
    models: dict[str, str | None]  # by role

    name = "json"
    streams = False  # one result object at the end: no progress, no stall watchdog
    interrupt_first = False
    caps_budget = False

    def argv(self, role: str, *, session=None, budget_left_usd: float | None = None,
             run_dir: Path | None = None) -> list[str]:
        """`session` and `budget_left_usd` are ignored: a plain agent has neither."""
        argv = list(self.command) + list(self.extra_args.get(role, ()))
        model = self.models.get(role)
        return argv + ["--model", model] if model else argv

    def files(self, role: str) -> dict[str, str]:
        return {}

    def env(self) -> dict[str, str]:
        return {}

    def session(self, key: SessionKey, resume_from: str | None, cwd, env: Mapping[str, str]) -> Session | None:
        return None

    def stdin(self, prompt: str, role: str, session=None) -> str:
        return prompt

    def parse(self, role: str, stdout: str, exit_code: int | None, stderr_tail: str = "", *,
              env: Mapping[str, str] | None = None) -> AgentAnswer:
        return parse_agent_output(role, stdout, exit_code, stderr_tail)

    def transcript_path(self, session_id: str, cwd: str | os.PathLike, env: Mapping[str, str]) -> None:
        return None

    def stream_reader(self) -> None:
        return None

    def tool_events(self, stdout_text: str) -> list[ToolEvent]:
        return []

    def writable_state(self, env: Mapping[str, str]) -> list[str]:
        return []

    def checks(self, config, roles: list[str]) -> list[tuple[bool, str, str]]:
        found = shutil.which(self.command[0]) if self.command else None
        return [(bool(found), f"agent command (json): {self.command[0]}" + (f" -> {found}" if found else " not found"),
                 "install it, or set agent.command (or agents.json.command) in the config"),
                (True, f"agent kind: json for {', '.join(roles)} (one result object on stdout; no profiles, sessions "
                 "or progress)", "")]

    def refused(self, config, roles: list[str]) -> str | None:
        return None


def from_config(config, roles: list[str] | None = None) -> PlainAgent:
    """The plain JSON agent for `roles` (default: all): [agents.json] command, else agent.command."""
    agents = getattr(config, "agents", None)
    command = agents.command("json", config.agent) if agents is not None else config.agent.command
    chosen = {role: config.roles[role] for role in (roles if roles is not None else config.roles)}
    return PlainAgent(
        command=tuple(command),
        extra_args={role: tuple(rc.extra_args) for role, rc in chosen.items()},
        models={role: rc.model for role, rc in chosen.items()},
    )
