"""Codex as an agent kind (iwo_lite/agents/codex.py): argv per profile and on resume, owned flags,
the npm wrapper resolved to the native binary, errors into classes, reset times, prices, the
tool-call timeline. The real CLI's outputs these read are pinned in tests/test_codex_cli.py."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from iwo_lite.agents.base import Session
from iwo_lite.agents.codex import (SCHEMA_FILE, CodexAgent, classify, cost_of, native_binary, price_of,
                                   rollout_facts, shell_command, strip_owned, usage_reset, verdict_schema)
from iwo_lite.config import CODEX_PRICES, ConfigError, load_config
from iwo_lite.roles import ROLES, VERDICTS

PRICES = dict(CODEX_PRICES)


def agent(**kw) -> CodexAgent:
    return CodexAgent(command=kw.pop("command", ("codex",)), prices=PRICES, **kw)


def test_argv_per_profile_never_asks_and_gives_every_flag_again_on_resume(tmp_path):
    a = agent(permissions={"builder": "edit"}, extra_args={"builder": ("--add-dir", "/x")}, models={"builder": "o3"})
    argv = a.argv("builder", run_dir=tmp_path)
    assert argv == ["codex", "exec", "--json", "--skip-git-repo-check", "--output-schema", str(tmp_path / SCHEMA_FILE),
                    "-c", 'approval_policy="never"', "-s", "workspace-write", "--add-dir", "/x", "-m", "o3", "-"]
    resumed = a.argv("builder", session=Session(None, "t-1"), run_dir=tmp_path)
    assert resumed[:-3] == argv[:-1] and resumed[-3:] == ["resume", "t-1", "-"]
    assert agent().argv("reviewer")[-5:] == ["-c", 'approval_policy="never"', "-s", "read-only", "-"]
    assert "read-only" in agent().argv("reviewer") and "danger-full-access" in agent(
        permissions={"deployer": "full"}).argv("deployer")
    run = agent().argv("tester")
    assert "sandbox_workspace_write.network_access=true" in run and "workspace-write" in run
    assert agent(model="gpt-5-mini").argv("docs")[-3:] == ["-m", "gpt-5-mini", "-"]
    schema = json.loads(a.files("reviewer")[SCHEMA_FILE])
    assert schema == verdict_schema("reviewer") and schema["additionalProperties"] is False
    assert schema["required"] == ["verdict", "summary", "question"]
    assert all(verdict_schema(r)["properties"]["verdict"]["enum"] == list(VERDICTS[r]) for r in ROLES)


def test_owned_flags_are_stripped_and_the_npm_wrapper_is_resolved(tmp_path):
    assert strip_owned(["codex", "exec", "--json", "-s", "danger-full-access", "--sandbox=x", "-m", "o3",
                        "--output-schema", "f", "--dangerously-bypass-approvals-and-sandbox", "-c", "k=v"]) == (
        "codex", "-m", "o3", "-c", "k=v")
    package = tmp_path / "node_modules" / "@openai" / "codex"
    (package / "bin").mkdir(parents=True)
    wrapper = package / "bin" / "codex.js"
    wrapper.write_text("#!/usr/bin/env node\n")
    native = tmp_path / "node_modules" / "@openai" / "codex-linux-x64" / "vendor" / "x86_64-unknown-linux-musl" / "bin"
    native.mkdir(parents=True)
    (native / "codex").write_text("")
    (native / "codex").chmod(0o755)
    link = tmp_path / "codex"
    link.symlink_to(wrapper)
    assert native_binary(str(link)) == str(native / "codex")
    assert agent(command=(str(link), "exec")).command == (str(native / "codex"),)
    assert native_binary("/usr/bin/true") == "/usr/bin/true"


@pytest.mark.parametrize("message, kind", [
    ("exceeded retry limit, last status: 429 Too Many Requests", "rate_limited"),
    ("You’ve hit your usage limit. Try again at 1:39 AM.", "usage_limit"),
    ("unexpected status 401 Unauthorized: Incorrect API key provided: sk-x", "fatal"),
    ("We’re currently experiencing high demand, which may cause temporary errors.", "overloaded"),
    ("unexpected status 404 Not Found: The model `gpt-9` does not exist", "fatal"),
    ("stream disconnected before completion: idle timeout waiting for SSE", "retry"),
])
def test_failures_into_classes(message, kind):
    assert classify(message)[0] == kind


def test_usage_reset_times():
    now = dt.datetime(2026, 12, 5, 0, 39, tzinfo=dt.timezone.utc).timestamp()
    local = dt.datetime.fromtimestamp(now).astimezone()
    at = usage_reset("You’ve hit your usage limit. Try again at 1:39 AM.", now)
    expected = local.replace(hour=1, minute=39, second=0)
    if expected.timestamp() + 60 < now:
        expected += dt.timedelta(days=1)
    assert at == expected.timestamp() + 60  # the end of the minute Codex names (it cuts seconds off)
    assert usage_reset("Try again in 2 hours 5 minutes", now) == now + 7500
    assert usage_reset("Try again at Dec 9th, 2026 3:05 PM.", now) == dt.datetime(
        2026, 12, 9, 15, 5, tzinfo=local.tzinfo).timestamp() + 60
    assert usage_reset("no time here", now) is None


def test_prices_longest_prefix_then_star():
    assert price_of("gpt-5.5", PRICES) == PRICES["gpt-5"] and price_of("gpt-5-mini-2026", PRICES) == PRICES["gpt-5-mini"]
    assert price_of("some-new-model", PRICES) == PRICES["*"] and price_of(None, PRICES) == PRICES["*"]
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 600_000, "output_tokens": 100_000}
    assert cost_of(usage, "gpt-5", PRICES) == pytest.approx(0.4 * 1.25 + 0.6 * 0.125 + 0.1 * 10)
    assert cost_of({"input_tokens": -5, "output_tokens": "x"}, "gpt-5", PRICES) == 0


def test_price_table_in_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[agents.codex]\nmodel = "o3"\nprices = { "o3" = [1, 0.5, 4], "*" = [2, 1, 8] }\n')
    config = load_config(tmp_path, path, environ={"HOME": str(tmp_path)})
    assert dict(config.agents.codex.prices) == {"o3": (1.0, 0.5, 4.0), "*": (2.0, 1.0, 8.0)}
    for bad, key in (('{ "o3" = [1, 2] }', "agents.codex.prices.o3"), ('{ "o3" = [1, -2, 3] }', "agents.codex.prices.o3[1]"),
                     ('{ "a b" = [1, true, 3] }', 'agents.codex.prices."a b"[1]'), ("3", "agents.codex.prices")):
        path.write_text(f"[agents.codex]\nprices = {bad}\n")
        with pytest.raises(ConfigError) as raised:
            load_config(tmp_path, path, environ={})
        assert raised.value.key == key


def test_tool_events_and_shell_unwrapping():
    out = "\n".join(json.dumps(e) for e in [
        {"type": "thread.started", "thread_id": "t"},
        {"type": "item.started", "item": {"id": "i0", "type": "command_execution", "command": "/bin/bash -lc ls",
                                          "status": "in_progress"}},
        {"type": "item.completed", "item": {"id": "i0", "type": "command_execution", "command": "/bin/bash -lc ls",
                                            "aggregated_output": "a\nb\n", "exit_code": 0, "status": "completed"}},
        {"type": "item.completed", "item": {"id": "i1", "type": "command_execution", "command": "/bin/bash -lc 'false'",
                                            "aggregated_output": "", "exit_code": 1, "status": "failed"}},
        {"type": "item.started", "item": {"id": "i2", "type": "command_execution", "command": "/bin/bash -lc 'x' ",
                                          "status": "in_progress"}},
        {"type": "item.completed", "item": {"id": "i3", "type": "file_change", "changes": [{"path": "a.py"}],
                                            "status": "completed"}},
    ])
    events = agent().tool_events(out)
    assert [(e.seq, e.tool, e.input, e.status) for e in events] == [
        (1, "exec_command", "ls", "ok"), (2, "exec_command", "false", "failed"), (3, "exec_command", "x", "running"),
        (4, "file_change", "a.py", "ok")]
    assert events[0].result == "a b" and events[0].to_json()["seq"] == 1
    assert shell_command("/bin/bash -lc \"echo 'a b'\"") == "echo 'a b'" and shell_command("ls -l") == "ls -l"


def test_parse_failures_without_events_and_the_rollout_facts(tmp_path):
    a = agent()
    gone = a.parse("builder", "", 1, "Error: thread/resume: thread/resume failed: no rollout found for thread id "
                   "abc-123 (code -32600)", env={"CODEX_HOME": str(tmp_path)})
    assert gone.error_class == "no_session" and "abc-123" in gone.error
    cut = a.parse("builder", json.dumps({"type": "thread.started", "thread_id": "t-9"}) + "\n", None, "",
                  env={"CODEX_HOME": str(tmp_path)})
    assert cut.error_class == "retry" and cut.session_id == "t-9"
    rollout = tmp_path / "r.jsonl"
    rollout.write_text("\n".join(json.dumps(r) for r in [
        {"type": "event_msg", "payload": {"type": "task_started"}},
        {"type": "response_item", "payload": {"type": "function_call", "call_id": "c1", "arguments": '{"cmd": "touch a"}'}},
        {"type": "response_item", "payload": {"type": "function_call_output", "call_id": "c1",
                                              "output": "touch: cannot touch 'a': Read-only file system"}},
        {"type": "token_usage_record", "payload": {"usage": {"input_tokens": 7, "output_tokens": 1}}},
        {"type": "event_msg", "payload": {"type": "task_started"}},
        {"type": "turn_context", "payload": {"model": "gpt-5.5"}},
        {"type": "token_usage_record", "payload": {"usage": {"input_tokens": 100, "cached_input_tokens": 40,
                                                             "output_tokens": 20}}},
        {"type": "response_item", "payload": {"type": "function_call", "call_id": "c2", "arguments": '{"cmd": "touch b"}'}},
        {"type": "response_item", "payload": {"type": "function_call_output", "call_id": "c2",
                                              "output": "touch: cannot touch 'b': Read-only file system"}},
    ]) + "\n")
    facts = rollout_facts(rollout, 1)  # only this run's turn: the earlier attempt's denial is not counted again
    assert facts["model"] == "gpt-5.5" and [d["command"] for d in facts["denied"]] == ["touch b"]
    assert facts["usage"] == {"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 20}  # this run's only
    assert [d["command"] for d in rollout_facts(rollout, 2)["denied"]] == ["touch a", "touch b"]


def test_writable_state_and_the_tmpdir_check(tmp_path, monkeypatch):
    assert agent().writable_state({"HOME": "/h"}) == ["/h/.codex"]
    assert agent().writable_state({"HOME": "/h", "CODEX_HOME": "/c"}) == ["/c"]
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    checks = agent(command=("/nonexistent/codex",)).checks(None, ["builder"])
    assert checks[0][0] is False and any(not ok and "lies under $TMPDIR" in what for ok, what, _ in checks)
    assert "roles.builder" in agent().refused(None, ["builder"])  # `run` refuses to start so
    assert agent(permissions={"deployer": "full"}).refused(None, ["deployer"]) is None  # no sandbox, no helper
    monkeypatch.setenv("CODEX_HOME", str(Path(os.sep) / "srv" / "codex"))
    assert all("TMPDIR" not in what for _, what, _ in agent().checks(None, ["builder"]))
