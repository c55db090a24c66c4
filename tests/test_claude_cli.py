"""Characterization of the REAL Claude Code CLI (pinned 2.1.197), run offline against
tests/fake_anthropic.py: the facts iwo-lite's agents/ code relies on. Each test pins one fact and
fails when a new CLI version changes it.

Needs the CLI: `eval "$(bash .ci/claude.sh)"` (sets IWO_TEST_CLAUDE). Without it these tests skip,
saying so — under CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
import zlib
from pathlib import Path

import pytest

import fake_anthropic as fa
from real_claude import Run, offline_env, require_claude, run_claude

VERDICT_SCHEMA = json.dumps({
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["done"]}, "summary": {"type": "string"}},
    "required": ["verdict", "summary"],
    "additionalProperties": False,
})
NO_RETRY = {"CLAUDE_CODE_MAX_RETRIES": "0"}
RESULT_KEYS = {"type", "subtype", "is_error", "api_error_status", "duration_ms", "duration_api_ms", "num_turns",
               "result", "stop_reason", "session_id", "total_cost_usd", "usage", "modelUsage",
               "permission_denials", "terminal_reason", "uuid"}


class Harness:
    """One fake API, one scratch HOME, one working directory; runs the CLI against them."""

    def __init__(self, claude: str, tmp: Path):
        self.claude = claude
        self.home = tmp / "home"
        self.work = tmp / "work"
        self.work.mkdir(parents=True)
        self.fake = fa.FakeAnthropic().start()
        self.procs: list[subprocess.Popen] = []

    def env(self, **extra) -> dict[str, str]:
        return offline_env(self.fake.url, self.home, **extra)

    def run(self, script: dict | None, *args: str, prompt: str = "You are the builder. Do the job.",
            env: dict | None = None, cwd: Path | None = None, timeout: float = 120) -> Run:
        if script is not None:
            self.fake.script = script
            self.fake.reset_counts()
        return run_claude(self.claude, list(args), prompt=prompt, env=self.env(**(env or {})),
                          cwd=cwd or self.work, timeout=timeout)

    def start(self, script: dict, *args: str, prompt: str = "You are the builder. Go.", env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        """The CLI in the background, in a session of its own (as iwo-lite starts it)."""
        self.fake.script = script
        self.fake.reset_counts()
        proc = subprocess.Popen([self.claude, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(**(env or {})), cwd=str(cwd or self.work),
                                text=True, start_new_session=True)
        proc.stdin.write(prompt)
        proc.stdin.close()
        self.procs.append(proc)
        return proc

    def requests(self) -> list[dict]:
        return self.fake.messages_requests()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.fake.stop()


@pytest.fixture
def cli(tmp_path):
    harness = Harness(require_claude(), tmp_path)
    yield harness
    harness.close()


def transcript(cli: Harness, session: str) -> Path:
    """Where the CLI keeps a session: ~/.claude/projects/<cwd, every non-alphanumeric -> '-'>/<id>.jsonl"""
    return cli.home / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(cli.work)) / f"{session}.jsonl"


def processes_running(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (not zombies)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry))
    return found


def wait_for(predicate, timeout: float = 20, interval: float = 0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s")


# -- output formats ------------------------------------------------------------------------------

def test_json_result_object(cli):
    run = cli.run({"default": {"text": "All done.", "usage": {"input_tokens": 1000, "output_tokens": 100}}},
                  "-p", "--output-format", "json")
    assert run.code == 0 and run.stderr == ""
    assert len(run.stdout.strip().splitlines()) == 1
    result = json.loads(run.stdout)
    assert RESULT_KEYS <= set(result), set(result)
    assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False
    assert result["api_error_status"] is None and result["result"] == "All done." and result["num_turns"] == 1
    assert result["terminal_reason"] == "completed" and result["permission_denials"] == []
    assert "structured_output" not in result and "errors" not in result
    uuid.UUID(result["session_id"])
    # the default model is Opus 4.8 (1M context); cost = $5/M input + $25/M output
    (request,) = cli.requests()
    assert request["body"]["model"] == "claude-opus-4-8" and request["body"]["stream"] is True
    assert request["path"] == "/v1/messages?beta=true"
    assert request["headers"]["user-agent"].startswith("claude-cli/2.1.197")
    assert request["headers"]["x-claude-code-session-id"] == result["session_id"]
    assert result["total_cost_usd"] == pytest.approx(1000 * 5e-6 + 100 * 25e-6)
    assert result["usage"]["input_tokens"] == 1000 and result["usage"]["output_tokens"] == 100
    assert list(result["modelUsage"]) == ["claude-opus-4-8[1m]"]
    assert result["modelUsage"]["claude-opus-4-8[1m]"]["costUSD"] == pytest.approx(result["total_cost_usd"])
    # the only request: no title, quota or profile call; the prompt is the last text block of the
    # first user message (after a <system-reminder> block)
    assert [r["path"] for r in cli.fake.requests] == ["/v1/messages?beta=true"]
    content = request["body"]["messages"][0]["content"]
    assert content[0]["text"].startswith("<system-reminder>") and content[-1]["text"].startswith("You are the builder")


def test_stream_json_lines(cli):
    session = str(uuid.uuid4())
    rules = fa.verdict_flow("builder", {"verdict": "done", "summary": "wrote it"},
                            steps=[fa.bash("echo hello-from-bash")], usage={"input_tokens": 200, "output_tokens": 50})
    run = cli.run({"rules": rules}, "-p", "--output-format", "stream-json", "--verbose", "--session-id", session,
                  "--json-schema", VERDICT_SCHEMA, "--allowedTools", "Bash")
    assert run.code == 0, run
    lines = run.lines
    assert len(lines) == len(run.stdout.strip().splitlines())  # every line is JSON
    assert [(line["type"], line.get("subtype")) for line in lines] == [
        ("system", "init"), ("assistant", None), ("user", None), ("assistant", None), ("user", None),
        ("result", "success")]
    init = lines[0]
    assert init["session_id"] == session and init["cwd"] == str(cli.work)
    assert init["model"] == "claude-opus-4-8[1m]" and init["permissionMode"] == "default"
    assert init["claude_code_version"] == "2.1.197" and init["apiKeySource"] == "ANTHROPIC_API_KEY"
    assert "Bash" in init["tools"] and "StructuredOutput" in init["tools"] and "Task" in init["tools"]
    # an assistant line: the API message (usage as of message_start: output_tokens 1, stop_reason null)
    assistant = lines[1]
    assert set(assistant) >= {"type", "message", "parent_tool_use_id", "session_id", "uuid", "request_id"}
    (block,) = assistant["message"]["content"]
    assert block["type"] == "tool_use" and block["name"] == "Bash"
    assert block["input"] == {"command": "echo hello-from-bash", "description": "run a command"}
    assert assistant["message"]["usage"]["input_tokens"] == 200
    assert assistant["message"]["usage"]["output_tokens"] == 1 and assistant["message"]["stop_reason"] is None
    assert "total_cost_usd" not in assistant and "cost" not in json.dumps(assistant)
    # a user line: the tool result, plus `tool_use_result` (Bash: stdout/stderr/interrupted)
    user = lines[2]
    (result_block,) = user["message"]["content"]
    assert result_block["type"] == "tool_result" and result_block["tool_use_id"] == block["id"]
    assert result_block["content"] == "hello-from-bash" and result_block["is_error"] is False
    assert user["tool_use_result"]["stdout"] == "hello-from-bash" and user["tool_use_result"]["interrupted"] is False
    assert "timestamp" in user
    assert lines[3]["message"]["content"][0]["name"] == "StructuredOutput"
    assert lines[4]["message"]["content"][0]["content"] == "Structured output provided successfully"
    result = lines[-1]
    assert RESULT_KEYS <= set(result)
    assert result["structured_output"] == {"verdict": "done", "summary": "wrote it"}
    assert json.loads(result["result"]) == result["structured_output"]
    assert result["num_turns"] == 3 and len(cli.requests()) == 2  # num_turns counts the verdict's tool result too
    assert result["usage"]["output_tokens"] == 100  # the real totals only in the result
    assert result["total_cost_usd"] == pytest.approx(400 * 5e-6 + 100 * 25e-6)


def test_stream_json_init_is_written_before_the_api_answers(cli):
    session = str(uuid.uuid4())
    proc = cli.start({"default": {"hang": "headers"}}, "-p", "--output-format", "stream-json", "--verbose",
                     "--session-id", session, env=NO_RETRY)
    first = json.loads(proc.stdout.readline())
    assert first["type"] == "system" and first["subtype"] == "init" and first["session_id"] == session
    cli.fake.wait_requests(1)
    assert proc.poll() is None  # still waiting on the API; the init line came regardless
    proc.kill()
    proc.wait()


def test_stream_json_needs_verbose(cli):
    run = cli.run({}, "-p", "--output-format", "stream-json")
    assert run.code == 1 and run.stdout == "" and "--verbose" in run.stderr
    assert cli.requests() == []


# -- sessions ------------------------------------------------------------------------------------

def test_session_id_once_then_resume_continues(cli):
    session = str(uuid.uuid4())
    script = {"rules": [{"turn": 0, "tool_uses": [fa.bash("echo marker-one")]}, {"turn": 1, "text": "first done"},
                        {"min_turn": 2, "text": "second done"}]}
    first = cli.run(script, "-p", "--output-format", "json", "--session-id", session)
    assert first.code == 0 and first.result["session_id"] == session and first.result["num_turns"] == 2
    assert transcript(cli, session).exists()
    before = len(cli.requests())

    again = cli.run(script, "-p", "--output-format", "json", "--session-id", session)
    assert (again.code, again.stdout) == (1, "")
    assert again.stderr == f"Error: Session ID {session} is already in use.\n"
    bad = cli.run(script, "-p", "--output-format", "json", "--session-id", "not-a-uuid")
    assert (bad.code, bad.stdout, bad.stderr) == (1, "", "Error: Invalid session ID. Must be a valid UUID.\n")
    both = cli.run(script, "-p", "--output-format", "json", "--resume", session, "--session-id", str(uuid.uuid4()))
    assert both.code == 1 and "--fork-session" in both.stderr
    unknown = str(uuid.uuid4())
    missing = cli.run(script, "-p", "--output-format", "json", "--resume", unknown)
    assert (missing.code, missing.stdout) == (1, "")
    assert missing.stderr == f"No conversation found with session ID: {unknown}\n"
    elsewhere = cli.work.parent / "elsewhere"
    elsewhere.mkdir()
    other_cwd = cli.run(script, "-p", "--output-format", "json", "--resume", session, cwd=elsewhere)
    assert other_cwd.code == 1 and "No conversation found" in other_cwd.stderr  # sessions belong to a cwd
    assert len(cli.requests()) == before  # none of those reached the API

    # --resume with the prompt on stdin, in print mode: accepted; same session id
    resumed = cli.run(script, "-p", "--output-format", "json", "--resume", session,
                      prompt="You are the builder. Continue.")
    assert resumed.code == 0 and resumed.result["session_id"] == session
    assert resumed.result["result"] == "second done"
    assert resumed.result["num_turns"] == 1 and resumed.result["total_cost_usd"] == pytest.approx(0.001)
    request = cli.requests()[before]
    assert [t["content"] for t in fa.tool_results(request["body"])] == ["marker-one"]
    assert request["turn"] == 2 and fa.first_user_text(request["body"]).endswith("You are the builder. Do the job.")
    assert request["body"]["messages"][-1]["content"][-1]["text"] == "You are the builder. Continue."
    # an empty prompt is refused
    empty = cli.run(script, "-p", "--output-format", "json", "--resume", session, prompt="")
    assert empty.code == 1 and "Provide a prompt" in empty.stderr


def test_resume_after_sigkill_between_turns(cli):
    session = str(uuid.uuid4())
    proc = cli.start({"rules": [{"turn": 0, "tool_uses": [fa.bash("echo marker-one")]}, {"turn": 1, "hang": "start"}]},
                     "-p", "--output-format", "stream-json", "--verbose", "--session-id", session,
                     "--allowedTools", "Bash", env=NO_RETRY)
    cli.fake.wait_requests(2)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kinds = [json.loads(line).get("type") for line in transcript(cli, session).read_text().splitlines()]
    assert kinds[-2:] == ["assistant", "user"]  # the tool_use and its result were written before the kill

    run = cli.run({"default": {"text": "resumed"}}, "-p", "--output-format", "json", "--resume", session,
                  prompt="You are the builder. Continue.", env=NO_RETRY)
    assert run.code == 0 and run.result["session_id"] == session and run.result["result"] == "resumed"
    messages = cli.requests()[-1]["body"]["messages"]
    assert [t["content"] for t in fa.tool_results({"messages": messages})] == ["marker-one"]
    # the CLI marks the interruption: a note after the last tool result, and a synthetic reply
    tail = [(m["role"], m["content"][-1].get("text") if isinstance(m["content"], list) else m["content"])
            for m in messages[-3:]]
    assert tail == [("user", "Continue from where you left off."), ("assistant", "No response requested."),
                    ("user", "You are the builder. Continue.")]


def test_resume_after_sigkill_during_a_tool_drops_the_unfinished_call(cli):
    session = str(uuid.uuid4())
    marker = f"sleep 29{os.getpid() % 10}.5"
    proc = cli.start({"rules": [{"turn": 0, "tool_uses": [fa.bash(marker)]}]}, "-p", "--output-format", "json",
                     "--session-id", session, "--allowedTools", "Bash", env=NO_RETRY)
    try:
        wait_for(lambda: processes_running(marker))
        # The CLI writes its transcript a moment after the tool starts; a kill before that leaves
        # no session to resume ("No conversation found": iwo-lite then starts a fresh attempt).
        wait_for(lambda: transcript(cli, session).exists() and marker in transcript(cli, session).read_text())
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        run = cli.run({"default": {"text": "resumed"}}, "-p", "--output-format", "json", "--resume", session,
                      prompt="You are the builder. Continue.", env=NO_RETRY)
        assert run.code == 0 and run.result["result"] == "resumed"
        body = cli.requests()[-1]["body"]
        assert fa.tool_uses_in(body) == [] and fa.tool_results(body) == []
        assert body["messages"][0]["content"][-1]["text"] == "Continue from where you left off."
    finally:
        for pid in processes_running(marker):
            os.kill(pid, signal.SIGKILL)


# -- permissions ---------------------------------------------------------------------------------

PROFILES = {
    "read": ["--disallowedTools", "Write,Edit,NotebookEdit"],
    "edit": ["--permission-mode", "acceptEdits"],
    "run": ["--permission-mode", "acceptEdits", "--allowedTools", "Bash"],
    "full": ["--dangerously-skip-permissions"],
}
TOOLS_2_1_197 = ["Agent", "Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree", "ExitWorktree",
                 "NotebookEdit", "Read", "ReportFindings", "ScheduleWakeup", "SendMessage", "Skill", "TaskCreate",
                 "TaskGet", "TaskList", "TaskOutput", "TaskStop", "TaskUpdate", "WebFetch", "WebSearch", "Workflow",
                 "Write"]


def permission_probe(cli, args: list[str], env: dict | None = None) -> tuple[Run, dict]:
    """The model tries, one turn each: Read, Edit (of the file read), Write inside and outside the
    working directory, read-only shell, a file command, python3, git, and a redirect."""
    outside = cli.work.parent / "outside"
    outside.mkdir(exist_ok=True)
    existing = cli.work / "e.txt"
    existing.write_text("hello\n")
    steps = [fa.tool_use("Read", {"file_path": str(existing)}),
             fa.tool_use("Edit", {"file_path": str(existing), "old_string": "hello", "new_string": "bye"}),
             fa.write(str(cli.work / "inside.txt"), "x"),
             fa.write(str(outside / "outside.txt"), "x"),
             fa.bash("ls; cat e.txt | grep -c e; find . -name '*.txt'; git status 2>&1 | head -1"),
             fa.bash("mkdir d1"),
             fa.bash("python3 -c \"open('py.txt','w').write('x')\""),
             fa.bash("git init -q ."),
             fa.bash("echo hi > redirect.txt")]
    rules = [{"turn": index, "tool_uses": [step]} for index, step in enumerate(steps)] + [{"text": "Done."}]
    run = cli.run({"rules": rules}, "-p", "--output-format", "json", *args, env={**NO_RETRY, **(env or {})})
    seen = {
        "edited": existing.read_text() == "bye\n",
        "inside": (cli.work / "inside.txt").exists(),
        "outside": (outside / "outside.txt").exists(),
        "mkdir": (cli.work / "d1").is_dir(),
        "python": (cli.work / "py.txt").exists(),
        "git": (cli.work / ".git").is_dir(),
        "redirect": (cli.work / "redirect.txt").exists(),
        "denied": sorted({d["tool_name"] for d in run.result["permission_denials"]}),
        "tools": fa.tool_names(cli.requests()[0]["body"]),
    }
    results = fa.tool_results(cli.requests()[-1]["body"])
    seen["read_only_shell"] = results[4]["is_error"] is False and "e.txt" in results[4]["content"]
    return run, seen


def test_default_print_mode_denies_writes_without_error(cli):
    run, seen = permission_probe(cli, [])
    assert run.code == 0 and run.result["is_error"] is False and run.result["subtype"] == "success"
    assert run.result["result"] == "Done."
    assert seen["tools"] == TOOLS_2_1_197  # no Grep/Glob tools in 2.1.197: searching is done with Bash
    assert seen["read_only_shell"]
    assert not any(seen[k] for k in ("edited", "inside", "outside", "mkdir", "python", "git", "redirect"))
    denials = run.result["permission_denials"]
    assert [d["tool_name"] for d in denials] == ["Edit", "Write", "Write", "Bash", "Bash", "Bash", "Bash"]
    assert set(denials[0]) == {"tool_name", "tool_use_id", "tool_input"}
    assert denials[3]["tool_input"]["command"] == "mkdir d1"
    refused = fa.tool_results(cli.requests()[-1]["body"])[2]
    assert refused["is_error"] is True and "haven't granted it yet" in refused["content"]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_permission_profiles(cli, profile):
    run, seen = permission_probe(cli, PROFILES[profile], env={"IS_SANDBOX": "1"})
    assert run.code == 0 and run.result["is_error"] is False
    assert seen["read_only_shell"]
    if profile == "read":
        # Write/Edit/NotebookEdit are not offered at all; a call to them is "no such tool", not a denial
        assert [t for t in TOOLS_2_1_197 if t not in seen["tools"]] == ["Edit", "NotebookEdit", "Write"]
        assert not any(seen[k] for k in ("edited", "inside", "outside", "mkdir", "python", "git", "redirect"))
        assert seen["denied"] == ["Bash"]
    elif profile == "edit":
        # Write/Edit and simple file commands inside the working directory; not outside it, no python3/git
        assert seen["edited"] and seen["inside"] and seen["mkdir"] and seen["redirect"]
        assert not (seen["outside"] or seen["python"] or seen["git"])
        assert seen["denied"] == ["Bash", "Write"]
    elif profile == "run":
        assert seen["edited"] and seen["inside"] and seen["mkdir"] and seen["python"] and seen["git"]
        assert not seen["outside"] and seen["denied"] == ["Write"]  # Write outside the cwd: still denied
    else:
        assert all(seen[k] for k in ("edited", "inside", "outside", "mkdir", "python", "git", "redirect"))
        assert seen["denied"] == [] and run.result["permission_denials"] == []
    if profile != "read":
        assert seen["tools"] == TOOLS_2_1_197


def test_skip_permissions_as_root_needs_is_sandbox(cli):
    for args in (["--dangerously-skip-permissions"], ["--permission-mode", "bypassPermissions"]):
        run = cli.run({}, "-p", "--output-format", "json", *args)
        if os.geteuid() == 0:  # CI runs as root
            assert (run.code, run.stdout) == (1, "")
            assert run.stderr == ("--dangerously-skip-permissions cannot be used with root/sudo privileges "
                                  "for security reasons\n")
        else:
            assert run.code == 0 and run.result["result"] == "OK"
    assert cli.requests() == ([] if os.geteuid() == 0 else cli.requests()[:2])
    run = cli.run({}, "-p", "--output-format", "json", "--dangerously-skip-permissions", env={"IS_SANDBOX": "1"})
    assert run.code == 0 and run.result["result"] == "OK"


def test_disallowed_tools_win_over_allowed_tools(cli):
    (cli.work / "keep.txt").write_text("x")
    rules = [{"turn": 0, "tool_uses": [fa.bash("python3 -c 'print(1)'")]},
             {"turn": 1, "tool_uses": [fa.bash("rm -f keep.txt")]},
             {"turn": 2, "tool_uses": [fa.write(str(cli.work / "w.txt"), "x")]},
             {"text": "Done."}]
    run = cli.run({"rules": rules}, "-p", "--output-format", "json", "--allowedTools", "Bash",
                  "--disallowedTools", "Bash(rm:*),Write", env=NO_RETRY)
    assert run.code == 0
    assert [(d["tool_name"], d["tool_input"].get("command")) for d in run.result["permission_denials"]] == [
        ("Bash", "rm -f keep.txt")]
    assert (cli.work / "keep.txt").exists() and not (cli.work / "w.txt").exists()
    tools = fa.tool_names(cli.requests()[0]["body"])
    assert "Write" not in tools and "Bash" in tools  # a bare name removes the tool; a pattern only denies
    results = fa.tool_results(cli.requests()[-1]["body"])
    assert results[0]["content"] == "1" and results[2]["is_error"] is True  # Write: no such tool
    # --tools narrows the set offered to the model
    cli.run({}, "-p", "--output-format", "json", "--tools", "Read,Bash", env=NO_RETRY)
    assert fa.tool_names(cli.requests()[-1]["body"]) == ["Bash", "Read"]


# -- structured output -------------------------------------------------------------------------

def test_json_schema_structured_output_tool(cli):
    rules = [{"turn": 0, "tool_uses": [fa.structured_output({"verdict": "nope"})]},
             {"turn": 1, "tool_uses": [fa.structured_output({"verdict": "done", "summary": "ok"})]},
             {"text": "should not be asked"}]
    run = cli.run({"rules": rules}, "-p", "--output-format", "json", "--json-schema", VERDICT_SCHEMA, env=NO_RETRY)
    assert run.code == 0 and run.result["structured_output"] == {"verdict": "done", "summary": "ok"}
    assert run.result["stop_reason"] == "tool_use" and len(cli.requests()) == 2  # ends at the valid call
    tool = next(t for t in cli.requests()[0]["body"]["tools"] if t["name"] == "StructuredOutput")
    assert tool["input_schema"]["required"] == ["verdict", "summary"]
    rejected = fa.tool_results(cli.requests()[1]["body"])[0]
    assert rejected["is_error"] is True and rejected["content"].startswith("Output does not match required schema:")


def test_json_schema_never_valid_gives_up_after_five(cli):
    run = cli.run({"default": {"tool_uses": [fa.structured_output({"verdict": "nope"})]}},
                  "-p", "--output-format", "json", "--json-schema", VERDICT_SCHEMA, env=NO_RETRY)
    assert run.code == 1 and len(cli.requests()) == 5
    result = run.result
    assert result["subtype"] == "error_max_structured_output_retries" and result["is_error"] is True
    assert result["errors"] == ["Failed to provide valid structured output after 5 attempts"]
    assert "result" not in result and "structured_output" not in result


def test_json_schema_never_called_nudges_once_then_succeeds_without_it(cli):
    run = cli.run({"default": {"text": "Finished, no verdict."}}, "-p", "--output-format", "json",
                  "--json-schema", VERDICT_SCHEMA, env=NO_RETRY)
    assert run.code == 0 and run.result["is_error"] is False and run.result["subtype"] == "success"
    assert "structured_output" not in run.result and run.result["result"] == "Finished, no verdict."
    assert len(cli.requests()) == 2
    nudge = cli.requests()[1]["body"]["messages"][-1]["content"][-1]["text"]
    assert nudge.startswith("[structured-output-enforce] You MUST call the StructuredOutput tool")


# -- API errors ----------------------------------------------------------------------------------

def api_error(cli, action: dict, retries: str | None, fmt: str = "json") -> tuple[Run, list[dict], float]:
    args = ["-p", "--output-format", fmt] + (["--verbose"] if fmt == "stream-json" else [])
    run = cli.run({"default": action}, *args, env={"CLAUDE_CODE_MAX_RETRIES": retries} if retries else {})
    requests = cli.requests()
    return run, requests, (requests[-1]["time"] - requests[0]["time"]) if requests else 0.0


@pytest.mark.parametrize("retries,count", [("0", 1), ("1", 2), ("2", 3), (None, 3), ("5", 3)])
def test_persistent_529_stops_after_at_most_three_requests(cli, retries, count):
    run, requests, span = api_error(cli, fa.error(529), retries)
    assert len(requests) == count
    result = run.result
    assert run.code == 1 and run.stderr == ""
    assert result["subtype"] == "success" and result["is_error"] is True and result["total_cost_usd"] == 0
    assert "errors" not in result
    if count < 3:
        assert result["api_error_status"] == 529
        assert result["result"].startswith("API Error: 529 Overloaded.")
    else:  # three 529s in a row end the call whatever CLAUDE_CODE_MAX_RETRIES says
        assert result["api_error_status"] is None
        assert result["result"].startswith("API Error: Repeated 529 Overloaded errors.")
    assert span < 4  # backoff ~0.6 s, then ~1.1 s


def test_529_in_the_stream_falls_back_to_a_non_streaming_request(cli):
    run, requests, _ = api_error(cli, {"stream_error": {"status": 529}}, "0")
    assert [r["body"].get("stream") for r in requests] == [True, True, True, None]
    assert run.code == 1 and run.result["is_error"] is True and run.result["api_error_status"] is None
    assert run.result["result"].startswith("API Error: Repeated 529 Overloaded errors.")
    assert run.result["total_cost_usd"] > 0  # the broken streams' message_start usage is counted


def test_api_retry_lines_in_stream_json(cli):
    run, requests, _ = api_error(cli, fa.error(500), "2", fmt="stream-json")
    retries = [line for line in run.lines if line.get("subtype") == "api_retry"]
    assert [(r["attempt"], r["max_retries"], r["error_status"], r["error"]) for r in retries] == [
        (1, 2, 500, "server_error"), (2, 2, 500, "server_error")]
    assert set(retries[0]) == {"type", "subtype", "attempt", "max_retries", "retry_delay_ms", "error_status", "error",
                               "session_id", "uuid"}
    assert all(r["retry_delay_ms"] > 0 for r in retries) and len(requests) == 3
    assistant = [line for line in run.lines if line["type"] == "assistant"][-1]
    assert assistant["message"]["model"] == "<synthetic>"
    assert run.result["api_error_status"] == 500 and run.result["result"].startswith("API Error: 500")


@pytest.mark.parametrize("status,retries,count,text", [
    (500, "1", 2, "API Error: 500 Internal server error."),
    (401, "0", 1, "Invalid API key · Fix external API key"),
    (401, "2", 3, "Invalid API key · Fix external API key"),  # a 401 is retried like the others
])
def test_other_errors_are_retried_max_retries_times(cli, status, retries, count, text):
    run, requests, _ = api_error(cli, fa.error(status), retries)
    assert len(requests) == count
    assert run.code == 1 and run.result["is_error"] is True and run.result["subtype"] == "success"
    assert run.result["api_error_status"] == status and run.result["result"].startswith(text)
    assert run.result["total_cost_usd"] == 0 and run.stderr == ""


def test_429_waits_for_retry_after(cli):
    run, requests, span = api_error(cli, fa.error(429, headers={"retry-after": "3"}), "1")
    assert len(requests) == 2 and 2.9 <= span < 6
    assert run.code == 1 and run.result["api_error_status"] == 429
    assert run.result["result"] == ("API Error: Request rejected (429) · This request would exceed your "
                                    "account's rate limit. Please try again later.")


def test_no_credentials_at_all(cli):
    run = cli.run({}, "-p", "--output-format", "json", env={"ANTHROPIC_API_KEY": None})
    assert run.code == 1 and run.result["is_error"] is True and run.result["result"] == "Not logged in · Please run /login"
    assert cli.requests() == []


# -- usage limits (subscription login) -------------------------------------------------------------

OAUTH = {"ANTHROPIC_API_KEY": None, "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test-token"}


def test_oauth_login_uses_bearer_and_no_other_endpoint(cli):
    run = cli.run({}, "-p", "--output-format", "json", env=OAUTH)
    assert run.code == 0 and run.result["result"] == "OK"
    (request,) = cli.fake.requests  # no profile, roles or quota request: only the message
    assert request["path"] == "/v1/messages?beta=true"
    assert "authorization" in request["headers"] and "x-api-key" not in request["headers"]
    assert "oauth-2025-04-20" in request["headers"]["anthropic-beta"]
    assert request["body"]["model"] == "claude-sonnet-5"  # the default model differs under OAuth


def test_usage_limit_under_oauth(cli):
    reset = int(time.time()) + 3600
    run = cli.run({"default": fa.usage_limit(reset)}, "-p", "--output-format", "stream-json", "--verbose",
                  env={**OAUTH, "CLAUDE_CODE_MAX_RETRIES": "3", "TZ": "UTC"})
    assert len(cli.requests()) == 1  # not retried
    assert run.code == 1
    event = run.lines[1]
    assert event["type"] == "rate_limit_event" and set(event) == {"type", "rate_limit_info", "uuid", "session_id"}
    assert event["rate_limit_info"] == {"status": "rejected", "resetsAt": reset, "rateLimitType": "five_hour",
                                        "isUsingOverage": False}
    assistant = run.lines[2]
    assert assistant["type"] == "assistant" and assistant["error"] == "rate_limit"
    # the CLI leaves out ":00" on the hour ("resets 6am"); CI met it at 05:00 UTC
    at = time.gmtime(reset)
    clock = time.strftime("%-I%p" if at.tm_min == 0 else "%-I:%M%p", at).lower()
    result = run.result
    assert result["is_error"] is True and result["subtype"] == "success" and result["api_error_status"] == 429
    assert result["result"] == f"You've hit your session limit · resets {clock} (UTC)"


def test_usage_limit_wording_depends_on_the_claim_header(cli):
    reset = int(time.time()) + 7200
    weekly = fa.error(429, headers={"anthropic-ratelimit-unified-status": "rejected",
                                    "anthropic-ratelimit-unified-reset": str(reset),
                                    "anthropic-ratelimit-unified-representative-claim": "seven_day"})
    run = cli.run({"default": weekly}, "-p", "--output-format", "json", env={**OAUTH, "TZ": "UTC"})
    assert run.result["result"].startswith("You've hit your weekly limit · resets ")
    bare = fa.error(429, headers={"anthropic-ratelimit-unified-status": "rejected",
                                  "anthropic-ratelimit-unified-reset": str(reset)})
    run = cli.run({"default": bare}, "-p", "--output-format", "stream-json", "--verbose", env=OAUTH)
    assert run.lines[1]["rate_limit_info"] == {"status": "rejected", "resetsAt": reset, "isUsingOverage": False}
    assert run.result["result"].startswith("API Error: Server is temporarily limiting requests (not your usage limit)")


def test_usage_limit_headers_with_an_api_key_are_a_plain_429(cli):
    run = cli.run({"default": fa.usage_limit(int(time.time()) + 2)}, "-p", "--output-format", "stream-json",
                  "--verbose", env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    assert len(cli.requests()) == 2
    assert not any(line["type"] == "rate_limit_event" for line in run.lines)
    assert run.result["api_error_status"] == 429 and run.result["result"].startswith("API Error: Request rejected (429)")


# -- limits --------------------------------------------------------------------------------------

def test_max_turns(cli):
    run = cli.run({"default": {"tool_uses": [fa.bash("ls")]}}, "-p", "--output-format", "json", "--max-turns", "2",
                  env=NO_RETRY)
    assert run.code == 1 and len(cli.requests()) == 2
    result = run.result
    assert result["subtype"] == "error_max_turns" and result["is_error"] is True
    assert result["errors"] == ["Reached maximum number of turns (2)"] and result["terminal_reason"] == "max_turns"
    assert "result" not in result and "api_error_status" not in result
    assert result["total_cost_usd"] == pytest.approx(0.002)  # both turns paid


@pytest.mark.parametrize("model,budget,turns,per_turn", [
    (None, "1.2", 3, 100_000 * 5e-6 + 1000 * 25e-6),        # claude-opus-4-8: $5 / $25 per M
    ("sonnet", "1.2", 4, 100_000 * 3e-6 + 1000 * 15e-6),    # claude-sonnet-5: $3 / $15
    ("haiku", "0.3", 3, 100_000 * 1e-6 + 1000 * 5e-6),     # claude-haiku-4-5: $1 / $5
    (None, "0.01", 1, 100_000 * 5e-6 + 1000 * 25e-6),
])
def test_max_budget_usd_stops_after_the_turn_that_passes_it(cli, model, budget, turns, per_turn):
    script = {"default": {"tool_uses": [fa.bash("ls")], "usage": {"input_tokens": 100_000, "output_tokens": 1000}}}
    run = cli.run(script, "-p", "--output-format", "json", "--max-budget-usd", budget,
                  *(["--model", model] if model else []), env=NO_RETRY)
    assert run.code == 1 and len(cli.requests()) == turns
    result = run.result
    assert result["subtype"] == "error_max_budget_usd" and result["is_error"] is True
    assert result["errors"] == [f"Reached maximum budget (${budget})"] and "result" not in result
    assert result["total_cost_usd"] == pytest.approx(turns * per_turn)
    assert (turns - 1) * per_turn < float(budget) <= turns * per_turn


def test_cost_counts_cache_tokens(cli):
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "cache_creation_input_tokens": 1_000_000,
             "cache_read_input_tokens": 1_000_000}
    run = cli.run({"default": {"text": "hi", "usage": usage}}, "-p", "--output-format", "json", env=NO_RETRY)
    assert run.result["total_cost_usd"] == pytest.approx(5 + 25 + 6.25 + 0.5)


def test_max_budget_usd_must_be_positive(cli):
    run = cli.run({}, "-p", "--output-format", "json", "--max-budget-usd", "0")
    assert run.code == 1 and run.stdout == "" and cli.requests() == []


# -- signals and stalls --------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "SIGKILL group", "SIGINT"])
def test_signals_while_a_bash_tool_runs(cli, how):
    # unique across the suite's workers (hash() differs per process: two workers' markers could meet,
    # and this test then killed another test's CLI before its own had asked anything)
    marker = f"sleep {300 + os.getpid() % 500}.{zlib.crc32(how.encode()) % 90 + 10}"
    proc = cli.start({"rules": [{"turn": 0, "tool_uses": [fa.bash(marker)]}, {"text": "after"}]},
                     "-p", "--output-format", "json", "--allowedTools", "Bash", env=NO_RETRY)
    try:
        tool = wait_for(lambda: processes_running(marker))
        for pid in tool:  # the tool runs in a session of its own, not in the CLI's process group
            assert os.getsid(pid) != os.getsid(proc.pid) and os.getpgid(pid) != proc.pid
        name = how.split()[0]
        if how.endswith("group"):
            os.killpg(proc.pid, getattr(signal, name))
        else:
            os.kill(proc.pid, getattr(signal, name))
        code = proc.wait(timeout=20)
        out = proc.stdout.read()
        time.sleep(0.5)
        left = processes_running(marker)
        assert len(cli.requests()) == 1  # no further (paid) call
        if name == "SIGINT":
            # the CLI kills its tool and prints an error result; its exit status is 1, or 0 about
            # one time in ten (measured 2026-12-02: 2 of 15): iwo-lite reads is_error, not the status
            assert code in (0, 1) and left == []
            result = json.loads(out)
            assert result["is_error"] is True and result["subtype"] == "error_during_execution"
            assert result["terminal_reason"] == "aborted_tools" and result["total_cost_usd"] == pytest.approx(0.001)
        else:
            assert code == -signal.SIGKILL if name == "SIGKILL" else code == 143
            assert out == "" and left, "the tool should be left running"
    finally:
        for pid in processes_running(marker):
            os.kill(pid, signal.SIGKILL)


def test_stalled_connection_is_not_timed_out_by_default(cli):
    proc = cli.start({"default": {"hang": "start"}}, "-p", "--output-format", "json", env=NO_RETRY)
    cli.fake.wait_requests(1)
    time.sleep(15)  # measured: still waiting after 75 s (no headers, or message_start then silence)
    assert proc.poll() is None and len(cli.requests()) == 1
    proc.kill()
    proc.wait()


def test_api_timeout_ms_bounds_the_wait_for_headers(cli):
    run = cli.run({"default": {"hang": "headers"}}, "-p", "--output-format", "json",
                  env={**NO_RETRY, "API_TIMEOUT_MS": "3000"}, timeout=60)
    assert run.code == 1 and len(cli.requests()) == 1 and run.seconds < 30
    assert run.result["is_error"] is True and run.result["result"] == "Request timed out"
    assert run.result["api_error_status"] is None


def test_without_nonessential_traffic_off_a_title_request_comes_first(cli):
    run = cli.run({"default": {"text": "main answer"}}, "-p", "--output-format", "json",
                  env={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": None, "DISABLE_TELEMETRY": None,
                       "DISABLE_ERROR_REPORTING": None})
    assert run.code == 0 and run.result["result"] == "main answer"
    title, main = cli.requests()
    assert title["action"] == "title" and title["body"]["model"] == main["body"]["model"] == "claude-opus-4-8"
    assert "tools" not in title["body"] or not title["body"]["tools"]
    assert fa.first_user_text(title["body"]).startswith("<session>\nYou are the builder. Do the job.")
    assert main["action"] == "text" and main["role"] == "builder"
