"""Reading an agent's result object into an AgentAnswer: every way it can be wrong is an error, never a pass."""

from __future__ import annotations

import json

import pytest

from iwo_lite.agents.answer import parse_agent_output


def result(text: str = "", **fields) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": text,
                       "total_cost_usd": 0.25, "session_id": "abc", "num_turns": 3, **fields})


def fenced(obj) -> str:
    return f"prose\n```json\n{json.dumps(obj)}\n```\n"


def test_the_last_fenced_block_is_the_verdict():
    text = fenced({"verdict": "decoy"}) + fenced({"verdict": "approve", "summary": "fine"})
    answer = parse_agent_output("reviewer", result(text), 0)
    assert (answer.verdict, answer.summary, answer.error) == ("approve", "fine", None)
    assert (answer.cost_usd, answer.session_id, answer.num_turns) == (0.25, "abc", 3)


def test_structured_output_comes_first():
    answer = parse_agent_output("tester", result(fenced({"verdict": "fail"}),
                                                 structured_output={"verdict": "pass", "summary": "ok"}), 0)
    assert answer.verdict == "pass"


@pytest.mark.parametrize("stdout, exit_code, words", [
    ("", 0, "printed nothing"),
    ("not json", 0, "not JSON"),
    ("[1, 2]", 0, "not a result object"),
    (result("no block here"), 0, "no verdict"),
    (result(fenced({"verdict": "ship it"})), 0, "unknown verdict 'ship it' for builder"),
    (result(fenced({"verdict": "blocker"})), 0, "blocker without a question"),
    (result("```json\n{not json\n```"), 0, "no verdict"),
    (result(fenced({"verdict": "done"}), is_error=True), 0, "agent call failed"),
    (result(fenced({"verdict": "done"})), 1, "agent call failed (exit status 1"),
])
def test_failures_are_errors_never_a_pass(stdout, exit_code, words):
    answer = parse_agent_output("builder", stdout, exit_code)
    assert answer.verdict is None and words in answer.error


def test_a_malformed_last_block_never_falls_back_to_an_earlier_one():
    text = fenced({"verdict": "done"}) + "```json\n{\"verdict\": \n```\n"
    assert parse_agent_output("builder", result(text), 0).error is not None


def test_terminal_escapes_are_dropped_from_what_is_kept():
    answer = parse_agent_output("planner", result(fenced({"verdict": "done", "summary": "a\x1b[31mred\x07"})), 0)
    assert answer.summary == "a[31mred"
