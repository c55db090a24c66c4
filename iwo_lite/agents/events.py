"""The tool-call timeline of an agent run: one ToolEvent per tool call, the same for every kind.

Owns the ToolEvent record and its clipping rules; each agent kind reads its own output into
ToolEvents (`Agent.tool_events(stdout_text)`: Claude Code's stream-json, Codex's item events;
the plain JSON kind has none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from iwo_lite.text import clip

INPUT_CHARS = 200
RESULT_CHARS = 300
STATUSES = ("ok", "failed", "denied", "running")


@dataclass(frozen=True)
class ToolEvent:
    seq: int  # order within the attempt, from 1
    at: str | None  # ISO 8601 UTC when known
    tool: str  # "Bash", "Write", "exec_command", ...
    input: str  # one line, at most 200 characters (clip)
    status: str  # "ok" | "failed" | "denied" | "running"
    result: str  # at most 300 characters (clip)

    def to_json(self) -> dict:
        return asdict(self)


def one_line(text: object, limit: int) -> str:
    """Text on one line (whitespace folded, control characters dropped), at most `limit` characters."""
    flat = clip(str(text or ""), limit)
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def event(seq: int, at: str | None, tool: str, input: str, status: str, result: str) -> ToolEvent:  # noqa: A002
    """A ToolEvent with its input and result clipped."""
    return ToolEvent(seq, at, one_line(tool, 80), one_line(input, INPUT_CHARS), status, one_line(result, RESULT_CHARS))
