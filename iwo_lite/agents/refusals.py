"""Writes the OS sandbox refused, found in what an agent's tools got back.

A tool call inside the sandbox (runs as bubblewrap, see iwo_lite/sandbox.py) that tried to write
outside what it may gets EROFS ("Read-only file system"), EACCES / EPERM, or — under a hidden
path — ENOENT. The CLI passes that to the model as a tool result, and the model may still say
"done": never a silent pass. `is_refusal(text, hidden)` says whether one tool result is such a
refusal (a ToolEvent's status is then "denied"), `refused_path` which path it names, and
`find(stdout, events, hidden, visible)` lists the refusals of a run as denials
({"tool", "input", "path"}, like Claude Code's permission_denials) from the kind's ToolEvents, or
from Claude Code's stream-json when the kind gives none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from iwo_lite.agents.events import ToolEvent
from iwo_lite.text import clip

READ_ONLY = ("Read-only file system", "EROFS", "read-only file system")
NO_ACCESS = ("Permission denied", "EACCES", "Operation not permitted", "EPERM")
MISSING = ("No such file or directory", "ENOENT")
_BEFORE = re.compile(r"((?:/|~/)[^\s:'\"]+): (?:Read-only file system|Permission denied|Operation not permitted|"
                     r"No such file or directory)")
_QUOTED = re.compile(r"""['"‘“`]((?:/|~/)[^'"’”`\n]*)['"’”`]""")
_BARE = re.compile(r"(?:^|[\s:(])((?:/|~/)[^\s:'\")]+)")
MAX = 20  # refusals kept per run


def refused_path(text: str) -> str | None:
    """The path a refusal message names (quoted, or the first absolute path before the error), or None."""
    for line in str(text).splitlines():
        if not any(marker in line for marker in READ_ONLY + NO_ACCESS + MISSING):
            continue
        match = _BEFORE.search(line) or _QUOTED.search(line) or _BARE.search(line)
        if match:
            return match.group(1).rstrip(".,;")
    return None


def _under(path: str, parents: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def is_refusal(text: str, hidden: Iterable[str] = (), visible: Iterable[str] = ()) -> bool:
    """A tool result that shows a write the sandbox refused (EROFS, EACCES/EPERM), or a read of a hidden
    path (ENOENT under one of `hidden` and none of `visible`: the worktree inside a hidden home is not)."""
    text = str(text or "")
    if any(marker in text for marker in READ_ONLY + NO_ACCESS):
        return True
    if any(marker in text for marker in MISSING):
        path = refused_path(text) or ""
        return bool(path) and _under(path, hidden) and not _under(path, visible)
    return False


def find(stdout: str, events: list[ToolEvent] | None, hidden: Iterable[str] = (),
         visible: Iterable[str] = ()) -> list[dict]:
    """The run's refusals: {"tool", "input" (what was refused, one line), "path"}, in order, at most MAX."""
    hidden, visible = tuple(hidden), tuple(visible)
    calls = [(e.tool, e.input, e.result) for e in events or ()] or list(_claude_tool_results(stdout or ""))
    found: list[dict] = []
    for tool, command, result in calls:
        if not is_refusal(result, hidden, visible):
            continue
        path = refused_path(result) or ""
        why = "hidden" if any(m in result for m in MISSING) and not any(m in result for m in READ_ONLY + NO_ACCESS) \
            else ("read-only" if any(m in result for m in READ_ONLY) else "no access")
        shown = f"{path} ({why})" if path else clip(command, 120)
        entry = {"tool": tool, "input": shown, "path": path}
        if entry not in found:
            found.append(entry)
        if len(found) >= MAX:
            break
    return found


def _claude_tool_results(stdout: str) -> Iterable[tuple[str, str, str]]:
    """(tool, input, result text) for each tool result in Claude Code's stream-json stdout."""
    uses: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        if not line.startswith(('{"type":"assistant"', '{"type":"user"')):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        content = ((event.get("message") or {}).get("content")) if isinstance(event, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                given = block.get("input") if isinstance(block.get("input"), dict) else {}
                shown = given.get("command") or given.get("file_path") or json.dumps(given)[:200]
                uses[str(block.get("id"))] = (str(block.get("name") or "?"), str(shown))
            elif block.get("type") == "tool_result":
                tool, shown = uses.get(str(block.get("tool_use_id")), ("?", ""))
                yield tool, shown, result_text(block.get("content"))


def result_text(content: object) -> str:
    """A tool result's content as text (a string, or a list of text parts)."""
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def judged(answer, stdout: str, events: list[ToolEvent] | None, hidden: Iterable[str] = (),
           visible: Iterable[str] = (), dropped_refs: Iterable[str] = ()):
    """`answer` (an AgentAnswer) of a run in the sandbox: when the agent claims success while the sandbox
    refused some of its writes (or dropped the refs it made besides its own branch, `dropped_refs`), a
    "denied" answer naming them (the loop opens a permission_denied gate), as for a tool Claude Code
    denied. Else `answer` as it was."""
    if answer.error is not None:
        return answer
    found = find(stdout, events, hidden, visible) if stdout else []
    found += [{"tool": "git", "input": f"{ref} (not this spec's branch: dropped)", "path": ref} for ref in dropped_refs]
    if not found:
        return answer
    from dataclasses import replace

    named = ", ".join(f"{d['tool']}({d['input']})" for d in found[:5]) + (" ..." if len(found) > 5 else "")
    return replace(answer, error=f"the sandbox refused: {named}", error_class="denied",
                   denials=tuple(answer.denials) + tuple(found))


def mark(events: list[ToolEvent], hidden: Iterable[str] = (), visible: Iterable[str] = ()) -> list[ToolEvent]:
    """The timeline with each call the sandbox refused marked status "denied" (for a kind's tool_events
    of a run in the sandbox: see the run directory's `sandbox` file for `hidden` and `visible`)."""
    from dataclasses import replace

    return [replace(e, status="denied") if e.status != "running" and is_refusal(e.result, hidden, visible) else e
            for e in events]
