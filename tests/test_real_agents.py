"""Unattended with the real Claude Code CLI: the whole loop, and each way a call can fail, through
the REAL daemon and CLI, the REAL `claude` binary (pinned 2.1.197) and tests/fake_anthropic.py
as the Messages API (a process of its own, so its request log survives any kill).

Each home's config is `workdir` (a scratch git repository: every spec works on branch iwo/<id>
in its own worktree) and `[agent] command = [<the CLI>]` — the default permission profiles —
plus what a test is about. The daemon runs in real_claude.offline_env (a scratch HOME, the fake's
URL); the agents inherit it. The fake is scripted per role ("You are the <role>" in the prompt):
each role does its job with tool calls, then calls StructuredOutput with its verdict.

Needs the CLI (`eval "$(bash .ci/claude.sh)"`, or IWO_TEST_CLAUDE); skipped without it, except
under CI=true where it fails.
"""

from __future__ import annotations

import os
import time

import fake_anthropic as fa
from conftest import PASSING, RealClaudeHome, loop_rules, processes, wait_for

READ_ONLY_ABSENT = ("Write", "Edit", "NotebookEdit")


def waiting(home: RealClaudeHome, spec_id: str, timeout: float = 90) -> dict:
    """The spec once it waits at a gate (`status ID --json`)."""
    home.wait_state(spec_id, "waiting", "done", "failed", "rejected", timeout=timeout)
    spec = home.spec(spec_id)
    assert spec["state"] == "waiting", f"{spec}\n{home.daemon_logs()}"
    return spec


def first_prompt_line(request: dict) -> str:
    """The first line of the prompt: the last text block of the first user message (the CLI puts
    a <system-reminder> block before it)."""
    content = request["body"]["messages"][0]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]
    return text.splitlines()[0]


# -- 1. the whole loop --------------------------------------------------------------------------------

def test_the_whole_loop_with_only_the_cli_path_and_the_default_profiles(real_home):
    home = real_home()
    spec_id = "whole-loop"
    src = home.worktree(spec_id) / "src" / "app.py"
    tested = ("python3 -B -c \"import pathlib, sys; sys.path.insert(0, 'src'); import app; "
              "pathlib.Path('tested.txt').write_text(app.greet() + '\\n')\"")
    home.script(loop_rules({
        "builder": fa.verdict_flow("builder", {"verdict": "done", "summary": "wrote src/app.py"}, steps=[
            fa.write(str(src), "def greet():\n    return 'hello'\n"),
            fa.bash("python3 -B -c \"import pathlib; pathlib.Path('src/VERSION').write_text('1\\n')\"")]),
        "tester": fa.verdict_flow("tester", {"verdict": "pass", "summary": "greet() says hello"},
                                  steps=[fa.bash(tested)]),
    }))
    assert home.root.joinpath("config.toml").read_text().count("\n[") == 1  # [agent] only: default profiles
    home.submit(spec_id=spec_id)
    home.start()
    home.wait_state(spec_id, "done", "waiting", "failed", timeout=120)
    spec = home.spec(spec_id)
    assert spec["state"] == "done", f"{spec}\n{home.daemon_logs()}"
    assert [s["role"] for s in spec["steps"]] == list(PASSING)
    assert all(len(s["attempts"]) == 1 and not s["attempts"][0]["error"] for s in spec["steps"])
    assert spec["gates"] == [] and spec["branch"] == f"iwo/{spec_id}"

    # the builder's file, and what the tester's command printed, are on the spec's branch
    assert home.on_branch(spec_id, "src/app.py") == "def greet():\n    return 'hello'\n"
    assert home.on_branch(spec_id, "src/VERSION") == "1\n"  # python3: any Bash for the builder (profile run)
    assert home.on_branch(spec_id, "tested.txt") == "hello\n"  # and for the tester
    assert home.on_branch(spec_id, "README.md") == "# scratch\n"

    requests = home.requests()
    assert {r["role"] for r in requests} == set(PASSING) and all(r["action"] != "title" for r in requests)
    for role in PASSING:
        mine = [r for r in requests if r["role"] == role]
        assert first_prompt_line(mine[0]).startswith(f"You are the {role} ")
        assert home.run_dir(spec_id, list(PASSING).index(role) + 1, role, 1).joinpath(
            "prompt.md").read_text().startswith(f"You are the {role} ")
        tools = set(fa.tool_names(mine[0]["body"]))
        assert {"Bash", "Read", "StructuredOutput"} <= tools, (role, tools)
        if role in ("planner", "reviewer"):  # profile read: no tool that writes files is offered at all
            assert not tools & set(READ_ONLY_ABSENT), (role, tools)
        else:  # edit, run: Write and Edit are there
            assert set(READ_ONLY_ABSENT) <= tools, (role, tools)
        # every tool call went through: no tool result is an error (a denial would be one)
        assert not [t for r in mine for t in fa.tool_results(r["body"]) if t.get("is_error")], role
    # the verdict schema went to the CLI as StructuredOutput's input schema, per role
    reviewer = next(r for r in requests if r["role"] == "reviewer")
    schema = next(t for t in reviewer["body"]["tools"] if t["name"] == "StructuredOutput")["input_schema"]
    assert schema["properties"]["verdict"]["enum"] == ["approve", "changes", "blocker"]


# -- 2. a denied tool ------------------------------------------------------------------------------------

def test_a_denied_tool_waits_at_a_permission_denied_gate(real_home):
    home = real_home(extra='[roles.builder]\npermissions = "read"\n')
    home.script(loop_rules({"builder": fa.verdict_flow("builder", {"verdict": "done", "summary": "built it"},
                                                       steps=[fa.bash("touch x")])}))
    spec_id = home.submit(spec_id="denied")
    home.start()
    spec = waiting(home, spec_id)
    assert (spec["gate_reason"], spec["role"], spec["step"]) == ("permission_denied", "builder", 2)
    assert "denied tools it tried to use: Bash(touch x)" in spec["question"]
    assert "Its verdict was done: built it" in spec["question"]  # the agent's own "done" is not a pass
    assert [g["reason"] for g in spec["gates"]] == ["permission_denied"]
    (attempt,) = home.attempts(spec_id, 2)
    assert attempt["error_class"] == "denied" and attempt["denials"] == [{"tool": "Bash", "input": "touch x"}]
    trace = home.trace(spec_id)
    assert "denied: Bash(touch x)" in trace and "permission_denied" in trace
    # the CLI refused it: nothing was touched, and the model was told so
    assert not (home.worktree(spec_id) / "x").exists() and home.on_branch(spec_id, "x") is None
    refused = fa.tool_results(home.requests("builder")[-1]["body"])[0]
    assert refused["is_error"] is True
    assert [r["role"] for r in home.requests()].count("reviewer") == 0


# -- 3. 401 -------------------------------------------------------------------------------------------------

def test_an_invalid_api_key_opens_a_gate_at_once(real_home):
    home = real_home()
    home.script([], default=fa.error(401))
    spec_id = home.submit(spec_id="bad-key")
    started = time.time()
    home.start()
    spec = waiting(home, spec_id, timeout=60)
    took = time.time() - started
    assert (spec["gate_reason"], spec["role"]) == ("agent_failed", "planner")
    assert "invalid API key" in spec["question"]
    assert len(home.attempts(spec_id, 1)) == 1  # no iwo-lite retry of a call that cannot succeed
    count = len(home.requests())
    print(f"401: {count} requests; gate after {took:.1f}s")
    assert 1 <= count <= 3  # the CLI's own retries (CLAUDE_CODE_MAX_RETRIES=2), then iwo-lite's gate


# -- 4. a persistent 529 --------------------------------------------------------------------------------------

def test_a_persistent_overload_pauses_without_a_gate(real_home):
    home = real_home()
    home.script([], default=fa.error(529))
    spec_id = home.submit(spec_id="overloaded")
    home.start()
    seen = None
    end = time.time() + 60
    while time.time() < end:  # `status --json` as fast as it answers, until the pause shows
        spec = home.specs()[0]
        if spec["paused_until"]:
            seen = (len(home.requests()), spec)  # every request up to this sighting
            break
    assert seen is not None, f"never paused\n{home.daemon_logs()}"
    count, spec = seen
    print(f"529: {count} requests until paused_until appeared")
    assert 1 <= count <= 12
    assert (spec["state"], spec["pause_reason"], spec["gate_reason"], spec["question"]) == (
        "running", "overloaded", None, None)
    first = home.requests()[0]["time"]
    from iwo_lite.times import parse_utc

    assert 55 <= parse_utc(spec["paused_until"]) - first <= 75  # the first backoff: 60 s after the call
    time.sleep(2)
    assert len(home.requests()) == count  # and nothing more while it waits
    assert home.spec(spec_id)["gates"] == []


# -- 5. --max-turns ---------------------------------------------------------------------------------------------

def test_max_turns_reached_opens_an_agent_failed_gate(real_home):
    home = real_home(extra='[roles.planner]\nextra_args = ["--max-turns", "1"]\n')
    home.script(loop_rules({"planner": fa.verdict_flow("planner", {"verdict": "done", "summary": "planned"},
                                                       steps=[fa.bash("ls")])}))
    spec_id = home.submit(spec_id="max-turns")
    home.start()
    spec = waiting(home, spec_id)
    assert (spec["gate_reason"], spec["role"]) == ("agent_failed", "planner")
    assert "reached --max-turns (1)" in spec["question"]
    (attempt,) = home.attempts(spec_id, 1)  # not retried: the same limit would stop it again
    assert attempt["error_class"] == "max_turns" and attempt["cost_usd"] > 0
    count = len(home.requests("planner"))
    print(f"max_turns: {count} request(s)")
    assert count == 1


# -- 6. a timeout during a tool that ignores SIGTERM ----------------------------------------------------------------

def test_a_timeout_during_a_tool_that_ignores_sigterm_leaves_no_process(real_home):
    home = real_home(agent='timeout = "5s"\nretries = 1\n')
    sleep = f"sleep 3{os.getpid() % 100:02d}.75"
    home.script(loop_rules({"builder": [{"role": "builder", "tool_uses": [fa.bash(f"trap '' TERM; {sleep}")]}]}))
    spec_id = home.submit(spec_id="timeout")
    home.start()
    wait_for(lambda: processes(cmd=sleep), 60, "the builder's sleep")
    spec = waiting(home, spec_id, timeout=60)
    assert (spec["gate_reason"], spec["role"]) == ("agent_failed", "builder")
    assert "agent timed out after 5s and was killed" in spec["question"]
    attempts = home.attempts(spec_id, 2)
    assert len(attempts) == 2 and all(a["error"].startswith("agent timed out") for a in attempts)
    for attempt in attempts:
        run = home.run_dir(spec_id, 2, "builder", attempt["attempt"])
        assert processes(env=f"IWO_RUN_DIR={run}") == [], f"left running from {run}"
        assert run.joinpath("timed_out").exists() and run.joinpath("exit").exists()
        # stopped means stopped: no API call of that run after the kill began (SIGTERM while a tool has
        # run a few seconds makes the CLI ask the model for one more turn; iwo-lite sends SIGINT first)
        killed_at = run.joinpath("timed_out").stat().st_mtime
        later = [r for r in home.requests("builder") if r["headers"].get("x-claude-code-session-id")
                 == attempt["session_id"] and r["time"] > killed_at]
        assert later == [], f"attempt {attempt['attempt']} called the API after it was killed"
    assert processes(cmd=sleep) == []
    assert home.agent_processes() == []


# -- 7. kill -9 of the daemon while a tool runs ------------------------------------------------------------------------

def test_kill9_of_the_daemon_mid_run_reattaches_and_pays_nothing_twice(real_home):
    home = real_home()
    sleep = f"sleep 4.{os.getpid() % 100:02d}"
    home.script(loop_rules({"builder": fa.verdict_flow("builder", {"verdict": "done", "summary": "built"},
                                                       steps=[fa.bash(f"{sleep} && echo built > built.txt")])}))
    spec_id = home.submit(spec_id="kill9")
    daemon = home.start()
    wait_for(lambda: processes(cmd=sleep), 60, "the builder's tool")
    agent = home.agent_processes()
    daemon.kill9()
    assert agent and set(agent) <= set(home.agent_processes())  # the run goes on without the daemon
    home.start()
    home.wait_state(spec_id, "done", "waiting", "failed", timeout=120)
    spec = home.spec(spec_id)
    assert spec["state"] == "done", f"{spec}\n{home.daemon_logs()}"
    (attempt,) = home.attempts(spec_id, 2)
    assert attempt["reattached"] and attempt["verdict"] == "done"
    assert "re-attached" in home.trace(spec_id)
    assert home.on_branch(spec_id, "built.txt") == "built\n"
    per_turn: dict[tuple, int] = {}
    for request in home.requests():
        key = (request["role"], request["turn"])
        per_turn[key] = per_turn.get(key, 0) + 1
    assert per_turn == {("planner", 0): 1, ("builder", 0): 1, ("builder", 1): 1, ("reviewer", 0): 1,
                        ("tester", 0): 1, ("deployer", 0): 1, ("docs", 0): 1}
    assert sum(len(s["attempts"]) for s in spec["steps"]) == 6
