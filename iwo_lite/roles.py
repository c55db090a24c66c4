"""The six roles: their verdicts, the transition table, the prompt each role receives, and
the question a gate asks.

Pure functions over plain data: no I/O, no DBOS. The loop workflow calls `after_verdict`
and `after_answer` to decide where a spec goes next (the table in README "The loop"), the
dispatch step calls `render_prompt` to build what goes on the agent's stdin, and a gate
asks `gate_question`.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("planner", "builder", "reviewer", "tester", "deployer", "docs")

VERDICTS: dict[str, tuple[str, ...]] = {
    "planner": ("done", "blocker"),
    "builder": ("done", "blocker"),
    "reviewer": ("approve", "changes", "blocker"),
    "tester": ("pass", "fail", "blocker"),
    "deployer": ("done", "fail", "blocker"),
    "docs": ("done", "blocker"),
}

# The role that follows a role that passed; None means the spec is done.
PASS_NEXT: dict[str, str | None] = {
    "planner": "builder",
    "builder": "reviewer",
    "reviewer": "tester",
    "tester": "deployer",
    "deployer": "docs",
    "docs": None,
}

REWORK_VERDICTS = {("reviewer", "changes"), ("tester", "fail")}

# Why a gate opened (iwo_gates.reason).
GATE_BLOCKER = "blocker"
GATE_REWORK_LIMIT = "rework_limit"
GATE_DEPLOY_FAILED = "deploy_failed"
GATE_AGENT_FAILED = "agent_failed"
GATE_PERMISSION_DENIED = "permission_denied"
GATE_BUDGET = "budget"
GATE_MERGE = "merge"

ANSWERS = ("approve", "reject", "revise")

# What each role may do by default (roles.<role>.permissions overrides it): the profile name that
# every agent kind maps to its own flags (read | edit | run | full, in agents/claude.py, codex.py).
DEFAULT_PERMISSIONS: dict[str, str] = {"planner": "read", "reviewer": "read", "builder": "run", "tester": "run",
                                       "deployer": "run", "docs": "edit"}

ROLE_BRIEFS = {
    "planner": "Read the spec and write a plan the builder can follow: steps, files, risks.",
    "builder": "Implement the plan in the working directory. Address every reviewer, tester "
    "and human note below.",
    "reviewer": "Review the builder's change against the spec and plan. Verdict `approve`, "
    "`changes` (say what), or `blocker` (a question only the human can answer).",
    "tester": "Run and extend the tests for the change. Verdict `pass` or `fail` (say what failed).",
    "deployer": "Deploy or package the change. Verdict `done`, `fail`, or `blocker` with a question.",
    "docs": "Update the documentation for the change.",
}

# A prompt is bounded: besides the spec (at most 1 MiB, checked at submit) and the role's brief it
# carries at most PROMPT_HANDOFF_BUDGET characters of handoffs in full (the newest), then
# PROMPT_SUMMARIES_BUDGET of older ones' summaries (each clipped to PROMPT_SUMMARY_MAX), and
# PROMPT_ANSWERS_BUDGET of human answers (the newest first), and says what it left out
# (README "The agent process").
PROMPT_HANDOFF_BUDGET = 60_000  # characters of the newest handoffs carried in full
PROMPT_SUMMARIES_BUDGET = 20_000  # characters of the older handoffs' summaries
PROMPT_SUMMARY_MAX = 2_000  # characters of one older handoff's summary
PROMPT_ANSWERS_BUDGET = 20_000  # characters of the human answers


@dataclass(frozen=True)
class Next:
    """Where a spec goes next: a role, a human gate, or done."""

    kind: str  # "role" | "gate" | "done"
    role: str | None = None
    gate_reason: str | None = None
    is_rework: bool = False


def after_verdict(role: str, verdict: str, reworks_so_far: int, max_rework: int) -> Next:
    """The transition table (README "The loop"), for a dispatch that produced a valid verdict."""
    if verdict == "blocker":
        return Next("gate", gate_reason=GATE_BLOCKER)
    if role == "deployer" and verdict == "fail":
        return Next("gate", gate_reason=GATE_DEPLOY_FAILED)
    if (role, verdict) in REWORK_VERDICTS:
        if reworks_so_far + 1 > max_rework:
            return Next("gate", gate_reason=GATE_REWORK_LIMIT, is_rework=True)
        return Next("role", role="builder", is_rework=True)
    following = PASS_NEXT[role]
    return Next("done") if following is None else Next("role", role=following)


def after_answer(asking_role: str, gate_reason: str, answer: str) -> Next:
    """Where an answered gate sends the spec. `reject` is handled by the caller."""
    if answer == "revise" or gate_reason == GATE_REWORK_LIMIT:
        return Next("role", role="builder")
    following = PASS_NEXT[asking_role]
    return Next("done") if following is None else Next("role", role=following)


def render_prompt(
    *,
    role: str,
    spec_id: str,
    step: int,
    spec_text: str,
    brief: str | None,
    handoffs: list[dict],
    answers: list[dict],
) -> str:
    """The prompt on the agent's stdin: role brief, spec, earlier handoffs, human answers.

    `handoffs` are {"name", "verdict", "summary", "text"} oldest first; the newest are
    carried in full up to PROMPT_HANDOFF_BUDGET characters, older ones by summary only.
    """
    verdicts = " | ".join(VERDICTS[role])
    parts = [
        f"You are the {role} in a six-role coding loop "
        "(planner -> builder -> reviewer -> tester -> deployer -> docs).",
        f"Spec: {spec_id}. This is dispatch {step:02d}.",
        "",
        "## Your job",
        brief or ROLE_BRIEFS[role],
        "",
        "## The spec",
        spec_text.rstrip(),
        "",
    ]
    if handoffs:
        parts += ["## Handoffs so far", ""]
        parts += _bounded_handoffs(handoffs)
    if answers:
        parts += ["## Answers from the human", ""]
        parts += _bounded_answers(answers)
        parts.append("")
    parts += [
        "## How to answer",
        "End your reply with a fenced ```json block holding",
        f'{{"verdict": "{verdicts}", "summary": "one paragraph", "question": "for a blocker: what the human must decide"}}',
    ]
    return "\n".join(parts) + "\n"


def _bounded_handoffs(handoffs: list[dict]) -> list[str]:
    """The newest handoffs in full within PROMPT_HANDOFF_BUDGET, then the older ones by their
    (clipped) summary within PROMPT_SUMMARIES_BUDGET; what is cut is said, with where the files are."""
    budget, summaries = PROMPT_HANDOFF_BUDGET, PROMPT_SUMMARIES_BUDGET
    rendered: list[list[str]] = []
    left_out: list[str] = []
    clipped = by_summary = 0
    in_full = True  # the newest are carried in full until one does not fit; the older ones by summary
    for handoff in reversed(handoffs):
        header = f"### {handoff['name']} — verdict: {handoff['verdict']}"
        text = (handoff.get("text") or "").rstrip()
        in_full = in_full and len(text) <= budget
        if in_full:
            budget -= len(text)
            rendered.append([header, text, ""])
            continue
        summary = handoff.get("summary") or ""
        if len(summary) > PROMPT_SUMMARY_MAX:
            summary, clipped = summary[:PROMPT_SUMMARY_MAX] + " […]", clipped + 1
        if len(summary) > summaries:
            left_out.append(handoff["name"])
            summaries = 0
            continue
        summaries -= len(summary)
        by_summary += 1
        rendered.append([header, f"(summary only) {summary}", ""])
    lines = [line for block in reversed(rendered) for line in block]
    if by_summary or left_out:
        cut = [f"{by_summary} older handoff(s) by their summary only"] if by_summary else []
        if clipped:
            cut.append(f"{clipped} summary(ies) clipped at {PROMPT_SUMMARY_MAX:,} characters")
        if left_out:
            cut.append(f"{len(left_out)} oldest handoff(s) left out ({', '.join(reversed(left_out[:3]))}"
                       f"{', ...' if len(left_out) > 3 else ''})")
        lines += [f"(Cut to bound the prompt: {'; '.join(cut)} — handoffs in full up to "
                  f"{PROMPT_HANDOFF_BUDGET:,} characters, summaries up to {PROMPT_SUMMARIES_BUDGET:,}. Every "
                  "handoff is in full in $IWO_HANDOFF_DIR.)", ""]
    return lines


def _bounded_answers(answers: list[dict]) -> list[str]:
    """The human answers within PROMPT_ANSWERS_BUDGET, the newest kept first; what is cut is said."""
    budget = PROMPT_ANSWERS_BUDGET
    kept: list[str] = []
    for answer in reversed(answers):
        note = f": {answer['note']}" if answer.get("note") else ""
        line = f"- to the {answer['role']}'s question ({answer['gate']}): {answer['answer']}{note}"
        if len(line) > budget:
            if budget < 200:
                break
            line = line[:budget - 40] + " […] (cut: over the budget)"
        kept.append(line)
        budget -= len(line) + 1
    lines = list(reversed(kept))
    if len(kept) < len(answers) or any(line.endswith("(cut: over the budget)") for line in kept):
        lines.append(f"(Cut to fit the prompt's {PROMPT_ANSWERS_BUDGET:,}-character budget for answers: "
                     f"{len(answers) - len(kept)} older answer(s) left out, the newest kept.)")
    return lines


def gate_question(outcome: dict, reason: str, reworks: int, max_rework: int) -> str:
    """What a gate asks the human, from the dispatch that opened it."""
    role = outcome["role"]
    if reason == GATE_BLOCKER:
        return outcome["question"]
    if reason == GATE_PERMISSION_DENIED:
        denied = ", ".join(f"{d.get('tool')}({d.get('input', '')})" for d in outcome.get("denials") or [])
        return (f"The {role} was denied tools it tried to use: {denied or outcome['error']}. Its verdict was "
                f"{outcome.get('verdict') or 'none'}: {outcome['summary'] or 'no summary'}. Approve to continue as "
                f"if the {role} had passed, revise to send it to the builder, or reject "
                f"(roles.{role}.permissions sets what it may do).")
    if reason == GATE_REWORK_LIMIT:
        return (f"The spec has gone back to the builder {reworks} times (loop.max_rework = {max_rework}). "
                f"The {role} says: {outcome['summary'] or outcome['verdict']}. "
                "Approve to send it to the builder once more, revise with instructions, or reject.")
    if reason == GATE_DEPLOY_FAILED:
        return (f"The deployer failed: {outcome['summary'] or 'no summary'}. "
                "Approve to continue to docs, revise to send it back to the builder, or reject.")
    return (f"The {role} agent failed after {outcome['attempts']} attempt(s): {outcome['error']}. "
            f"Approve to continue as if the {role} had passed, revise to send it to the builder, or reject.")
