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


# -- numbers the agent reports ---------------------------------------------------------------------

import math as _math

from iwo_lite.numbers import MAX_CALL_USD, checked_cost, checked_count, json_text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -0.01, MAX_CALL_USD + 1, 10**400,
                                   "0.5", True, False, {"usd": 1}, [1], None])
def test_a_cost_that_is_not_a_finite_number_at_least_0_and_believable_is_unknown(value):
    assert checked_cost(value)[0] is None and "recorded as unknown" in checked_cost(value)[1]
    payload = {"type": "result", "is_error": False, "total_cost_usd": value, "num_turns": 2,
               "result": '```json\n{"verdict": "done", "summary": "s"}\n```'}
    answer = parse_agent_output("planner", json.dumps(payload), 0)
    assert answer.error is None and answer.cost_usd == 0.0
    assert (answer.cost_note is None) == (value is None)  # a missing cost is 0, not a lie


@pytest.mark.parametrize("value", [0, 0.0, 0.5, MAX_CALL_USD])
def test_a_believable_cost_is_kept(value):
    assert checked_cost(value) == (float(value), None)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 1.5, True, "3", None, 10**10])
def test_a_token_or_turn_count_that_is_not_believable_counts_as_nothing(value):
    assert checked_count(value) is None
    payload = {"type": "result", "is_error": False, "total_cost_usd": 0.01, "num_turns": value,
               "usage": {"input_tokens": value, "output_tokens": 7},
               "result": '```json\n{"verdict": "done", "summary": "s"}\n```'}
    answer = parse_agent_output("planner", json.dumps(payload), 0)
    assert answer.tokens == 7 and answer.num_turns is None


def test_the_stream_s_progress_never_holds_a_bad_cost_or_count():
    from iwo_lite.agents.claude import StreamReader

    reader = StreamReader()
    assistant = {"type": "assistant", "message": {"id": "m1", "model": "claude-sonnet-4", "content": [],
                 "usage": {"input_tokens": float("nan"), "output_tokens": -10**12,
                           "cache_read_input_tokens": float("inf")}}}
    reader.feed((json.dumps(assistant) + "\n").encode())
    assert reader.progress["tokens"] == 0 and reader.progress["cost_usd"] == 0.0
    for bad in (float("nan"), float("-inf"), -3, 1e15, "1"):
        reader.feed((json.dumps({"type": "result", "total_cost_usd": bad, "num_turns": bad}) + "\n").encode())
        progress = reader.progress
        assert _math.isfinite(progress["cost_usd"]) and progress["cost_usd"] >= 0
        assert json.loads(json_text(progress)) == progress


def test_json_text_never_writes_nan_or_infinity():
    text = json_text({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": float("-inf")}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5, 10**15, "7", True])
def test_codex_s_cost_from_tokens_is_finite_and_sane_whatever_the_counts(bad):
    from iwo_lite.agents.codex import cost_of

    cost = cost_of({"input_tokens": bad, "cached_input_tokens": bad, "output_tokens": 10},
                   "gpt-5", {"*": (1.0, 0.1, 10.0)})
    assert _math.isfinite(cost) and cost == pytest.approx(10 * 10.0 / 1_000_000)
