"""The agent interface: what every agent kind (a coding-agent CLI) provides to the dispatcher.

Owns the `Agent` Protocol, the `Session` an attempt runs in, the key a session id is
derived from, and `Tail` (a growing file read a line at a time, for the kinds' stream
readers). Everything one CLI does differently from another lives behind this interface,
in that kind's module (agents/claude.py, agents/plain.py, ...); the dispatcher,
the loop and the daemon know only these methods (agents/__init__.py holds the registry by
kind). Pure: no process is started here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.agents.events import ToolEvent


@dataclass(frozen=True)
class Session:
    """An attempt's agent session: `id` its own (None when the CLI names it only once it runs,
    as Codex does); `resume_from` the earlier session it continues (None: a fresh one)."""

    id: str | None
    resume_from: str | None = None

    def flags(self) -> list[str]:
        """Claude Code's session flags (kept here for callers of the older claude.Session)."""
        if self.resume_from:
            return ["--resume", self.resume_from, "--fork-session", "--session-id", str(self.id)]
        return ["--session-id", str(self.id)]


@dataclass(frozen=True)
class SessionKey:
    """What identifies one attempt durably: a session id derived from it is the same on replay."""

    namespace: str  # the database (redacted URL): two homes never share an id
    spec_id: str
    step: int
    attempt: int


class Tail:
    """A file read as it grows: each call reads only what was appended since the last one, so
    following a 20 MB stream every second stays cheap and nothing is parsed twice."""

    def __init__(self) -> None:
        self.offset = 0  # bytes of the file read so far
        self.partial = b""  # the last line read, while its newline has not come

    def appended(self, path: str | os.PathLike) -> bytes:
        """The bytes appended since the last call (b"" when there are none, or no such file)."""
        try:
            with open(path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return b""
        self.offset += len(data)
        return data

    def lines(self, path: str | os.PathLike) -> list[bytes] | None:
        """The lines completed since the last call (without their newlines); None when nothing
        was appended. A line still without its newline waits in `partial`."""
        data = self.appended(path)
        if not data:
            return None
        buffer, newline, self.partial = (self.partial + data).rpartition(b"\n")
        return buffer.split(b"\n") if newline else []


class StreamReader(Protocol):
    """Follows an agent's stdout as it grows (for kinds with `streams`)."""

    progress: dict  # {"turns", "tool", "tokens", "cost_usd"}

    def read_new(self, path: str | os.PathLike) -> bool: ...


class Agent(Protocol):
    """One agent kind. Every method is pure except where it says it reads a file."""

    name: str  # the kind: "claude" | "json" | ... (shown as `agent` on each dispatch)
    streams: bool  # stdout grows while it runs: progress is read and the stall watchdog applies
    interrupt_first: bool  # a run stopped on purpose gets SIGINT before SIGTERM
    caps_budget: bool  # the CLI stops itself at the budget `argv` gives it; else the dispatcher stops a
    #                    streaming run whose progress cost reached what the spec may still spend

    def argv(self, role: str, *, session: Session | None = None, budget_left_usd: float | None = None,
             run_dir: Path | None = None) -> list[str]:
        """The command line for `role` (its permission profile, the verdict schema, the session)."""
        ...

    def files(self, role: str) -> dict[str, str]:
        """Files the run needs in its run directory before it starts (name -> text), e.g. a schema."""
        ...

    def env(self) -> dict[str, str]:
        """What this kind adds to the agent's environment."""
        ...

    def stdin(self, prompt: str, role: str, session: Session | None = None) -> str:
        """What goes on stdin: the prompt, or a short "continue" when the attempt resumes a session."""
        ...

    def session(self, key: SessionKey, resume_from: str | None, cwd: Path, env: Mapping[str, str]
                ) -> Session | None:
        """The attempt's session: None when the kind has none; resumes `resume_from` only when that
        session can be resumed here (reads the CLI's session store)."""
        ...

    def parse(self, role: str, stdout: str, exit_code: int | None, stderr_tail: str = "", *,
              env: Mapping[str, str] | None = None) -> AgentAnswer:
        """The finished run's output into an AgentAnswer: verdict, cost, tokens, session id, and any
        error with its class (agents/answer.py); `env` is the run's environment (where the CLI's
        own files are)."""
        ...

    def stream_reader(self) -> StreamReader | None:
        """A reader of the growing stdout for live progress, or None when the kind does not stream."""
        ...

    def tool_events(self, stdout_text: str) -> list[ToolEvent]:
        """The tool-call timeline of a run's stdout."""
        ...

    def writable_state(self, env: Mapping[str, str]) -> list[str]:
        """The paths the CLI must be able to write for its sessions and resume to work."""
        ...

    def checks(self, config, roles: list[str]) -> list[tuple[bool, str, str]]:
        """What `doctor` says about this kind as used by `roles`: (ok, what, how to fix) each."""
        ...

    def refused(self, config, roles: list[str]) -> str | None:
        """Why `run` must not start with this kind for `roles` (one line), or None."""
        ...
