"""`iwo-lite diff` and `iwo-lite logs`: what a spec changed and what its agent did, from the shell."""

from __future__ import annotations

import json
import sys

from conftest import wait_for
from test_worktrees import make_home

# a `claude` that prints Claude Code's stream-json: two tool calls (one fails), then its verdict
STREAM_AGENT = r'''#!PYTHON
import json, os, sys
sys.stdin.read()
role = os.environ["IWO_ROLE"]
verdict = {"reviewer": "approve", "tester": "pass"}.get(role, "done")
if role == "builder":
    open("feature.txt", "w").write("built\n")
lines = [
    {"type": "system", "subtype": "init", "session_id": "s", "tools": ["Bash"], "model": "m"},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                                   "input": {"command": "ls -la"}}]}},
    {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "feature.txt"}]}},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t2", "name": "Write",
                                                   "input": {"file_path": "/etc/passwd"}}]}},
    {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t2", "is_error": True,
                                              "content": "EACCES: permission denied, open '/etc/passwd'"}]}},
    {"type": "result", "subtype": "success", "is_error": False, "result": "ok", "session_id": "s",
     "total_cost_usd": 0.01, "num_turns": 2, "structured_output": {"verdict": verdict, "summary": f"{role} did it"}},
]
for line in lines:
    print(json.dumps(line, separators=(",", ":")), flush=True)  # as Claude Code prints it
'''


def test_diff_and_logs_of_a_spec(tmp_path):
    home, work = make_home(tmp_path, top='workspace = "worktree"')
    agent = tmp_path / "bin" / "claude"
    agent.parent.mkdir()
    agent.write_text(STREAM_AGENT.replace("#!PYTHON", "#!" + sys.executable))
    agent.chmod(0o755)
    config = (home.root / "config.toml").read_text()
    start = config.index("command = ")
    end = config.index("\n", start)
    (home.root / "config.toml").write_text(config[:start] + f"command = {json.dumps([str(agent)])}" + config[end:])
    try:
        home.submit(home.spec_file("see.md", "# See it\nbody\n"), "see")
        home.start()
        assert home.wait_state("see", "done", "failed", "waiting") == "done", home.spec("see")
        whole = home.cli("diff", "see", check=True).stdout
        assert "+++ b/feature.txt" in whole and "+built" in whole
        assert "feature.txt" in home.cli("diff", "see", "--stat", check=True).stdout
        builder = home.cli("diff", "see", "--dispatch", "2", check=True).stdout
        assert "+built" in builder
        assert "made no commit" in home.cli("diff", "see", "--dispatch", "1", check=True).stdout
        assert home.cli("diff", "see", "--dispatch", "9").returncode == 2
        home.cli("clean", "see", check=True)  # the worktree goes, the branch stays: the diff still shows
        assert home.cli("diff", "see", check=True).stdout == whole
        logs = home.cli("logs", "see", check=True).stdout.splitlines()
        assert len(logs) == 2 and "Bash: ls -la" in logs[0] and "FAILED" not in logs[0]
        assert "Write" in logs[1] and ("FAILED" in logs[1] or "DENIED" in logs[1]), logs
        assert home.cli("logs", "see", "--follow", check=True).stdout.splitlines() == logs  # it has ended
        missing = home.cli("diff", "nope")
        assert missing.returncode == 2 and "nope: no such spec" in missing.stderr
    finally:
        home.cleanup()


def test_diff_in_shared_mode_says_what_it_can_show(home):
    home.submit(home.spec_file("s.md", "# Shared\nbody\n"), "shared")
    home.start()
    home.wait_state("shared", "done")
    out = home.cli("diff", "shared", check=True)
    assert "shared workdir" in out.stdout and "no branch of its own" in out.stdout
    for dispatch in ("9", "0", "-1"):  # a dispatch that is not there is the id at fault, in either workspace
        wrong = home.cli("diff", "shared", "--dispatch", dispatch)
        assert wrong.returncode == 2 and "no such dispatch" in wrong.stderr, (dispatch, wrong.stdout, wrong.stderr)
    assert "shared workdir" in home.cli("diff", "shared", "--dispatch", "1", check=True).stdout
