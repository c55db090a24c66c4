"""Handoffs: the Markdown file one dispatch leaves for the roles after it.

Owns rendering `specs/<id>/handoffs/NN-<role>.md`: a header of facts (role, verdict,
attempts, cost, session, question, error), the summary, and the agent's own words. The file
is written once (home.write_once) and its text is also kept in iwo_steps.handoff_text.
"""

from __future__ import annotations

from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.home import handoff_name


def render_handoff(*, spec_id: str, step: int, role: str, answer: AgentAnswer, attempts: int) -> str:
    """The Markdown of one handoff file: a header of facts, then the agent's own words."""
    lines = [
        f"# {handoff_name(step, role)} — {spec_id}",
        "",
        f"- role: {role}",
        f"- verdict: {answer.verdict or 'none (agent failed)'}",
        f"- attempts: {attempts}",
        f"- cost_usd: {answer.cost_usd:.4f}" if not answer.cost_note else f"- cost_usd: unknown ({answer.cost_note})",
    ]
    if answer.session_id:
        lines.append(f"- session_id: {answer.session_id}")
    if answer.question:
        lines.append(f"- question: {answer.question}")
    if answer.error:
        lines.append(f"- error: {answer.error}")
    lines += ["", "## Summary", "", answer.summary or "(none)", "", "## Agent output", "", answer.result.rstrip(), ""]
    return "\n".join(lines)
