"""The transition table, the prompt's shape and the gate questions: pure functions, no daemon."""

from __future__ import annotations

import pytest

from iwo_lite import roles
from iwo_lite.roles import Next, after_answer, after_verdict, gate_question, render_prompt

# README "The loop", row by row: (role, verdict) -> where the spec goes (reworks so far 0, max 3).
TABLE = [
    ("planner", "done", Next("role", role="builder")),
    ("builder", "done", Next("role", role="reviewer")),
    ("reviewer", "approve", Next("role", role="tester")),
    ("reviewer", "changes", Next("role", role="builder", is_rework=True)),
    ("tester", "pass", Next("role", role="deployer")),
    ("tester", "fail", Next("role", role="builder", is_rework=True)),
    ("deployer", "done", Next("role", role="docs")),
    ("deployer", "fail", Next("gate", gate_reason="deploy_failed")),
    ("docs", "done", Next("done")),
] + [(role, "blocker", Next("gate", gate_reason="blocker")) for role in roles.ROLES]


@pytest.mark.parametrize("role, verdict, expected", TABLE)
def test_the_transition_table(role, verdict, expected):
    assert verdict in roles.VERDICTS[role]
    assert after_verdict(role, verdict, 0, 3) == expected


def test_every_verdict_of_every_role_has_a_row():
    assert {(role, verdict) for role, verdict, _ in TABLE} == {
        (role, verdict) for role, verdicts in roles.VERDICTS.items() for verdict in verdicts}


@pytest.mark.parametrize("role, verdict", [("reviewer", "changes"), ("tester", "fail")])
def test_the_max_rework_plus_first_rework_opens_a_gate(role, verdict):
    assert after_verdict(role, verdict, 2, 3) == Next("role", role="builder", is_rework=True)  # the 3rd
    assert after_verdict(role, verdict, 3, 3) == Next("gate", gate_reason="rework_limit", is_rework=True)  # the 4th
    assert after_verdict(role, verdict, 0, 0) == Next("gate", gate_reason="rework_limit", is_rework=True)


@pytest.mark.parametrize("role", roles.ROLES)
def test_approve_continues_as_if_the_asking_role_had_passed(role):
    following = roles.PASS_NEXT[role]
    expected = Next("done") if following is None else Next("role", role=following)
    assert after_answer(role, "blocker", "approve") == expected
    assert after_answer(role, "agent_failed", "approve") == expected
    assert after_answer(role, "blocker", "revise") == Next("role", role="builder")


def test_approving_a_rework_limit_gate_goes_back_to_the_builder_once_more():
    assert after_answer("reviewer", "rework_limit", "approve") == Next("role", role="builder")
    assert after_answer("deployer", "deploy_failed", "approve") == Next("role", role="docs")


def test_the_prompt_starts_with_the_role_and_carries_spec_handoffs_and_answers():
    prompt = render_prompt(role="builder", spec_id="s1", step=4, spec_text="# Do X\n", brief=None,
                           handoffs=[{"name": "01-planner", "verdict": "done", "summary": "plan", "text": "PLAN TEXT"}],
                           answers=[{"role": "reviewer", "gate": "s1#03", "answer": "revise", "note": "use Y"}])
    assert prompt.splitlines()[0].startswith("You are the builder ")
    assert "dispatch 04" in prompt and "# Do X" in prompt and "PLAN TEXT" in prompt
    assert "to the reviewer's question (s1#03): revise: use Y" in prompt
    assert '"verdict": "done | blocker"' in prompt


def test_old_handoffs_beyond_the_budget_are_carried_by_their_summary():
    big = "x" * (roles.PROMPT_HANDOFF_BUDGET - 10)
    handoffs = [{"name": "01-planner", "verdict": "done", "summary": "the plan in short", "text": "OLD " * 100},
                {"name": "02-builder", "verdict": "done", "summary": "built", "text": big}]
    prompt = render_prompt(role="reviewer", spec_id="s", step=3, spec_text="spec", brief="b", handoffs=handoffs,
                           answers=[])
    assert big in prompt and "OLD OLD" not in prompt and "(summary only) the plan in short" in prompt


def test_gate_questions_say_why_and_what_each_answer_does():
    outcome = {"role": "tester", "verdict": "fail", "summary": "2 tests fail", "question": "", "attempts": 3,
               "error": "timed out"}
    assert "gone back to the builder 4 times" in gate_question(outcome, "rework_limit", 4, 3)
    assert "failed after 3 attempt(s): timed out" in gate_question(outcome, "agent_failed", 0, 3)
    assert gate_question(dict(outcome, question="Ship?"), "blocker", 0, 3) == "Ship?"


def test_the_prompt_is_bounded_however_long_the_handoffs_summaries_and_answers_and_says_what_was_cut():
    """A 1 MiB spec with six reworks whose handoffs and summaries are long (the prompt once grew from
    1.05 to 1.7 MB): everything but the spec and the brief stays within the documented budgets."""
    spec = "s" * 2**20
    handoffs = [{"name": f"{n:02d}-{'builder' if n % 2 else 'reviewer'}", "verdict": "changes",
                 "summary": "S" * 300_000, "text": "T" * 500_000} for n in range(1, 14)]
    answers = [{"role": "reviewer", "gate": f"s#{n:02d}", "answer": "revise", "note": "N" * 50_000}
               for n in range(1, 8)]
    prompt = render_prompt(role="builder", spec_id="s", step=14, spec_text=spec, brief="brief",
                           handoffs=handoffs, answers=answers)
    bound = (roles.PROMPT_HANDOFF_BUDGET + roles.PROMPT_SUMMARIES_BUDGET + roles.PROMPT_ANSWERS_BUDGET
             + 100 * (len(handoffs) + len(answers)) + 2_000)
    assert len(prompt) - len(spec) <= bound, len(prompt) - len(spec)
    assert spec in prompt  # the spec itself is never cut
    assert "(Cut to bound the prompt:" in prompt and "oldest handoff(s) left out" in prompt
    assert "clipped at 2,000 characters" in prompt and "$IWO_HANDOFF_DIR" in prompt
    assert "older answer(s) left out, the newest kept" in prompt
    assert "(s#07): revise: NNN" in prompt  # the newest answer is there


def test_a_prompt_within_the_budgets_says_nothing_was_cut():
    handoffs = [{"name": "01-planner", "verdict": "done", "summary": "plan", "text": "PLAN"}]
    prompt = render_prompt(role="builder", spec_id="s", step=2, spec_text="x", brief=None, handoffs=handoffs,
                           answers=[{"role": "reviewer", "gate": "s#01", "answer": "approve"}])
    assert "Cut to" not in prompt
