"""A plain JSON agent: `agent.command` as written, the prompt on stdin, one result object on stdout.

The protocol of any agent command that is not Claude Code: argv = `agent.command` + the
role's `extra_args` (+ `--model M`), and stdout is a result object like Claude Code's
`--output-format json` (see agents/answer.py). It has the same interface as
agents.claude.ClaudeAgent, where sessions, budgets and streaming do nothing: no session flags,
no environment additions, the prompt as given, no transcript, no progress while it runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from iwo_lite.agents.answer import AgentAnswer, parse_agent_output


@dataclass(frozen=True)
class PlainAgent:
    command: tuple[str, ...]
    extra_args: dict[str, tuple[str, ...]]  # by role
    models: dict[str, str | None]  # by role

    name = "json"
    streams = False  # one result object at the end: no progress, no stall watchdog

    def argv(self, role: str, *, session=None, budget_left_usd: float | None = None) -> list[str]:
        """`session` and `budget_left_usd` are ignored: a plain agent has neither."""
        argv = list(self.command) + list(self.extra_args.get(role, ()))
        model = self.models.get(role)
        return argv + ["--model", model] if model else argv

    def env(self) -> dict[str, str]:
        return {}

    def stdin(self, prompt: str, role: str, session=None) -> str:
        return prompt

    def parse(self, role: str, stdout: str, exit_code: int | None, stderr_tail: str = "") -> AgentAnswer:
        return parse_agent_output(role, stdout, exit_code, stderr_tail)

    def transcript_path(self, session_id: str, cwd: str | os.PathLike, env: Mapping[str, str]) -> None:
        return None

    def stream_reader(self) -> None:
        return None


def from_config(config) -> PlainAgent:
    return PlainAgent(
        command=tuple(config.agent.command),
        extra_args={role: tuple(rc.extra_args) for role, rc in config.roles.items()},
        models={role: rc.model for role, rc in config.roles.items()},
    )
