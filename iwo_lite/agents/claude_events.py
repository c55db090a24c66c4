"""Claude Code's tool-call timeline: its stream-json stdout read into ToolEvents (agents/events.py).

Each `tool_use` block of an `assistant` line is one call (seq from 1, in order; `input` the
command, the file or the JSON input, one line); the `tool_result` block of a later `user` line
with its id gives `result` and the status: "denied" when Claude Code refused it (a permission it
was not given: "... haven't granted it yet") or the operating system did (agents/refusals.py: a
read-only file system, permission denied — the sandbox), "failed" when the result is an error,
else "ok"; a call with no result yet is "running". `at` is the line's timestamp when it has one.
"""

from __future__ import annotations

import json

from iwo_lite.agents import refusals
from iwo_lite.agents.events import ToolEvent, event

DENIED_BY_CLI = ("haven't granted it yet", "permission to use", "was blocked")


def tool_events(stdout: str) -> list[ToolEvent]:
    calls: dict[str, int] = {}
    found: list[list] = []  # [seq, at, tool, input, status, result]
    for line in (stdout or "").splitlines():
        if not line.startswith(('{"type":"assistant"', '{"type":"user"')):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        message = data.get("message") if isinstance(data, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        at = data.get("timestamp") if isinstance(data.get("timestamp"), str) else None
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                calls[str(block.get("id"))] = len(found)
                found.append([len(found) + 1, at, str(block.get("name") or "?"), _input(block.get("input")),
                              "running", ""])
            elif block.get("type") == "tool_result" and str(block.get("tool_use_id")) in calls:
                entry = found[calls[str(block.get("tool_use_id"))]]
                text = refusals.result_text(block.get("content"))
                if block.get("is_error") and any(mark in text for mark in DENIED_BY_CLI):
                    status = "denied"
                elif refusals.is_refusal(text):
                    status = "denied"
                else:
                    status = "failed" if block.get("is_error") else "ok"
                entry[4], entry[5] = status, text
    return [event(*entry) for entry in found]


def _input(given: object) -> str:
    if isinstance(given, dict):
        for key in ("command", "file_path", "notebook_path", "pattern", "url"):
            if isinstance(given.get(key), str):
                return given[key]
    return json.dumps(given, separators=(",", ":"), default=str)
