"""Agent kinds chosen per role: the registry (agents/__init__.py), the interface every kind
implements (agents/base.py), `roles.<role>.agent` and `[agents.<kind>]` in the config."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from iwo_lite import agents
from iwo_lite.agents import base
from iwo_lite.agents.claude import ClaudeAgent
from iwo_lite.agents.plain import PlainAgent
from iwo_lite.config import AGENT_KINDS, ConfigError, load_config

MEMBERS = [name for name, _ in inspect.getmembers(base.Agent) if not name.startswith("_")] + [
    "name", "streams", "interrupt_first", "caps_budget"]


def load(tmp_path: Path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(tmp_path, path, environ={"HOME": str(tmp_path)})


def test_every_kind_in_the_config_has_a_module_and_implements_the_interface(tmp_path):
    assert set(agents.KINDS) == set(AGENT_KINDS)
    config = load(tmp_path, "")
    for kind in AGENT_KINDS:
        agent = agents.build(config, kind)
        assert agent.name == kind
        missing = [m for m in MEMBERS if not hasattr(agent, m)]
        assert missing == [], kind
        for name in MEMBERS:  # the methods take the Protocol's parameters
            proto, own = getattr(base.Agent, name, None), getattr(type(agent), name, None)
            if callable(proto) and callable(own):
                assert list(inspect.signature(proto).parameters) == list(inspect.signature(own).parameters), (kind, name)


def test_an_old_config_keeps_one_kind_for_every_role(tmp_path):
    config = load(tmp_path, '[agent]\ncommand = ["claude", "-p", "--output-format", "json"]\n')
    by_role = agents.for_roles(config)
    assert {type(a) for a in by_role.values()} == {ClaudeAgent} and len({id(a) for a in by_role.values()}) == 1
    assert agents.kinds_in_use(config) == {"claude": list(config.roles)}
    config = load(tmp_path, '[agent]\ncommand = ["./my-agent", "--x"]\n')
    assert {a.name for a in agents.for_roles(config).values()} == {"json"}
    assert agents.for_roles(config)["builder"].command == ("./my-agent", "--x")


def test_roles_choose_their_kind_and_each_kind_its_command(tmp_path):
    config = load(tmp_path, '[agent]\ncommand = ["/opt/bin/claude"]\n'
                            '[agents.json]\ncommand = ["./reviewer-agent"]\n'
                            '[roles.reviewer]\nagent = "json"\nmodel = "m1"\n'
                            '[roles.builder]\npermissions = "edit"\n')
    by_role = agents.for_roles(config)
    assert isinstance(by_role["reviewer"], PlainAgent) and by_role["reviewer"].command == ("./reviewer-agent",)
    assert by_role["reviewer"].argv("reviewer") == ["./reviewer-agent", "--model", "m1"]
    claude = by_role["builder"]
    assert isinstance(claude, ClaudeAgent) and claude.command == ("/opt/bin/claude",) and claude.profile("builder") == "edit"
    assert by_role["planner"] is claude and "reviewer" not in claude.permissions
    assert agents.kinds_in_use(config) == {"claude": ["planner", "builder", "tester", "deployer", "docs"],
                                           "json": ["reviewer"]}
    # a kind that is not agent.kind and has no command of its own runs its own executable
    config = load(tmp_path, '[agent]\ncommand = ["./plain"]\n[roles.docs]\nagent = "claude"\n')
    assert agents.for_roles(config)["docs"].command == ("claude",)
    config = load(tmp_path, '[agent]\ncommand = ["./plain"]\n[agents.claude]\ncommand = ["/x/claude", "--add-dir", "/d"]\n'
                            '[roles.docs]\nagent = "claude"\n')
    assert agents.for_roles(config)["docs"].command == ("/x/claude", "--add-dir", "/d")
    # agent.kind = "codex" with agent.command left at claude's default runs codex, not claude
    config = load(tmp_path, '[agent]\nkind = "codex"\n')
    assert {a.name for a in agents.for_roles(config).values()} == {"codex"}
    assert agents.for_roles(config)["planner"].command == ("codex",)
    config = load(tmp_path, '[agent]\nkind = "codex"\ncommand = ["/opt/my-codex-wrapper"]\n')
    assert agents.for_roles(config)["planner"].command == ("/opt/my-codex-wrapper",)


@pytest.mark.parametrize("text, key", [
    ('[roles.reviewer]\nagent = "gpt"\n', "roles.reviewer.agent"),
    ('[roles.reviewer]\nagent = 3\n', "roles.reviewer.agent"),
    ('[agents.gemini]\ncommand = ["g"]\n', "agents.gemini"),
    ('[agents.claude]\ncommand = "claude"\n', "agents.claude.command"),
    ('[agents.claude]\ncomand = ["claude"]\n', "agents.claude.comand"),
    ('agents = 3\n', "agents"),
    ('[agents]\nclaude = 3\n', "agents.claude"),
])
def test_bad_agent_settings_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert raised.value.key == key and "\n" not in str(raised.value)


def test_agent_kind_checks_for_doctor_and_run(tmp_path):
    config = load(tmp_path, '[agent]\ncommand = ["claude"]\n[roles.reviewer]\nagent = "json"\n'
                            '[agents.json]\ncommand = ["/nonexistent/agent"]\n')
    reviewer = agents.for_roles(config)["reviewer"]
    checks = reviewer.checks(config, ["reviewer"])
    assert checks[0][0] is False and "/nonexistent/agent" in checks[0][1] and "json" in checks[0][1]
    assert reviewer.refused(config, ["reviewer"]) is None
    claude = agents.for_roles(config)["builder"]
    assert any("permissions: planner read, builder run" in what for _, what, _ in claude.checks(config, ["planner", "builder"]))


def test_writable_state_of_each_kind():
    env = {"HOME": "/h"}
    assert agents.module("json").PlainAgent(("x",), {}, {}).writable_state(env) == []
    assert ClaudeAgent(("claude",)).writable_state(env) == ["/h/.claude", "/h/.claude.json"]
    assert ClaudeAgent(("claude",)).writable_state(dict(env, CLAUDE_CONFIG_DIR="/c"))[0] == "/c"


def test_a_tail_reads_each_byte_once_and_a_line_only_with_its_newline(tmp_path):
    """agents/base.Tail, which both stream readers (Claude's stdout; Codex's stdout and rollout) use."""
    from iwo_lite.agents.base import Tail

    path, tail = tmp_path / "stdout", Tail()
    assert tail.lines(path) is None and tail.lines(tmp_path / "a-file" / "under-a-file") is None  # no file yet
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert tail.lines(path) == [b'{"a": 1}'] and tail.partial == b'{"b"'
    assert tail.lines(path) is None  # nothing new: nothing read again
    with path.open("ab") as handle:
        handle.write(b': 2}\n\n{"c": 3}\n')
    assert tail.lines(path) == [b'{"b": 2}', b"", b'{"c": 3}'] and tail.offset == path.stat().st_size
    with path.open("ab") as handle:
        handle.write(b"no newline yet")
    assert tail.lines(path) == [] and tail.appended(path) == b""
