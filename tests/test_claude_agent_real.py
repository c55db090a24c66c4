"""agents/claude.py against the REAL Claude Code CLI (pinned 2.1.197), offline, with
tests/fake_anthropic.py as the Messages API: the argv ClaudeAgent builds runs, each permission
profile does what it says, the verdict schema is enforced by the CLI, every error class comes
out of a real run, and a continued attempt forks the interrupted session.

Needs the CLI (`eval "$(bash .ci/claude.sh)"`, or IWO_TEST_CLAUDE); skipped without it, except
under CI=true where it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import fake_anthropic as fa
from iwo_lite.agents.claude import ClaudeAgent, Session, StreamReader, session_id_for
from iwo_lite.roles import render_prompt
from real_claude import Run, claude_bin, offline_env  # noqa: F401  (claude_bin is a fixture)

OAUTH = {"ANTHROPIC_API_KEY": None, "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test-token"}


def prompt(role: str) -> str:
    return render_prompt(role=role, spec_id="SPEC-1", step=1, spec_text="Make it so.", brief=None, handoffs=[],
                         answers=[])


class Bench:
    """A ClaudeAgent, the real CLI, one fake API, a scratch HOME and working directory."""

    def __init__(self, claude: str, tmp: Path):
        self.claude = claude
        self.home = tmp / "home"
        self.work = tmp / "work"
        self.work.mkdir(parents=True)
        self.fake = fa.FakeAnthropic().start()

    def agent(self, **more) -> ClaudeAgent:
        return ClaudeAgent(command=(self.claude, "-p", "--output-format", "json"), **more)

    def run(self, agent: ClaudeAgent, role: str, script: dict | None, *, session: Session | None = None,
            budget: float | None = None, env: dict | None = None, timeout: float = 60) -> tuple[Run, object]:
        if script is not None:
            self.fake.script = script
            self.fake.reset_counts()
        environment = self._environment(agent, env)
        start = time.time()
        proc = subprocess.run(agent.argv(role, session=session, budget_left_usd=budget),
                              input=agent.stdin(prompt(role), role, session), env=environment, cwd=self.work,
                              capture_output=True, text=True, timeout=timeout)
        run = Run(proc, time.time() - start)
        return run, agent.parse(role, run.stdout, run.code, run.stderr[-2000:])

    def _environment(self, agent: ClaudeAgent, env: dict | None) -> dict[str, str]:
        environment = {**offline_env(self.fake.url, self.home), **agent.env()}
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return environment

    def requests(self) -> list[dict]:
        return self.fake.messages_requests()


@pytest.fixture
def bench(claude_bin, tmp_path):
    bench = Bench(claude_bin, tmp_path)
    yield bench
    bench.fake.stop()


def verdict(role: str, value: dict, steps: list | None = None) -> dict:
    return {"rules": fa.verdict_flow(role, value, steps=steps)}


# -- profiles --------------------------------------------------------------------------------------

PROBE = "python3 -c \"open('py.txt','w').write('x')\""


@pytest.mark.parametrize("role, profile", [("reviewer", "read"), ("docs", "edit"), ("builder", "run"),
                                           ("deployer", "full")])
def test_each_profile_does_what_it_says(bench, role, profile):
    agent = bench.agent(permissions={role: profile})
    ok = {"reviewer": "approve"}.get(role, "done")
    steps = [fa.write(str(bench.work / "w.txt"), "x"), fa.bash(PROBE)]
    run, answer = bench.run(agent, role, verdict(role, {"verdict": ok, "summary": "did it"}, steps),
                            env={"IS_SANDBOX": "1"} if profile == "full" else None)
    assert run.code == 0, run
    wrote, ran = (bench.work / "w.txt").exists(), (bench.work / "py.txt").exists()
    results = fa.tool_results(bench.requests()[-1]["body"])
    assert (answer.verdict, answer.summary) == (ok, "did it")  # kept, even when denied
    if profile == "read":
        # Write is not offered at all: a call to it is "no such tool", not a permission denial
        assert not wrote and not ran and "No such tool available: Write" in results[0]["content"]
        assert answer.error_class == "denied" and answer.denials == ({"tool": "Bash", "input": PROBE},)
        assert answer.error == f"permission denied: Bash({PROBE})"
    elif profile == "edit":
        assert wrote and not ran
        assert answer.error_class == "denied" and answer.denials == ({"tool": "Bash", "input": PROBE},)
    else:
        assert wrote and ran and answer.error is None and answer.error_class is None and answer.denials == ()


def test_builder_runs_python_and_the_stream_reader_follows(bench):
    agent = bench.agent()
    steps = [fa.write(str(bench.work / "src" / "app.py"), "print('hi')\n"),
             fa.bash("python3 -c \"import pathlib; pathlib.Path('ran.txt').write_text('ok')\"")]
    session = Session(session_id_for("test", "SPEC-1", 1, 1))
    run, answer = bench.run(agent, "builder", verdict("builder", {"verdict": "done", "summary": "built"}, steps),
                            session=session)
    assert (answer.verdict, answer.error, answer.session_id) == ("done", None, session.id)
    assert (bench.work / "src" / "app.py").exists() and (bench.work / "ran.txt").read_text() == "ok"
    reader = StreamReader()
    data = run.stdout.encode()
    seen = []
    for start in range(0, len(data), 97):
        reader.feed(data[start:start + 97])
        if reader.progress["tool"] not in seen:
            seen.append(reader.progress["tool"])
    assert seen == [None, "Write: src/app.py", "Bash: python3 -c \"import pathlib; pathlib.Path('ran.txt').write_text('ok')\"",
                    "StructuredOutput"]
    assert reader.session_id == session.id and reader.cwd == str(bench.work)
    assert reader.progress == {"turns": answer.num_turns, "tool": "StructuredOutput", "tokens": answer.tokens,
                               "cost_usd": round(answer.cost_usd, 6)}
    assert agent.transcript_path(session.id, bench.work, bench._environment(agent, None)).exists()
    # the schema went to the CLI as the StructuredOutput tool's input schema
    tool = next(t for t in bench.requests()[0]["body"]["tools"] if t["name"] == "StructuredOutput")
    assert tool["input_schema"]["properties"]["verdict"]["enum"] == ["done", "blocker"]


def test_full_as_root_without_is_sandbox_is_fatal(bench):
    if os.geteuid() != 0:
        pytest.skip("the CLI refuses --dangerously-skip-permissions only as root")
    run, answer = bench.run(bench.agent(permissions={"deployer": "full"}), "deployer", {})
    assert run.stdout == "" and answer.error_class == "fatal" and "IS_SANDBOX=1" in answer.error
    assert bench.requests() == []


# -- the verdict schema ----------------------------------------------------------------------------

def test_the_schema_refuses_a_blocker_without_a_question_and_a_wrong_verdict(bench):
    rules = [{"turn": 0, "tool_uses": [fa.structured_output({"verdict": "blocker", "summary": "x"})]},
             {"turn": 1, "tool_uses": [fa.structured_output({"verdict": "blocker", "summary": "x", "question": "  "})]},
             {"turn": 2, "tool_uses": [fa.structured_output({"verdict": "done", "summary": "x"})]},
             {"turn": 3, "tool_uses": [fa.structured_output({"verdict": "blocker", "summary": "stuck",
                                                             "question": "Which database?"})]},
             {"text": "Done."}]
    run, answer = bench.run(bench.agent(), "reviewer", {"rules": rules})
    assert run.code == 0, run
    refused = fa.tool_results(bench.requests()[-1]["body"])
    assert [r.get("is_error") for r in refused] == [True, True, True]
    assert "must have required property 'question'" in refused[0]["content"]
    assert 'must match pattern "\\S"' in refused[1]["content"]
    assert "/verdict: must be equal to one of the allowed values" in refused[2]["content"]
    assert (answer.verdict, answer.question, answer.error) == ("blocker", "Which database?", None)


# -- API errors --------------------------------------------------------------------------------------

def test_invalid_api_key_is_fatal_within_three_requests(bench):
    run, answer = bench.run(bench.agent(), "builder", {"default": fa.error(401)})
    assert len(bench.requests()) <= 3 and run.code == 1
    assert (answer.error_class, answer.error, answer.api_error_status) == ("fatal", "invalid API key", 401)


def test_persistent_529_is_overloaded_within_three_requests(bench):
    run, answer = bench.run(bench.agent(), "builder", {"default": fa.error(529)})
    assert len(bench.requests()) <= 3 and run.code == 1
    assert (answer.error_class, answer.error) == ("overloaded", "API 529 overloaded")


def test_usage_limit_takes_the_reset_from_the_event(bench):
    reset = int(time.time()) + 3 * 3600 + 17
    run, answer = bench.run(bench.agent(), "builder", {"default": fa.usage_limit(reset)}, env={**OAUTH, "TZ": "UTC"})
    assert len(bench.requests()) == 1 and run.code == 1
    assert (answer.error_class, answer.resets_at) == ("usage_limit", reset)
    assert answer.error == "usage limit; resets " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))


def test_max_turns_and_budget(bench):
    agent = bench.agent(extra_args={"tester": ("--max-turns", "1")})
    run, answer = bench.run(agent, "tester", {"default": {"tool_uses": [fa.bash("ls")]}})
    assert (answer.error_class, answer.error) == ("max_turns", "reached --max-turns (1)") and answer.cost_usd > 0
    script = {"default": {"tool_uses": [fa.bash("ls")], "usage": {"input_tokens": 100_000, "output_tokens": 1000}}}
    run, answer = bench.run(bench.agent(), "tester", script, budget=0.0)  # clamped to 0.01: the CLI does not crash
    assert run.code == 1 and len(bench.requests()) == 2
    assert (answer.error_class, answer.error) == ("budget", "reached --max-budget-usd ($0.01)")


# -- sessions ------------------------------------------------------------------------------------------

def test_a_continued_attempt_forks_the_interrupted_session(bench):
    agent = bench.agent()
    first = Session(session_id_for("test", "SPEC-1", 2, 1))
    script = {"rules": [{"turn": 0, "tool_uses": [fa.bash("echo marker-one")]}, {"turn": 1, "hang": "start", "times": 1},
                        {"min_turn": 1, "tool_uses": [fa.structured_output({"verdict": "done", "summary": "resumed"})]}]}
    bench.fake.script = script
    env = bench._environment(agent, None)
    proc = subprocess.Popen(agent.argv("builder", session=first), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=bench.work, text=True, start_new_session=True)
    proc.stdin.write(agent.stdin(prompt("builder"), "builder", first))
    proc.stdin.close()
    try:
        bench.fake.wait_requests(2)
        transcript = agent.transcript_path(first.id, bench.work, env)
        deadline = time.time() + 10
        while time.time() < deadline and not (transcript.exists() and '"tool_result"' in transcript.read_text()):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the machine went down mid-dispatch
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert transcript.exists()

    second = Session(session_id_for("test", "SPEC-1", 2, 2), resume_from=first.id)
    run, answer = bench.run(agent, "builder", None, session=second, timeout=30)
    assert run.code == 0, run
    assert (answer.verdict, answer.summary, answer.session_id) == ("done", "resumed", second.id)
    assert run.lines[0]["session_id"] == second.id
    request = bench.requests()[2]
    assert [t["content"] for t in fa.tool_results(request["body"])] == ["marker-one"]  # the earlier turns
    assert request["body"]["messages"][-1]["content"][-1]["text"] == agent.stdin("", "builder", second)
    assert fa.first_user_text(request["body"]).rstrip().endswith(prompt("builder").splitlines()[-1])
    assert agent.transcript_path(second.id, bench.work, env).exists()
    before = len(bench.requests())

    # the same attempt again (a replayed step): refused before any API call
    run, answer = bench.run(agent, "builder", None, session=second)
    assert run.stdout == "" and answer.error_class == "session_in_use"
    assert answer.error == f"session {second.id} is already in use (this attempt ran before)"
    run, answer = bench.run(agent, "builder", None, session=Session(second.id))
    assert answer.error_class == "session_in_use"
    assert len(bench.requests()) == before


def test_resuming_a_session_that_is_not_here(bench):
    agent = bench.agent()
    missing = str(uuid.uuid4())
    run, answer = bench.run(agent, "builder", {}, session=Session(str(uuid.uuid4()), resume_from=missing))
    assert run.code == 1 and bench.requests() == []
    assert answer.error_class == "no_session" and missing in answer.error
    assert not agent.transcript_path(missing, bench.work, bench._environment(agent, None)).exists()


def test_the_result_line_and_stderr_agree_on_a_refused_flag(bench):
    agent = bench.agent(extra_args={"builder": ("--frobnicate",)})
    run, answer = bench.run(agent, "builder", {})
    assert run.stdout == "" and (answer.error_class, answer.error) == (
        "fatal", "claude refused its arguments: unknown option '--frobnicate'")
    assert json.loads(agent.argv("builder")[agent.argv("builder").index("--json-schema") + 1])["required"] == [
        "verdict", "summary"]
