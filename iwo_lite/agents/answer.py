"""An agent's answer: the result object it printed, read into an AgentAnswer.

Owns reading Claude Code's `--output-format json` result object (which plain JSON agents
print too): `is_error` (a failure can come with `subtype: "success"`), `result`,
`total_cost_usd`, `session_id`, `num_turns`, and the verdict — `structured_output`, else the
last fenced ```json block in `result` — checked against the role's verdicts. Any failure is
an AgentAnswer with `error` set, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from iwo_lite.roles import VERDICTS
from iwo_lite.text import clean, clip

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
        return AgentAnswer(error=f"agent output is not JSON (exit status {exit_code}): {clip(text)}")
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
                           f"{payload.get('subtype', 'no subtype')}): {clip(str(detail))}")
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
