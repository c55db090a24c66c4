"""A plain JSON agent: `agent.command` as written, the prompt on stdin, one result object on stdout.

The protocol of any agent command that is not Claude Code: argv = `agent.command` + the
role's `extra_args` (+ `--model M`), and stdout is a result object like Claude Code's
`--output-format json` (see agents/answer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from iwo_lite.agents.answer import AgentAnswer, parse_agent_output


@dataclass(frozen=True)
class PlainAgent:
    command: tuple[str, ...]
    extra_args: dict[str, tuple[str, ...]]  # by role
    models: dict[str, str | None]  # by role

    name = "json"

    def argv(self, role: str) -> list[str]:
        argv = list(self.command) + list(self.extra_args.get(role, ()))
        model = self.models.get(role)
        return argv + ["--model", model] if model else argv

    def parse(self, role: str, stdout: str, exit_code: int | None) -> AgentAnswer:
        return parse_agent_output(role, stdout, exit_code)


def from_config(config) -> PlainAgent:
    return PlainAgent(
        command=tuple(config.agent.command),
        extra_args={role: tuple(rc.extra_args) for role, rc in config.roles.items()},
        models={role: rc.model for role, rc in config.roles.items()},
    )
