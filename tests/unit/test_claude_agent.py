"""Claude Code as an agent kind (iwo_lite/agents/claude.py): argv, profiles, schemas, sessions,
error classes, reset times, denials and the stream reader — no processes. The shapes of the
result objects, stream lines and stderr texts are the real CLI's (2.1.197), as pinned by
tests/test_claude_cli.py and recorded from it."""

from __future__ import annotations

import datetime as dt
import json
import types
import uuid

import pytest

from iwo_lite import agents
from iwo_lite.agents import claude
from iwo_lite.agents.answer import AgentAnswer, parse_agent_output, parse_reset_time
from iwo_lite.agents.claude import (CONTINUE_PROMPT, DEFAULT_PERMISSIONS, PROFILES, ClaudeAgent, Session, StreamReader,
                                    session_id_for, strip_owned, verdict_schema)
from iwo_lite.agents.plain import PlainAgent
from iwo_lite.roles import ROLES, VERDICTS

SESSION = "9c560251-e252-41fe-9eb5-3aee404e23de"
CWD = "/tmp/w"


def agent(**more) -> ClaudeAgent:
    return ClaudeAgent(command=more.pop("command", ("claude",)), **more)


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# -- argv ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["claude", "-p", "--output-format", "json"], ["/opt/claude/bin/claude"]])
def test_owned_flags_are_replaced_not_duplicated(command):
    argv = agent(command=tuple(command)).argv("builder")
    assert argv[0] == command[0]
    assert argv.count("-p") == 1 and argv.count("--output-format") == 1 and argv.count("--verbose") == 1
    assert after(argv, "--output-format") == "stream-json" and argv.count("--json-schema") == 1
    assert json.loads(after(argv, "--json-schema")) == verdict_schema("builder")


def test_strip_owned_keeps_every_other_flag():
    command = ["claude", "--print", "--output-format=json", "--model", "opus", "--verbose", "--json-schema", "{}",
               "--session-id", "x", "--resume", "abc", "-r", "--fork-session", "-c", "--continue",
               "--permission-mode", "plan", "--allowedTools", "Bash", "Write", "--allowed-tools=Read",
               "--disallowedTools", "Edit", "--disallowed-tools", "Bash(rm:*)", "--dangerously-skip-permissions",
               "--max-budget-usd", "3", "--max-turns", "40", "--add-dir", "/data", "--max-budget-usd=2"]
    assert strip_owned(command) == ("claude", "--model", "opus", "--max-turns", "40", "--add-dir", "/data")
    assert strip_owned(["claude", "--resume", "--model", "m"]) == ("claude", "--model", "m")  # --resume's value is optional
    assert strip_owned([]) == ()


@pytest.mark.parametrize("role", ROLES)
def test_profiles_by_role(role):
    argv = agent().argv(role)
    profile = list(PROFILES[DEFAULT_PERMISSIONS[role]])
    assert argv[-len(profile):] == profile
    assert DEFAULT_PERMISSIONS[role] == {"planner": "read", "reviewer": "read", "docs": "edit"}.get(role, "run")


def test_profile_flags():
    assert PROFILES == {"read": ("--disallowedTools", "Write,Edit,NotebookEdit"),
                        "edit": ("--permission-mode", "acceptEdits"),
                        "run": ("--permission-mode", "acceptEdits", "--allowedTools", "Bash"),
                        "full": ("--dangerously-skip-permissions",)}


def test_overrides_extra_args_after_the_profile_and_the_model_last():
    a = agent(command=("claude", "--max-turns", "30"), permissions={"reviewer": "full", "builder": None},
              extra_args={"reviewer": ("--allowedTools", "Bash(pytest:*)")}, models={"reviewer": "sonnet"})
    argv = a.argv("reviewer")
    assert argv[:3] == ["claude", "--max-turns", "30"]
    assert argv[-5:] == ["--dangerously-skip-permissions", "--allowedTools", "Bash(pytest:*)", "--model", "sonnet"]
    assert a.argv("builder")[-4:] == list(PROFILES["run"])  # None: the role's default
    with pytest.raises(ValueError, match="roles.docs.permissions"):
        agent(permissions={"docs": "write"})


def test_session_and_budget_flags():
    fresh, resumed = Session("new-id"), Session("new-id", resume_from="old-id")
    argv = agent().argv("builder", session=fresh, budget_left_usd=1.2)
    assert after(argv, "--session-id") == "new-id" and "--resume" not in argv and "--fork-session" not in argv
    assert after(argv, "--max-budget-usd") == "1.2"
    assert argv.index("--max-budget-usd") > argv.index("--allowedTools")  # after the profile
    argv = agent().argv("builder", session=resumed)
    at = argv.index("--resume")
    assert argv[at:at + 5] == ["--resume", "old-id", "--fork-session", "--session-id", "new-id"]
    assert "--max-budget-usd" not in argv


@pytest.mark.parametrize("left, shown", [(0, "0.01"), (-3, "0.01"), (1e-9, "0.01"), (0.004, "0.01"), (2, "2"),
                                         (12.3456789, "12.345679"), (1e-05 + 0.01, "0.01001"), (1e6, "1000000")])
def test_budget_never_zero_and_never_an_exponent(left, shown):
    assert after(agent().argv("tester", budget_left_usd=left), "--max-budget-usd") == shown


@pytest.mark.parametrize("left", [float("nan"), float("inf"), None])
def test_budget_that_is_not_a_number_is_left_out(left):
    assert "--max-budget-usd" not in agent().argv("tester", budget_left_usd=left)


def test_env_stdin_and_interface_shared_with_the_plain_agent():
    a = agent()
    assert a.env() == {"CLAUDE_CODE_MAX_RETRIES": "2", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    assert a.stdin("You are the builder ...", "builder", None) == "You are the builder ..."
    assert a.stdin("You are the builder ...", "builder", Session("n")) == "You are the builder ..."
    again = a.stdin("You are the builder ...", "tester", Session("n", "o"))
    assert again.startswith("You are the tester in a six-role coding loop; you were interrupted.")
    assert again == CONTINUE_PROMPT.format(role="tester") and "verdict" in again
    plain = PlainAgent(command=("my-agent",), extra_args={"builder": ("-x",)}, models={"builder": "m"})
    assert (a.name, a.streams, plain.name, plain.streams) == ("claude", True, "json", False)
    assert plain.argv("builder", session=Session("n"), budget_left_usd=3) == ["my-agent", "-x", "--model", "m"]
    assert plain.env() == {} and plain.stdin("p", "builder", Session("n", "o")) == "p"
    assert plain.transcript_path("s", "/tmp", {}) is None and plain.stream_reader() is None
    assert isinstance(a.stream_reader(), StreamReader)


# -- config ---------------------------------------------------------------------------------------

def config(command, kind=None, **roles):
    role_configs = {role: types.SimpleNamespace(**{"extra_args": (), "model": None, **roles.get(role, {})})
                    for role in ROLES}
    return types.SimpleNamespace(agent=types.SimpleNamespace(command=tuple(command), kind=kind), roles=role_configs)


def test_kind_and_from_config():
    assert agents.kind_for(["claude", "-p"]) == "claude" and agents.kind_for(["/usr/local/bin/claude"]) == "claude"
    assert agents.kind_for(["python3", "fake_claude.py"]) == "json" and agents.kind_for([]) == "json"
    built = agents.from_config(config(["claude", "-p", "--output-format", "json"], reviewer={"permissions": "edit",
                                                                                             "model": "opus"}))
    assert isinstance(built, ClaudeAgent) and built.command == ("claude",)
    assert built.profile("reviewer") == "edit" and built.profile("planner") == "read"
    assert built.argv("reviewer")[-2:] == ["--model", "opus"]
    assert isinstance(agents.from_config(config(["claude"], kind="json")), PlainAgent)
    assert isinstance(agents.from_config(config(["./my-agent"], kind="claude")), ClaudeAgent)
    assert isinstance(agents.from_config(config(["./my-agent"])), PlainAgent)
    # an [agent] without `kind` and roles without `permissions` (an older config module): the defaults
    older = types.SimpleNamespace(agent=types.SimpleNamespace(command=("claude",)),
                                  roles={role: types.SimpleNamespace(extra_args=(), model=None) for role in ROLES})
    built = agents.from_config(older)
    assert isinstance(built, ClaudeAgent) and all(built.profile(r) == DEFAULT_PERMISSIONS[r] for r in ROLES)


# -- schema -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_verdict_schema(role):
    schema = verdict_schema(role)
    assert schema["properties"]["verdict"]["enum"] == list(VERDICTS[role])
    assert schema["properties"]["summary"]["type"] == schema["properties"]["question"]["type"] == "string"
    assert schema["required"] == ["verdict", "summary"]
    assert schema["if"] == {"properties": {"verdict": {"const": "blocker"}}, "required": ["verdict"]}
    assert schema["then"]["required"] == ["question"]
    assert schema["then"]["properties"]["question"]["minLength"] == 1
    json.dumps(schema)


# -- sessions ---------------------------------------------------------------------------------------

def test_session_ids_are_deterministic_uuids():
    one = session_id_for("sqlite:///h/iwo.sqlite", "SPEC-1", 3, 1)
    assert one == session_id_for("sqlite:///h/iwo.sqlite", "SPEC-1", 3, 1) and str(uuid.UUID(one)) == one
    others = {session_id_for("sqlite:///h/iwo.sqlite", "SPEC-1", 3, 2), session_id_for("sqlite:///h/iwo.sqlite", "SPEC-1", 4, 1),
              session_id_for("sqlite:///h/iwo.sqlite", "SPEC-2", 3, 1), session_id_for("sqlite:///g/iwo.sqlite", "SPEC-1", 3, 1)}
    assert one not in others and len(others) == 4


def test_transcript_path(tmp_path):
    a = agent()
    work = tmp_path / "my.repo"
    work.mkdir()
    link = tmp_path / "link"
    link.symlink_to(work)
    expected_dir = str(work).replace("/", "-").replace(".", "-").replace("_", "-")
    path = a.transcript_path("S", link, {"HOME": "/home/u"})
    assert str(path) == f"/home/u/.claude/projects/{expected_dir}/S.jsonl"  # the CLI resolves symlinks
    assert str(a.transcript_path("S", work, {"HOME": "/home/u", "CLAUDE_CONFIG_DIR": "/cfg"})) == \
        f"/cfg/projects/{expected_dir}/S.jsonl"


def test_long_working_directories_are_cut_and_hashed_like_the_cli():
    # measured with the real CLI 2.1.197: this cwd's transcripts went to projects/<200 chars>-sai798/
    cwd = "/tmp/exp/run6/" + "L" * 120 + "/" + "M" * 120
    name = claude.project_dir_name(cwd)
    assert name == ("-tmp-exp-run6-" + "L" * 120 + "-" + "M" * 120)[:200] + "-sai798"
    assert claude.project_dir_name("/a/é b") == "-a---b"


# -- error classes ------------------------------------------------------------------------------------

INIT = {"type": "system", "subtype": "init", "cwd": CWD, "session_id": SESSION, "tools": ["Bash", "Read"],
        "model": "claude-opus-4-8[1m]", "permissionMode": "default", "claude_code_version": "2.1.197"}
USAGE0 = {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}


def result(**fields) -> dict:
    base = {"type": "result", "subtype": "success", "is_error": False, "api_error_status": None, "duration_ms": 100,
            "duration_api_ms": 0, "num_turns": 1, "result": "", "stop_reason": "end_turn", "session_id": SESSION,
            "total_cost_usd": 0, "usage": dict(USAGE0), "modelUsage": {}, "permission_denials": [],
            "terminal_reason": "completed", "uuid": "59b426d3-164c-479e-8dab-a78d8fb866f2"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def api_error(status, text, **fields) -> dict:
    return result(is_error=True, api_error_status=status, result=text, stop_reason="stop_sequence", **fields)


def stream(*lines: dict) -> str:
    return "".join(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n" for line in (INIT, *lines))


def parse(role, *lines, exit_code=1, stderr=""):
    return agent().parse(role, stream(*lines), exit_code, stderr)


def rate_limit_event(resets_at, status="rejected", kind="five_hour"):
    info = {"status": status, "resetsAt": resets_at, "isUsingOverage": False}
    if kind:
        info["rateLimitType"] = kind
    return {"type": "rate_limit_event", "rate_limit_info": info, "uuid": "7c6e", "session_id": SESSION}


GATEWAY = " This is a server-side issue, usually temporary — try again in a moment. If it persists, check your " \
          "inference gateway (127.0.0.1:35235)."

CASES = [
    # (name, result line (or None), stderr, class, error)
    ("good", result(structured_output={"verdict": "approve", "summary": "fine"}, result='{"verdict":"approve"}'),
     0, "", None, None),
    ("no verdict", result(result="Finished, no verdict."), 0, "", "retry",
     "agent answer has no verdict (no structured_output and no fenced ```json block in result)"),
    ("wrong verdict", result(structured_output={"verdict": "done", "summary": "x"}), 0, "", "retry",
     "unknown verdict 'done' for reviewer (expected one of approve, changes, blocker)"),
    ("blocker, no question", result(structured_output={"verdict": "blocker", "summary": "x"}), 0, "", "retry",
     "verdict blocker without a question"),
    ("500", api_error(500, "API Error: 500 Internal server error." + GATEWAY), 1, "", "retry",
     "API 500 internal server error"),
    ("timeout", api_error(None, "Request timed out"), 1, "", "retry", "API request timed out"),
    ("structured output retries", result(subtype="error_max_structured_output_retries", is_error=True, result=...,
                                         errors=["Failed to provide valid structured output after 5 attempts"]),
     1, "", "retry", "no valid verdict: Failed to provide valid structured output after 5 attempts"),
    ("401 key", api_error(401, "Invalid API key · Fix external API key"), 1, "", "fatal", "invalid API key"),
    ("no login", api_error(None, "Not logged in · Please run /login"), 1, "", "fatal", "not logged in"),
    ("401 oauth", api_error(401, "Not logged in · Please run /login"), 1, "", "fatal", "not logged in"),
    ("expired", api_error(401, "Failed to authenticate. API Error: 401 OAuth token has expired. Please obtain a new "
                               "token or refresh your existing token."), 1, "", "fatal", "OAuth token expired"),
    ("revoked", api_error(401, "Failed to authenticate. API Error: 401 OAuth token has been revoked. Please obtain "
                               "a new token."), 1, "", "fatal", "OAuth token revoked"),
    ("403", api_error(403, "Failed to authenticate. API Error: 403 Your API key does not have permission to use the "
                           "specified resource."), 1, "", "fatal",
     "authentication failed: Failed to authenticate. API Error: 403 Your API key does not have permission to use the "
     "specified resource."),
    ("model", api_error(404, "There's an issue with the selected model (claude-nope). It may not exist or you may "
                             "not have access to it. Run --model to pick a different model."), 1, "", "fatal",
     "API 404: There's an issue with the selected model (claude-nope). It may not exist or you may not have access "
     "to it. Run --model to pick a different model."),
    ("529", api_error(529, "API Error: 529 Overloaded." + GATEWAY), 1, "", "overloaded", "API 529 overloaded"),
    ("529 x3", api_error(None, "API Error: Repeated 529 Overloaded errors. The API is at capacity — this is usually "
                               "temporary."), 1, "", "overloaded", "API 529 overloaded"),
    ("429", api_error(429, "API Error: Request rejected (429) · This request would exceed your account's rate limit. "
                           "Please try again later."), 1, "", "rate_limited", "API 429 rate limited"),
    ("max turns", result(subtype="error_max_turns", is_error=True, result=..., api_error_status=..., num_turns=3,
                         errors=["Reached maximum number of turns (2)"], terminal_reason="max_turns",
                         total_cost_usd=0.002), 1, "", "max_turns", "reached --max-turns (2)"),
    ("budget", result(subtype="error_max_budget_usd", is_error=True, result=...,
                      errors=["Reached maximum budget ($1.2)"], total_cost_usd=1.575), 1, "", "budget",
     "reached --max-budget-usd ($1.2)"),
    ("no session (stream)", result(subtype="error_during_execution", is_error=True, result=..., num_turns=0,
                                   errors=["No conversation found with session ID: 3687ab0c-221b-4a34-a1e6-d1eeaf6280ee"]),
     1, "No conversation found with session ID: 3687ab0c-221b-4a34-a1e6-d1eeaf6280ee\n", "no_session",
     "no session 3687ab0c-221b-4a34-a1e6-d1eeaf6280ee to resume here (no transcript for this working directory)"),
]


@pytest.mark.parametrize("name, line, exit_code, stderr, error_class, error", CASES, ids=[c[0] for c in CASES])
def test_error_classes_from_result_objects(name, line, exit_code, stderr, error_class, error):
    answer = parse("reviewer", line, exit_code=exit_code, stderr=stderr)
    assert (answer.error_class, answer.error) == (error_class, error)
    assert answer.session_id == SESSION
    assert "(exit status" not in (answer.error or "")
    if error_class is None:
        assert (answer.verdict, answer.summary) == ("approve", "fine")
    else:
        assert answer.verdict is None


STDERR_CASES = [
    ("Error: Session ID 4f0c-x is already in use.\n", "session_in_use",
     "session 4f0c-x is already in use (this attempt ran before)"),
    ("No conversation found with session ID: 77aa\n", "no_session",
     "no session 77aa to resume here (no transcript for this working directory)"),
    ("Error: Invalid session ID. Must be a valid UUID.\n", "fatal", "invalid session id (not a UUID)"),
    ("error: unknown option '--frobnicate'\n", "fatal", "claude refused its arguments: unknown option '--frobnicate'"),
    ("error: option '--permission-mode <mode>' argument 'bogus' is invalid. Allowed choices are acceptEdits, auto.\n",
     "fatal", "claude refused its arguments: option '--permission-mode <mode>' argument 'bogus' is invalid. Allowed "
     "choices are acceptEdits, auto."),
    ("Error: --json-schema is not valid JSON: JSON Parse error: Expected '}'\n", "fatal",
     "invalid --json-schema: --json-schema is not valid JSON: JSON Parse error: Expected '}'"),
    ("Error: --json-schema must be a JSON object\n", "fatal", "invalid --json-schema: --json-schema must be a JSON object"),
    ("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n", "fatal",
     "--dangerously-skip-permissions refused when running as root (permissions = \"full\"): set IS_SANDBOX=1 in the "
     "daemon's environment, or choose another profile"),
    ("33618 | `),await new Promise((s)=>...\n\nerror: --max-budget-usd must be a positive number greater than 0\n"
     "      at <anonymous> (/$bunfs/root/src/entrypoints/cli.js:33623:6915)\n\nBun v1.4.0 (Linux x64 baseline)\n",
     "fatal", "claude refused its arguments: --max-budget-usd must be a positive number greater than 0"),
    ("Error: --session-id can only be used with --continue or --resume if --fork-session is also specified.\n",
     "fatal", "claude refused its arguments: --session-id can only be used with --continue or --resume if "
     "--fork-session is also specified."),
    ("Error: EACCES: permission denied, open '/root/.claude.json'\n", "retry",
     "agent exited with status 1 and printed nothing: EACCES: permission denied, open '/root/.claude.json'"),
    ("", "retry", "agent exited with status 1 and printed nothing"),
    ("Segmentation fault\n", "retry", "agent exited with status 1 and printed nothing: Segmentation fault"),
]


@pytest.mark.parametrize("stderr, error_class, error", STDERR_CASES)
def test_error_classes_from_stderr_with_nothing_on_stdout(stderr, error_class, error):
    answer = agent().parse("builder", "", 1, stderr)
    assert (answer.error_class, answer.error, answer.verdict) == (error_class, error, None)


def test_a_stream_cut_before_its_result():
    answer = agent().parse("builder", stream()[:-1] + '\n{"type":"assistant","mess', -9, "")
    assert answer.error_class == "retry" and answer.error == "agent exited with status -9 before printing its result"
    assert answer.session_id == SESSION


def test_usage_limit_from_the_rate_limit_event():
    reset = 1795615980  # 2026-11-25T14:13:00Z
    line = api_error(429, "You've hit your session limit · resets 2:13pm (UTC)")
    answer = parse("builder", rate_limit_event(reset), line)
    assert (answer.error_class, answer.resets_at, answer.api_error_status) == ("usage_limit", reset, 429)
    assert answer.error == "usage limit; resets 2026-11-25T14:13:00Z"


def test_usage_limit_from_the_text_alone():
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc).timestamp()
    line = api_error(429, "You've hit your weekly limit · resets Nov 27, 9am (UTC)")
    answer = parse_agent_output("builder", json.dumps(line), 1)  # a plain agent printing the same object
    assert answer.error_class == "usage_limit"
    assert answer.resets_at == parse_reset_time(line["result"]) and answer.resets_at > now
    assert dt.datetime.fromtimestamp(answer.resets_at, dt.timezone.utc).strftime("%m-%d %H:%M") == "11-27 09:00"
    unknown = parse("builder", api_error(429, "You've hit your Opus limit"))
    assert (unknown.error_class, unknown.resets_at, unknown.error) == ("usage_limit", None,
                                                                      "usage limit; reset time unknown")


def test_a_rejected_event_that_is_not_a_usage_limit_is_a_rate_limit():
    reset = 1795615980
    line = api_error(429, "API Error: Server is temporarily limiting requests (not your usage limit) · Rate limited")
    answer = parse("builder", rate_limit_event(reset, kind=None), line)
    assert answer.error_class == "rate_limited" and answer.resets_at == reset
    assert answer.error == "API 429 rate limited (the server is temporarily limiting requests)"
    # an allowed event, or a rejected one in a run that succeeded, changes nothing
    good = result(structured_output={"verdict": "done", "summary": "ok"})
    assert parse("builder", rate_limit_event(reset, status="allowed"), good, exit_code=0).error is None
    assert parse("builder", rate_limit_event(reset), good, exit_code=0).error is None


# -- reset times ---------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 25, 12, 30, tzinfo=dt.timezone.utc).timestamp()  # 13:30 in Paris


@pytest.mark.parametrize("text, expected", [
    ("You've hit your session limit · resets 1:53pm (UTC)", "2026-11-25T13:53:00+00:00"),
    ("You've hit your session limit · resets 11am (UTC)", "2026-11-26T11:00:00+00:00"),  # passed today: tomorrow
    ("You've hit your session limit · resets 12:10pm (UTC)", "2026-11-25T12:10:00+00:00"),  # just passed: as is
    ("You've hit your session limit · resets 12am (UTC)", "2026-11-26T00:00:00+00:00"),
    ("You've hit your session limit · resets 11am (Europe/Paris)", "2026-11-26T10:00:00+00:00"),
    ("You've hit your session limit · resets 3pm (Europe/Paris)", "2026-11-25T14:00:00+00:00"),
    ("You've hit your weekly limit · resets Nov 27, 9am (UTC)", "2026-11-27T09:00:00+00:00"),
    ("You've hit your weekly limit · resets Jan 2, 9:30am (UTC)", "2027-01-02T09:30:00+00:00"),  # next year
    ("You've hit your weekly limit · resets Jul 1, 9am (Europe/Paris)", "2027-07-01T07:00:00+00:00"),
])
def test_reset_times(text, expected):
    assert dt.datetime.fromtimestamp(parse_reset_time(text, now=NOW), dt.timezone.utc).isoformat() == expected


@pytest.mark.parametrize("text", ["You've hit your session limit", "resets 13:53pm (UTC)", "resets 1pm (Mars/Olympus)",
                                  "resets Foo 3, 1pm (UTC)", "resets Feb 30, 1pm (UTC)", ""])
def test_unparseable_reset_times(text):
    assert parse_reset_time(text, now=NOW) is None


# -- denials --------------------------------------------------------------------------------------------

DENIALS = [
    {"tool_name": "Write", "tool_use_id": "toolu_1", "tool_input": {"file_path": f"{CWD}/src/a.py", "content": "x" * 999}},
    {"tool_name": "Bash", "tool_use_id": "toolu_2", "tool_input": {"command": "python3 -m pytest", "description": "run"}},
    {"tool_name": "Bash", "tool_use_id": "toolu_3", "tool_input": {"command": "python3 -m pytest", "description": "again"}},
    {"tool_name": "Edit", "tool_use_id": "toolu_4", "tool_input": {"file_path": "/elsewhere/b.py", "old_string": "a",
                                                                   "new_string": "b"}},
    {"tool_name": "WebFetch", "tool_use_id": "toolu_5", "tool_input": {"url": "https://example.com/" + "p" * 300}},
]


def test_a_denied_tool_is_never_a_pass():
    line = result(permission_denials=DENIALS, structured_output={"verdict": "done", "summary": "did it"},
                  total_cost_usd=0.01)
    answer = parse("builder", line, exit_code=0)
    assert answer.error_class == "denied" and answer.verdict == "done" and answer.summary == "did it"
    assert answer.denials[:4] == ({"tool": "Write", "input": "src/a.py"}, {"tool": "Bash", "input": "python3 -m pytest"},
                                  {"tool": "Edit", "input": "/elsewhere/b.py"},
                                  {"tool": "WebFetch", "input": answer.denials[3]["input"]})
    assert len(answer.denials) == 4 and len(answer.denials[3]["input"]) <= 121
    assert answer.denials[3]["input"].startswith('{"url": "https://example.com/ppp')
    assert answer.error.startswith("permission denied: Write(src/a.py), Bash(python3 -m pytest), Edit(/elsewhere/b.py), "
                                   "WebFetch(")
    # the same object from a plain agent: paths as printed (no init line to say the cwd)
    plain = parse_agent_output("builder", json.dumps(line), 0)
    assert plain.error_class == "denied" and plain.denials[0] == {"tool": "Write", "input": f"{CWD}/src/a.py"}
    # with no verdict either
    assert parse("builder", result(permission_denials=DENIALS[:1]), exit_code=0).error == \
        "permission denied: Write(src/a.py); and agent answer has no verdict (no structured_output and no fenced " \
        "```json block in result)"


# -- answers ------------------------------------------------------------------------------------------------

def test_answer_json_round_trip_and_default_class():
    answer = parse("builder", result(permission_denials=DENIALS[:2], structured_output={"verdict": "done", "summary": "x"},
                                     usage={**USAGE0, "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}),
                   exit_code=0)
    data = json.loads(json.dumps(answer.to_json()))
    assert data["denials"] == [{"tool": "Write", "input": "src/a.py"}, {"tool": "Bash", "input": "python3 -m pytest"}]
    assert AgentAnswer(**data) == answer and answer.tokens == 115
    assert AgentAnswer(error="agent timed out after 60s and was killed").error_class == "retry"
    assert AgentAnswer().error_class is None


@pytest.mark.parametrize("stdout, exit_code, error_class, error", [
    (json.dumps(api_error(529, "API Error: 529 Overloaded." + GATEWAY)), 1, "overloaded", "API 529 overloaded"),
    (json.dumps(result(subtype="error_max_turns", is_error=True, result=..., errors=["Reached maximum number of turns (7)"])),
     1, "max_turns", "reached --max-turns (7)"),
    (json.dumps(api_error(401, "Invalid API key · Fix external API key")), 1, "fatal", "invalid API key"),
    ("", 2, "retry", "agent exited with status 2 and printed nothing"),
])
def test_the_plain_parser_reads_the_same_fields(stdout, exit_code, error_class, error):
    answer = parse_agent_output("builder", stdout, exit_code)
    assert (answer.error_class, answer.error) == (error_class, error)


# -- the stream ---------------------------------------------------------------------------------------------

# Recorded from the real CLI 2.1.197 (init line shortened): a builder that reads README.md, then in one
# turn says a word, writes src/app.py and runs pytest (three lines, one message id), then gives its verdict.
RECORDED = r"""{"type":"system","subtype":"init","cwd":"/tmp/w","session_id":"00000000-0000-0000-0000-000000000001","tools":["Task","Bash","Edit","Read","StructuredOutput","Write"],"mcp_servers":[],"model":"claude-opus-4-8[1m]","permissionMode":"acceptEdits","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.197","output_style":"default","uuid":"3968c8fa-3096-4891-b4c3-5e3ef0f61b90","fast_mode_state":"off"}
{"type":"assistant","message":{"id":"msg_5991ade338694419a5ec4b06","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"toolu_efc6e191444e468ba08a3b9b","name":"Read","input":{"file_path":"/tmp/w/README.md"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1000,"output_tokens":1,"cache_creation_input_tokens":300,"cache_read_input_tokens":5000},"context_management":null},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"6990819c-3644-4a7e-931a-f218b31d3091","request_id":"req_db23e5da0ba94280a499f84c"}
{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"File does not exist. Note: your current working directory is /tmp/w.","is_error":true,"tool_use_id":"toolu_efc6e191444e468ba08a3b9b"}]},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"f7fb2e01-8d0a-46ca-90a2-26c3d4b24407","timestamp":"2026-11-25T13:30:55.340Z","tool_use_result":"Error: File does not exist. Note: your current working directory is /tmp/w."}
{"type":"assistant","message":{"id":"msg_7d77c0dcc6b64cb091757462","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"text","text":"Writing the app."}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1000,"output_tokens":1,"cache_creation_input_tokens":300,"cache_read_input_tokens":5000},"context_management":null},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"2bc64139-87e1-41fe-9b06-f2388032ad4e","request_id":"req_5ca5cd3a74374d4f8fefb4c3"}
{"type":"assistant","message":{"id":"msg_7d77c0dcc6b64cb091757462","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"toolu_ea9818efb5594ae7939285eb","name":"Write","input":{"file_path":"/tmp/w/src/app.py","content":"print(1)\n"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1000,"output_tokens":1,"cache_creation_input_tokens":300,"cache_read_input_tokens":5000},"context_management":null},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"de57f85b-019c-4dcc-b099-7c83952ea46e","request_id":"req_5ca5cd3a74374d4f8fefb4c3"}
{"type":"assistant","message":{"id":"msg_7d77c0dcc6b64cb091757462","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"toolu_0c63f74a21b74b9c866822de","name":"Bash","input":{"command":"python3 -m pytest -q","description":"run a command"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1000,"output_tokens":1,"cache_creation_input_tokens":300,"cache_read_input_tokens":5000},"context_management":null},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"6310b6ef-fafe-466b-8525-37e3f6bef07c","request_id":"req_5ca5cd3a74374d4f8fefb4c3"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_ea9818efb5594ae7939285eb","type":"tool_result","content":"File created successfully at: /tmp/w/src/app.py (file state is current in your context — no need to Read it back)"}]},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"63f89fb8-ea03-4ff8-8dc1-4606e5ed8c6f","timestamp":"2026-11-25T13:30:55.393Z","tool_use_result":{"type":"create","filePath":"/tmp/w/src/app.py","content":"print(1)\n","structuredPatch":[],"originalFile":null,"userModified":false}}
{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Exit code 5\n\nno tests ran in 0.62s","is_error":true,"tool_use_id":"toolu_0c63f74a21b74b9c866822de"}]},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"34ecf49e-ba3e-4230-b5c6-1dc866438cdc","timestamp":"2026-11-25T13:30:56.595Z","tool_use_result":"Error: Exit code 5\n\nno tests ran in 0.62s"}
{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"retry_delay_ms":523.285352366584,"error_status":529,"error":"overloaded","session_id":"00000000-0000-0000-0000-000000000001","uuid":"e9e98a82-5f63-499b-bc96-9753aea7c8a6"}
{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1795610000,"rateLimitType":"five_hour","isUsingOverage":false},"uuid":"7c6e4bd0-77bf-41bf-9854-eb86bee82376","session_id":"00000000-0000-0000-0000-000000000001"}
{"type":"assistant","message":{"id":"msg_f142da8e033d4e619dbb08fb","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"toolu_82fb66e7748a4622878b1960","name":"StructuredOutput","input":{"verdict":"done","summary":"wrote app"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1000,"output_tokens":1,"cache_creation_input_tokens":300,"cache_read_input_tokens":5000},"context_management":null},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"f025f7ed-6e6c-4f3f-a80a-00914d366f45","request_id":"req_019815ada4284f49a343480b"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_82fb66e7748a4622878b1960","type":"tool_result","content":"Structured output provided successfully"}]},"parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000001","uuid":"4c7de952-c0e7-41d7-b3c8-cead6daddf34","timestamp":"2026-11-25T13:30:56.617Z","tool_use_result":"Structured output provided successfully"}
{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":1399,"duration_api_ms":81,"ttft_ms":101,"ttft_stream_ms":95,"time_to_request_ms":83,"num_turns":5,"result":"{\"verdict\":\"done\",\"summary\":\"wrote app\"}","stop_reason":"tool_use","session_id":"00000000-0000-0000-0000-000000000001","total_cost_usd":0.043125000000000004,"usage":{"input_tokens":3000,"cache_creation_input_tokens":900,"cache_read_input_tokens":15000,"output_tokens":600,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{"claude-opus-4-8[1m]":{"inputTokens":3000,"outputTokens":600,"cacheReadInputTokens":15000,"cacheCreationInputTokens":900,"webSearchRequests":0,"costUSD":0.043125000000000004,"contextWindow":1000000,"maxOutputTokens":64000}},"permission_denials":[],"structured_output":{"verdict":"done","summary":"wrote app"},"terminal_reason":"completed","fast_mode_state":"off","uuid":"892a1e15-8249-4781-9c24-02529faf7cc7"}
"""

TURN_TOKENS = 1000 + 1 + 300 + 5000
TURN_COST = (1000 * 5 + 1 * 25 + 300 * 6.25 + 5000 * 0.5) / 1e6  # opus, usage as of message_start


@pytest.mark.parametrize("chunk", [1, 7, 333, 4096, 10**6])
def test_stream_reader_in_odd_sized_chunks(chunk):
    data = RECORDED.encode()
    lines = data.split(b"\n")[:-1]
    reader = StreamReader()
    after_line = []
    fed = 0
    for line in lines:
        piece = line + b"\n"
        for start in range(0, len(piece), chunk):
            reader.feed(piece[start:start + chunk])
        fed += len(piece)
        after_line.append(dict(reader.progress))
    assert fed == len(data)
    assert reader.session_id == "00000000-0000-0000-0000-000000000001" and reader.cwd == "/tmp/w"
    one = {"turns": 1, "tool": "Read: README.md", "tokens": TURN_TOKENS, "cost_usd": round(TURN_COST, 6)}
    assert after_line[0] == {"turns": 0, "tool": None, "tokens": 0, "cost_usd": 0.0}
    assert after_line[1] == after_line[2] == one
    two = {"turns": 2, "tool": "Read: README.md", "tokens": 2 * TURN_TOKENS, "cost_usd": round(2 * TURN_COST, 6)}
    assert after_line[3] == two  # a text block: a new turn, no tool
    assert after_line[4] == dict(two, tool="Write: src/app.py")  # same message id: not a new turn
    assert after_line[5] == after_line[6] == after_line[7] == dict(two, tool="Bash: python3 -m pytest -q")
    assert reader.api_retry == {"attempt": 1, "max_retries": 2, "retry_delay_ms": 523.285352366584,
                                "error_status": 529, "error": "overloaded"}
    assert reader.rate_limit is None  # "allowed" is ignored
    three = after_line[10]
    assert three["turns"] == 3 and three["tool"] == "StructuredOutput"
    assert reader.result is None or len(after_line) == 13
    # the result line: its exact totals
    assert after_line[12] == {"turns": 5, "tool": "StructuredOutput", "tokens": 3000 + 900 + 15000 + 600,
                              "cost_usd": 0.043125}
    assert reader.result["structured_output"] == {"verdict": "done", "summary": "wrote app"}
    assert reader.lines == 13


def test_stream_reader_partial_lines_and_a_rejected_rate_limit():
    reader = StreamReader()
    event = json.dumps(rate_limit_event(1795615980), separators=(",", ":")) + "\n"
    reader.feed(event[:20].encode())
    assert reader.rate_limit is None
    reader.feed(event[20:].encode() + b"not json at all\n\n[1,2]\n")
    assert reader.rate_limit == 1795615980 and reader.rate_limit_info["rateLimitType"] == "five_hour"
    synthetic = {"type": "assistant", "message": {"id": "69e7", "model": "<synthetic>", "usage": dict(USAGE0),
                                                  "content": [{"type": "text", "text": "You've hit your limit"}]},
                 "error": "rate_limit"}
    reader.feed((json.dumps(synthetic) + "\n").encode())
    assert reader.progress == {"turns": 0, "tool": None, "tokens": 0, "cost_usd": 0.0}
    # a final line without its newline: a result line is taken at once, anything else on flush()
    reader.feed(json.dumps(api_error(429, "You've hit your session limit · resets 2:13pm (UTC)"),
                           separators=(",", ":")).encode())
    assert reader.result is not None and reader.result["api_error_status"] == 429


def test_stream_reader_reads_a_growing_file_once(tmp_path, monkeypatch):
    path = tmp_path / "stdout"
    reader = StreamReader()
    assert reader.read_new(path) is False  # not there yet
    data = RECORDED.encode()
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(claude.json, "loads", lambda text, *a, **k: parsed.append(len(text)) or real_loads(text, *a, **k))
    with open(path, "wb") as out:
        for start in range(0, len(data), 500):
            out.write(data[start:start + 500])
            out.flush()
            reader.read_new(path)
            reader.read_new(path)  # nothing new: nothing read
    assert reader.offset == len(data) and reader.progress["turns"] == 5
    user_lines = RECORDED.count('{"type":"user"')
    assert len(parsed) == RECORDED.count("\n") - user_lines  # every other line parsed exactly once


def test_tool_summaries_and_cost_estimates():
    assert claude.tool_summary("Bash", {"command": "pytest -q"}) == "Bash: pytest -q"
    assert claude.tool_summary("Write", {"file_path": "/r/src/app.py"}, "/r") == "Write: src/app.py"
    assert claude.tool_summary("Grep", {"pattern": "x"}) == "Grep"
    long = claude.tool_summary("Bash", {"command": "echo " + "x" * 200})
    assert len(long) == 81 and long.endswith("…")
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "cache_creation_input_tokens": 1_000_000,
             "cache_read_input_tokens": 1_000_000}
    assert claude.estimate_cost("claude-opus-4-8", usage) == pytest.approx(5 + 25 + 6.25 + 0.5)
    assert claude.estimate_cost("claude-sonnet-5", usage) == pytest.approx(3 + 15 + 3.75 + 0.3)
    assert claude.estimate_cost("claude-haiku-4-5", usage) == pytest.approx(1 + 5 + 1.25 + 0.1)
    assert claude.estimate_cost("gpt-9", usage) == 0.0
    reader = StreamReader()
    line = {"type": "assistant", "message": {"id": "m1", "model": "mystery-model", "usage": usage, "content": []}}
    reader.feed((json.dumps(line) + "\n").encode())
    assert reader.progress == {"turns": 1, "tool": None, "tokens": 4_000_000, "cost_usd": 0.0}


def test_parse_reads_a_recorded_stream():
    answer = agent().parse("builder", RECORDED, 0, "")
    assert (answer.verdict, answer.summary, answer.error, answer.error_class) == ("done", "wrote app", None, None)
    assert (answer.num_turns, answer.cost_usd, answer.tokens) == (5, 0.043125000000000004, 19500)
    assert answer.session_id == "00000000-0000-0000-0000-000000000001"

