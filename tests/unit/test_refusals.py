"""agents/refusals.py: which tool results are writes the sandbox refused, and the path each names."""

from __future__ import annotations

import json

from iwo_lite.agents.answer import AgentAnswer
from iwo_lite.agents.events import ToolEvent
from iwo_lite.agents.refusals import find, is_refusal, judged, mark, refused_path

HIDDEN = ("/home/u/.ssh", "/home/u/.iwo-lite")
VISIBLE = ("/home/u/.iwo-lite/worktrees/s1",)


def test_the_path_each_kind_of_refusal_names():
    assert refused_path("/bin/bash: line 1: /repo/escaped.txt: Read-only file system") == "/repo/escaped.txt"
    assert refused_path("fatal: cannot lock ref 'refs/heads/main': Unable to create "
                        "'/repo/.git/refs/heads/main.lock': Read-only file system") == "/repo/.git/refs/heads/main.lock"
    assert refused_path("EROFS: read-only file system, open '/repo/a.py'") == "/repo/a.py"
    assert refused_path("cat: /home/u/.ssh/id_rsa: No such file or directory") == "/home/u/.ssh/id_rsa"
    assert refused_path("OSError: [Errno 30] Read-only file system: '/etc/x'") == "/etc/x"
    assert refused_path("all good") is None


def test_a_missing_file_is_a_refusal_only_under_a_hidden_path_outside_what_stays_visible():
    assert is_refusal("touch: cannot touch '/x': Read-only file system")
    assert is_refusal("bash: /etc/passwd: Permission denied")
    assert is_refusal("cat: /home/u/.ssh/id_rsa: No such file or directory", HIDDEN, VISIBLE)
    assert not is_refusal("cat: /home/u/.iwo-lite/worktrees/s1/missing.py: No such file or directory", HIDDEN, VISIBLE)
    assert not is_refusal("cat: /tmp/missing: No such file or directory", HIDDEN, VISIBLE)
    assert not is_refusal("3 passed in 0.1s", HIDDEN, VISIBLE)


def _stream(*results: tuple[str, str]) -> str:
    lines = []
    for n, (command, result) in enumerate(results):
        lines.append(json.dumps({"type": "assistant", "message": {"content": [
            {"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {"command": command}}]}}, separators=(",", ":")))
        lines.append(json.dumps({"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": f"t{n}", "content": result, "is_error": True}]}},
            separators=(",", ":")))
    return "\n".join(lines) + "\n"


def test_a_claimed_success_with_refused_writes_is_denied_and_names_the_path():
    stdout = _stream(("echo x > /repo/a", "/bin/bash: line 1: /repo/a: Read-only file system"),
                     ("ls", "a b c"))
    answer = judged(AgentAnswer(verdict="done"), stdout, [], HIDDEN, VISIBLE)
    assert answer.error_class == "denied" and "/repo/a (read-only)" in answer.error
    assert answer.denials == ({"tool": "Bash", "input": "/repo/a (read-only)", "path": "/repo/a"},)
    failed = AgentAnswer(error="boom", error_class="retry")
    assert judged(failed, stdout, [], HIDDEN) is failed  # a failure stays what it was
    clean = AgentAnswer(verdict="done")
    assert judged(clean, _stream(("ls", "a b c")), [], HIDDEN) is clean


def test_the_kinds_timeline_is_used_and_marked():
    events = [ToolEvent(1, None, "exec_command", "echo x > /repo/a", "failed", "/repo/a: Read-only file system"),
              ToolEvent(2, None, "exec_command", "ls", "ok", "a b")]
    assert [e.status for e in mark(events)] == ["denied", "ok"]
    assert find("", events) == [{"tool": "exec_command", "input": "/repo/a (read-only)", "path": "/repo/a"}]


def test_claude_code_s_timeline_marks_what_the_cli_or_the_sandbox_refused():
    from iwo_lite.agents.claude_events import tool_events

    stdout = _stream(("echo x > /repo/a", "/bin/bash: line 1: /repo/a: Read-only file system"),
                     ("python3 x.py", "Claude requested permissions to use Bash, but you haven't granted it yet."),
                     ("false", "Error: exit code 1"), ("ls", "a b c"))
    events = tool_events(stdout + json.dumps({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": "late", "name": "Bash", "input": {"command": "sleep 9"}}]}}, separators=(",", ":")))
    assert [(e.seq, e.tool, e.input, e.status) for e in events] == [
        (1, "Bash", "echo x > /repo/a", "denied"), (2, "Bash", "python3 x.py", "denied"),
        (3, "Bash", "false", "failed"), (4, "Bash", "ls", "failed"), (5, "Bash", "sleep 9", "running")]
    assert events[0].result == "/bin/bash: line 1: /repo/a: Read-only file system"
