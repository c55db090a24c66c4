"""What an agent command is, and how to read what it printed.

answer.py  the answer every agent gives: a result object with a verdict (AgentAnswer), and the
           class of its error (what the dispatcher does next)
claude.py  Claude Code: owned flags, permission profiles, the verdict schema, sessions, stream-json
plain.py   any other command that prints one result object (agent.kind = "json")

`from_config(config)` builds the configured kind; both kinds have one interface: `name`,
`streams`, `argv(role, *, session, budget_left_usd)`, `env()`, `stdin(prompt, role, session)`,
`parse(role, stdout, exit_code, stderr_tail)`, `transcript_path(session_id, cwd, env)`,
`stream_reader()`.
"""

from __future__ import annotations

from pathlib import PurePath

CLAUDE_EXECUTABLES = ("claude", "claude.exe")


def kind_for(command) -> str:
    """"claude" when the command's executable is named claude, else "json"."""
    command = tuple(command or ())
    return "claude" if command and PurePath(str(command[0])).name in CLAUDE_EXECUTABLES else "json"


def from_config(config):
    """The agent of `config`: agent.kind, else kind_for(agent.command)."""
    kind = getattr(config.agent, "kind", None) or kind_for(config.agent.command)
    if kind == "claude":
        from iwo_lite.agents import claude

        return claude.from_config(config)
    from iwo_lite.agents import plain

    return plain.from_config(config)
