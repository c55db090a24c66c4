"""Handoffs: reading an agent's answer, and writing one handoff file per dispatch.

Owns: parsing Claude Code's `--output-format json` result into an `AgentAnswer` (verdict,
summary, question, cost, error), rendering `specs/<id>/handoffs/NN-<role>.md`, and writing
files atomically (temp file + rename) without ever rewriting one that exists.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from glob import escape as glob_escape
from pathlib import Path

from iwo_lite.roles import VERDICTS

_FENCED_JSON = re.compile(r"```json[ \t]*\r?\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class AgentAnswer:
    """What one agent process produced. `error` is set when the attempt failed."""

    verdict: str | None = None
    summary: str = ""
    question: str = ""
    result: str = ""
    cost_usd: float = 0.0
    session_id: str | None = None
    num_turns: int | None = None
    is_error: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def parse_agent_output(role: str, stdout: str, exit_code: int | None) -> AgentAnswer:
    """Read Claude Code's JSON result; any failure becomes an AgentAnswer with `error` set."""
    text = stdout.strip()
    if not text:
        return AgentAnswer(error=f"agent exited with status {exit_code} and printed nothing")
    try:
        payload = json.loads(text)
    except ValueError:
        return AgentAnswer(error=f"agent output is not JSON (exit status {exit_code}): {_clip(text)}")
    if not isinstance(payload, dict):
        return AgentAnswer(error="agent output is JSON but not a result object")
    base = dict(
        result=str(payload.get("result") or ""),
        cost_usd=_number(payload.get("total_cost_usd")),
        session_id=payload.get("session_id") if isinstance(payload.get("session_id"), str) else None,
        num_turns=payload.get("num_turns") if isinstance(payload.get("num_turns"), int) else None,
        is_error=bool(payload.get("is_error")),
    )
    if payload.get("is_error") or exit_code not in (0, None):
        detail = payload.get("result") or "; ".join(map(str, payload.get("errors") or [])) or payload.get("subtype")
        return AgentAnswer(**base, error=f"agent call failed (exit status {exit_code}, "
                           f"{payload.get('subtype', 'no subtype')}): {_clip(str(detail))}")
    verdict_obj = _find_verdict(payload)
    if verdict_obj is None:
        return AgentAnswer(**base, error="agent answer has no verdict (no structured_output and "
                           "no fenced ```json block in result)")
    verdict = verdict_obj.get("verdict")
    allowed = VERDICTS[role]
    if verdict not in allowed:
        return AgentAnswer(**base, error=f"unknown verdict {verdict!r} for {role} (expected one of "
                           f"{', '.join(allowed)})")
    question = clean(str(verdict_obj.get("question") or "")).strip()
    if verdict == "blocker" and not question:
        return AgentAnswer(**base, error="verdict blocker without a question")
    return AgentAnswer(
        **base,
        verdict=verdict,
        summary=clean(str(verdict_obj.get("summary") or "")).strip(),
        question=question,
    )


def _find_verdict(payload: dict) -> dict | None:
    structured = payload.get("structured_output")
    if isinstance(structured, dict) and "verdict" in structured:
        return structured
    result = payload.get("result")
    blocks = _FENCED_JSON.findall(result) if isinstance(result, str) else []
    if not blocks:
        return None
    try:  # the LAST block is the verdict; if it does not parse, the answer is unreadable
        candidate = json.loads(blocks[-1])
    except ValueError:
        return None
    return candidate if isinstance(candidate, dict) and "verdict" in candidate else None


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Agent text made safe to store and print: control characters (terminal escapes) dropped."""
    return _CONTROL.sub("", text)


def _clip(text: str, limit: int = 300) -> str:
    flat = " ".join(clean(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def handoff_name(step: int, role: str) -> str:
    return f"{step:02d}-{role}"


def render_handoff(*, spec_id: str, step: int, role: str, answer: AgentAnswer, attempts: int) -> str:
    """The Markdown of one handoff file: a header of facts, then the agent's own words."""
    lines = [
        f"# {handoff_name(step, role)} — {spec_id}",
        "",
        f"- role: {role}",
        f"- verdict: {answer.verdict or 'none (agent failed)'}",
        f"- attempts: {attempts}",
        f"- cost_usd: {answer.cost_usd:.4f}",
    ]
    if answer.session_id:
        lines.append(f"- session_id: {answer.session_id}")
    if answer.question:
        lines.append(f"- question: {answer.question}")
    if answer.error:
        lines.append(f"- error: {answer.error}")
    lines += ["", "## Summary", "", answer.summary or "(none)", "", "## Agent output", "", answer.result.rstrip(), ""]
    return "\n".join(lines)


def write_once(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically unless it exists; True when this call wrote it.

    A temp file left by a write that a kill -9 cut short (`.<name>.XXXXXXXX`) is removed.
    """
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*") if path.parent.is_dir() else ():
        leftover.unlink(missing_ok=True)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.unlink(temp_name)
            return False
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return True
