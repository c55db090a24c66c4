"""Unattended with the real Codex CLI: the loop on Codex, a spec mixing Claude Code and Codex, and
each way a Codex call can fail — through the REAL daemon and CLI, the REAL `codex` binary (pinned
0.169.0; `[agents.codex] command`) and tests/fake_openai.py as the Responses API (a process of its
own, so its request log survives any kill). The Claude Code roles of the mixed spec run the real
`claude` against tests/fake_anthropic.py, as in tests/test_real_agents.py.

Each home: `workdir` a scratch git repository (each spec on branch iwo/<id> in its worktree), a
CODEX_HOME outside $TMPDIR (see tests/real_codex.py), the default permission profiles, and
agent.sandbox "auto" (where bubblewrap works, Codex's own sandbox runs nested in iwo-lite's). The fake is
scripted per role ("You are the <role>" in the prompt): a role runs its shell steps, then its final
message is its verdict as JSON.

Needs the CLI (`eval "$(bash .ci/codex.sh)"`); skipped without it, except under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_openai as fo
from conftest import PASSING, TESTS, RealClaudeHome, kill_all_at_once, loop_rules, processes, wait_for
from real_codex import new_codex_home, offline_env, remove_codex_home, require_codex


class CodexHome(RealClaudeHome):
    """A RealClaudeHome whose roles run on Codex (`codex_roles`; None = every role, through
    agent.kind) against a fake OpenAI API process of its own."""

    def __init__(self, root: Path, claude: str, codex: str, *, codex_roles: list[str] | None = None,
                 agent: str = "", extra: str = "", provider: dict | None = None):
        self.codex = codex
        self.codex_roles = codex_roles
        root.mkdir(parents=True, exist_ok=True)
        self.openai_script = root / "openai-script.json"
        self.openai_log = root / "openai-requests.jsonl"
        fo.write_script(self.openai_script, {"rules": []})
        url_file = root / "openai-url"
        with open(root / "openai.stderr", "wb") as stderr:
            self.openai = subprocess.Popen(
                [sys.executable, str(TESTS / "fake_openai.py"), "--port", "0", "--script", str(self.openai_script),
                 "--log", str(self.openai_log), "--url-file", str(url_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        self.openai_url = wait_for(lambda: url_file.exists() and url_file.read_text().strip(), 30, "the fake's URL")
        self.codex_home = new_codex_home(self.openai_url, **(provider or {}))
        super().__init__(root, claude, agent=agent, extra=extra)
        self.env = offline_env(self.codex_home, base=self.env)

    def configure(self, extra: str = "", **_) -> None:
        kinds = f'[agents.codex]\ncommand = {json.dumps([self.codex])}\n'
        if self.codex_roles is None:
            head = f'[agent]\nkind = "codex"\n{self.agent_lines}\n'
        else:
            head = f'[agent]\ncommand = {json.dumps([self.claude])}\n{self.agent_lines}\n'
            kinds += "".join(f'[roles.{role}]\nagent = "codex"\n' for role in self.codex_roles)
        self.root.joinpath("config.toml").write_text(f'workdir = "{self.repo}"\n{head}{kinds}{self.extra_lines}\n{extra}\n')

    def codex_script(self, rules: list[dict], default: dict | None = None) -> None:
        fo.write_script(self.openai_script, {"rules": rules, **({"default": default} if default else {})})

    def codex_requests(self, role: str | None = None) -> list[dict]:
        return [r for r in fo.read_log(self.openai_log) if r["path"].endswith("/responses")
                and (role is None or r["role"] == role)]

    def cleanup(self) -> None:
        super().cleanup()
        if self.openai.poll() is None:
            self.openai.terminate()
            self.openai.wait(timeout=10)
        remove_codex_home(self.codex_home)


def codex_loop(roles: dict[str, list[dict]] | None = None, usage: dict | None = None) -> list[dict]:
    """fake_openai rules for the loop: each role answers its passing verdict at once, unless
    `roles[role]` gives its own rules."""
    rules: list[dict] = []
    for role, verdict in PASSING.items():
        rules += (roles or {}).get(role) or fo.verdict_flow(
            role, {"verdict": verdict, "summary": f"the {role} did its job", "question": ""}, usage=usage)
    return rules


def verdict(role: str, summary: str = "done", **more) -> dict:
    return {"verdict": PASSING[role], "summary": summary, "question": "", **more}


@pytest.fixture
def codex_home(tmp_path):
    """Makes CodexHome(s): `claude=True` for a spec that also runs the real Claude Code CLI."""
    codex = require_codex()
    homes: list[CodexHome] = []

    def make(claude: bool = False, **options) -> CodexHome:
        if claude:
            from real_claude import require_claude

            options["claude"] = require_claude()
        home = CodexHome(tmp_path / f"h{len(homes)}", options.pop("claude", "claude"), codex, **options)
        homes.append(home)
        return home

    yield make
    for home in homes:
        home.cleanup()


def done(home: CodexHome, spec_id: str, timeout: float = 120) -> dict:
    home.wait_state(spec_id, "done", "waiting", "failed", "rejected", timeout=timeout)
    spec = home.spec(spec_id)
    assert spec["state"] == "done", f"{spec}\n{home.daemon_logs()}"
    return spec


def waiting(home: CodexHome, spec_id: str, timeout: float = 90) -> dict:
    home.wait_state(spec_id, "waiting", "done", "failed", "rejected", timeout=timeout)
    spec = home.spec(spec_id)
    assert spec["state"] == "waiting", f"{spec}\n{home.daemon_logs()}"
    return spec


# -- 1. the whole loop on Codex ---------------------------------------------------------------------------

def test_the_whole_loop_on_codex(codex_home):
    home = codex_home()
    spec_id = "codex-loop"
    tested = "python3 -B -c \"import sys; sys.path.insert(0, 'src'); import app; open('tested.txt', 'w').write(app.greet())\""
    home.codex_script(codex_loop({
        "builder": fo.verdict_flow("builder", verdict("builder", "wrote src/app.py"), steps=[
            fo.shell("mkdir -p src && printf 'def greet():\\n    return \"hello\"\\n' > src/app.py")]),
        "tester": fo.verdict_flow("tester", verdict("tester", "greet() says hello"), steps=[fo.shell(tested)]),
    }, usage={"input_tokens": 2000, "cached_tokens": 1000, "output_tokens": 100}))
    home.submit(spec_id=spec_id)
    home.start()
    spec = done(home, spec_id)
    assert [s["role"] for s in spec["steps"]] == list(PASSING)
    assert [s["agent"] for s in spec["steps"]] == ["codex"] * 6
    assert all(len(s["attempts"]) == 1 and not s["attempts"][0]["error"] for s in spec["steps"])
    assert home.on_branch(spec_id, "src/app.py") == 'def greet():\n    return "hello"\n'
    assert home.on_branch(spec_id, "tested.txt") == "hello"
    # every role's first request carries its prompt and its schema; tokens priced by [agents.codex] prices
    requests = home.codex_requests()
    for role in PASSING:
        first = next(r for r in requests if r["role"] == role)
        assert f"You are the {role} " in fo.user_text(first["body"])
        assert first["body"]["text"]["format"]["schema"]["properties"]["verdict"]["enum"][0] == PASSING[role]
    planner = spec["steps"][0]["attempts"][0]
    assert planner["cost_usd"] == pytest.approx((1000 * 1.25 + 1000 * 0.125 + 100 * 10) / 1e6)  # gpt-5.5: "gpt-5"
    assert planner["session_id"] and planner["agent"] == "codex"
    builder = spec["steps"][1]["attempts"][0]
    assert builder["cost_usd"] == pytest.approx(2 * (100 * 1.25 + 20 * 10) / 1e6)  # two model turns (the default usage)
    assert builder["progress"]["tool"].startswith("exec_command: mkdir -p src")
    assert builder["progress"]["cost_usd"] == pytest.approx(builder["cost_usd"])  # live: the configured model's price
    if shutil.which("bwrap"):  # agent.sandbox "auto": Codex's own bubblewrap nested in iwo-lite's
        assert home.run_dir(spec_id, 2, "builder", 1).joinpath("sandbox").exists()
    assert "codex" in home.trace(spec_id)


# -- 2. the builder on Claude Code, the reviewer on Codex ----------------------------------------------------

def test_a_spec_with_the_builder_on_claude_and_the_reviewer_on_codex(codex_home):
    import fake_anthropic as fa

    home = codex_home(claude=True, codex_roles=["reviewer"])
    spec_id = "mixed"
    home.script(loop_rules({"builder": fa.verdict_flow("builder", {"verdict": "done", "summary": "wrote app.py"},
                                                       steps=[fa.write(str(home.worktree(spec_id) / "app.py"), "x = 1\n")])}))
    home.codex_script(fo.verdict_flow("reviewer", {"verdict": "approve", "summary": "app.py looks right", "question": ""},
                                      steps=[fo.shell("cat app.py")]))
    home.submit(spec_id=spec_id)
    home.start()
    spec = done(home, spec_id)
    assert spec["agent"] == "claude"  # the latest dispatch's (docs); the list shows the same
    assert [(s["id"], s["agent"]) for s in home.specs()] == [(spec_id, "claude")]
    assert [(s["role"], s["agent"]) for s in spec["steps"]] == [
        ("planner", "claude"), ("builder", "claude"), ("reviewer", "codex"), ("tester", "claude"),
        ("deployer", "claude"), ("docs", "claude")]
    assert home.on_branch(spec_id, "app.py") == "x = 1\n"
    # the reviewer (Codex, read-only) read the builder's file in the same worktree, and saw its handoff
    reviewer = home.codex_requests("reviewer")
    assert len(reviewer) == 2 and "x = 1" in fo.call_outputs(reviewer[1]["body"])[0]["output"]
    assert "wrote app.py" in fo.user_text(reviewer[0]["body"])
    assert {r["role"] for r in home.requests()} == set(PASSING) - {"reviewer"}
    assert spec["steps"][2]["summary"] == "app.py looks right"


# -- 3. kill -9 of the daemon mid-run; a run killed with the machine resumes its thread ------------------------

def test_kill9_of_the_daemon_reattaches_and_a_killed_run_resumes_its_thread(codex_home):
    home = codex_home()
    sleep = f"sleep 3.{os.getpid() % 100:02d}"
    home.codex_script(codex_loop({
        "builder": fo.verdict_flow("builder", verdict("builder"), steps=[fo.shell(f"{sleep} && echo built > built.txt")]),
        "tester": [{"role": "tester", "turn": 0, "calls": [fo.shell("echo marker-zero")]},
                   {"id": "hang", "role": "tester", "turn": 1, "hang": "start", "times": 1},
                   {"role": "tester", "min_turn": 1, "text": json.dumps(verdict("tester"))}],
    }))
    spec_id = home.submit(spec_id="kill9")
    daemon = home.start()
    wait_for(lambda: processes(cmd=sleep), 60, "the builder's command")
    daemon.kill9()
    # the run goes on without the daemon (compared by its command: the tree's short-lived helpers come and go)
    assert processes(cmd=sleep) and home.agent_processes()
    daemon = home.start()
    # the tester: its second request hangs; then the machine goes down (daemon, wrapper, codex, all)
    wait_for(lambda: any(r["role"] == "tester" and r["turn"] == 1 for r in home.codex_requests()), 90,
             lambda: f"the tester's second request\n{home.daemon_logs()}")
    run = home.run_dir(spec_id, 4, "tester", 1)
    thread = json.loads(run.joinpath("stdout").read_text().splitlines()[0])["thread_id"]
    wait_for(lambda: home.attempts(spec_id, 4)[0]["session_id"] == thread, 10, "the thread recorded while it runs")
    tree = processes(env=f"IWO_RUN_DIR={run}")
    assert len(tree) >= 2
    kill_all_at_once([daemon.pid] + tree)
    daemon.proc.wait(timeout=10)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in tree), 30, "the run's processes reaped")
    home.start()
    spec = done(home, spec_id)
    (builder,) = home.attempts(spec_id, 2)
    assert builder["reattached"] and builder["verdict"] == "done" and home.on_branch(spec_id, "built.txt") == "built\n"
    first, second = home.attempts(spec_id, 4)
    assert first["error_class"] == "interrupted" and first["session_id"] == thread
    assert second["resumed_from"] == thread and second["session_id"] == thread and second["verdict"] == "pass"
    assert f"resumed session {thread[:8]}" in home.trace(spec_id)
    assert "resume" in run.parent.joinpath("attempt-2", "cmd").read_text() if run.parent.joinpath(
        "attempt-2", "cmd").exists() else True
    tester = home.codex_requests("tester")
    # turn 0 was asked once; the resumed thread sent its output back instead of running it again
    assert [r["turn"] for r in tester] == [0, 1, 1]
    assert "marker-zero" in fo.call_outputs(tester[-1]["body"])[0]["output"]
    assert "you were interrupted" in fo.user_text(tester[-1]["body"])
    per_role = {role: len(home.codex_requests(role)) for role in PASSING}
    assert per_role == {"planner": 1, "builder": 2, "reviewer": 1, "tester": 3, "deployer": 1, "docs": 1}


# -- 4. a write the read-only sandbox refused ----------------------------------------------------------------

def test_a_refused_write_opens_a_permission_denied_gate(codex_home):
    home = codex_home()
    home.codex_script(codex_loop({"reviewer": fo.verdict_flow(
        "reviewer", {"verdict": "approve", "summary": "fixed it myself", "question": ""},
        steps=[fo.shell("touch fixed.txt")])}))
    spec_id = home.submit(spec_id="denied")
    home.start()
    spec = waiting(home, spec_id)
    assert (spec["gate_reason"], spec["role"]) == ("permission_denied", "reviewer")
    assert "exec_command(touch fixed.txt)" in spec["question"] and "fixed it myself" in spec["question"]
    (attempt,) = home.attempts(spec_id, 3)
    assert attempt["error_class"] == "denied" and attempt["denials"] == [{"tool": "exec_command", "input": "touch fixed.txt"}]
    assert not (home.worktree(spec_id) / "fixed.txt").exists()
    assert home.codex_requests("tester") == []


# -- 5. a persistent 429, an invalid key ---------------------------------------------------------------------

def test_a_429_and_a_usage_limit_pause_and_an_invalid_key_opens_a_gate_at_once(codex_home):
    home = codex_home()
    home.codex_script([], default=fo.error(429))
    spec_id = home.submit(spec_id="limited")
    home.start()
    spec = wait_for(lambda: (s := home.specs()[0])["paused_until"] and s, 60,
                    lambda: f"never paused\n{home.daemon_logs()}")
    assert (spec["state"], spec["pause_reason"], spec["gate_reason"]) == ("running", "rate limited", None)
    count = len(home.codex_requests())
    assert count == 1  # codex does not retry a 429 without retry-after; iwo-lite pauses (no retry burned)
    time.sleep(2)
    assert len(home.codex_requests()) == count and home.spec(spec_id)["gates"] == []
    (attempt,) = home.attempts(spec_id, 1)
    assert attempt["error_class"] == "rate_limited"

    limited = codex_home()
    limited.codex_script([], default=fo.usage_limit(3600))
    spec_id = limited.submit(spec_id="usage-limit")
    asked = time.time()
    limited.start()
    spec = wait_for(lambda: (s := limited.specs()[0])["paused_until"] and s, 60,
                    lambda: f"never paused\n{limited.daemon_logs()}")
    from iwo_lite.times import parse_utc

    assert (spec["pause_reason"], spec["gate_reason"], len(limited.codex_requests())) == ("usage limit", None, 1)
    # "Try again at 2:05 AM." (the minute Codex names) + the spec's 5-60 s: about an hour from the call
    assert 3600 - 60 <= parse_utc(spec["paused_until"]) - asked <= 3600 + 120

    other = codex_home()
    other.codex_script([], default=fo.error(401))
    spec_id = other.submit(spec_id="bad-key")
    other.start()
    spec = waiting(other, spec_id, timeout=60)
    assert (spec["gate_reason"], spec["role"]) == ("agent_failed", "planner")
    assert "authentication failed" in spec["question"] and "Incorrect API key" in spec["question"]
    assert len(other.attempts(spec_id, 1)) == 1 and len(other.codex_requests()) == 6  # codex's own 6, no more


# -- 6. a budget cap ------------------------------------------------------------------------------------------

def test_a_budget_cap_stops_a_codex_spec(codex_home):
    home = codex_home(extra="[budget]\nper_spec_usd = 0.01\n")
    home.codex_script(codex_loop(usage={"input_tokens": 10000, "cached_tokens": 0, "output_tokens": 0}))
    spec_id = home.submit(spec_id="budget")
    home.start()
    spec = waiting(home, spec_id)
    assert spec["gate_reason"] == "budget"
    assert spec["cost_usd"] == pytest.approx(10000 * 1.25 / 1e6)  # the planner's call: past the $0.01 cap
    assert [s["role"] for s in spec["steps"]] == ["planner"] and home.codex_requests("builder") == []


# -- 7. a timeout and a cancel kill codex and its command -------------------------------------------------------

def test_a_timeout_and_a_cancel_kill_the_whole_codex_tree(codex_home):
    home = codex_home(agent='timeout = "4s"\nretries = 0\n')
    sleep = f"sleep 3{os.getpid() % 100:02d}.25"
    home.codex_script(codex_loop({"builder": [{"role": "builder", "calls": [fo.shell(f"trap '' TERM; {sleep}")]}]}))
    spec_id = home.submit(spec_id="timeout")
    home.start()
    wait_for(lambda: processes(cmd=sleep), 60, "the builder's sleep")
    spec = waiting(home, spec_id, timeout=60)
    assert (spec["gate_reason"], spec["role"]) == ("agent_failed", "builder")
    assert "agent timed out after 4s and was killed" in spec["question"]
    assert processes(cmd=sleep) == [] and home.agent_processes() == []
    # stopped means stopped: no API call after the kill began (SIGTERM, then the whole tree)
    killed_at = home.run_dir(spec_id, 2, "builder", 1).joinpath("timed_out").stat().st_mtime
    assert [r for r in home.codex_requests("builder") if r["time"] > killed_at] == []
    # `iwo-lite cancel` while a command runs: the same, at once
    other = f"sleep 4{os.getpid() % 100:02d}.5"
    home.codex_script(codex_loop({"builder": [{"role": "builder", "calls": [fo.shell(other)]}]}))
    spec_id = home.submit(spec_id="cancelled")
    wait_for(lambda: processes(cmd=other), 60, "the second builder's sleep")
    home.cli("cancel", spec_id, check=True)
    home.wait_state(spec_id, "cancelled", timeout=30)
    wait_for(lambda: not processes(cmd=other) and not home.agent_processes(), 15, "the cancelled run's processes gone")


# -- 8. a server that never answers: stalled, killed, the thread resumed ----------------------------------------

def test_a_hang_is_killed_as_stalled_and_the_thread_resumed(codex_home):
    home = codex_home(agent='stall_timeout = "3s"\n')
    home.codex_script(codex_loop({"planner": [
        {"role": "planner", "turn": 0, "calls": [fo.shell("echo first-turn")]},
        {"id": "hang", "role": "planner", "turn": 1, "hang": "headers", "times": 1},
        {"role": "planner", "min_turn": 1, "text": json.dumps(verdict("planner", "planned"))}]}))
    spec_id = home.submit(spec_id="stalled")
    home.start()
    spec = done(home, spec_id)
    first, second = home.attempts(spec_id, 1)
    assert first["error_class"] == "stalled" and "stalled" in first["error"]
    assert second["resumed_from"] == first["session_id"] == second["session_id"] and second["verdict"] == "done"
    planner = home.codex_requests("planner")
    assert [r["turn"] for r in planner] == [0, 1, 1]  # turn 0 not asked again: its output went back with the thread
    assert "first-turn" in fo.call_outputs(planner[-1]["body"])[0]["output"]
    assert spec["steps"][0]["summary"] == "planned"


def test_a_codex_call_is_stopped_when_its_cost_so_far_reaches_the_cap(codex_home):
    """Codex has no budget flag: its cost so far (the rollout's token counts x the price table) is
    watched while it runs, and the run is stopped when it reaches what the spec may still spend."""
    home = codex_home(extra="[budget]\nper_spec_usd = 0.01\n")
    sleep = f"sleep 6{os.getpid() % 100:02d}.5"
    home.codex_script(codex_loop({"planner": [
        {"role": "planner", "turn": 0, "calls": [fo.shell(sleep)], "usage": {"input_tokens": 10000, "output_tokens": 0}},
        {"role": "planner", "min_turn": 1, "text": json.dumps(verdict("planner"))}]}))
    spec_id = home.submit(spec_id="over-budget")
    started = time.time()
    home.start()
    spec = waiting(home, spec_id, timeout=60)
    assert spec["gate_reason"] == "budget" and time.time() - started < 30  # not after the 60 s command
    (attempt,) = home.attempts(spec_id, 1)
    assert attempt["error_class"] == "budget" and "reached what the spec may still spend" in attempt["error"], (attempt["progress"], attempt["error"], attempt["cost_usd"])
    assert attempt["progress"]["cost_usd"] == pytest.approx(10000 * 1.25 / 1e6)
    killed_at = home.run_dir(spec_id, 1, "planner", 1).joinpath("over_budget").stat().st_mtime
    assert [r for r in home.codex_requests("planner") if r["time"] > killed_at] == []  # SIGINT first: no more calls
    # what it was paid is counted (Codex had not printed its tokens yet: read from the rollout file), so
    # the cap holds: the budget gate asks before anything else runs
    assert attempt["cost_usd"] == pytest.approx(10000 * 1.25 / 1e6) and spec["cost_usd"] == attempt["cost_usd"]
    assert [s["role"] for s in spec["steps"]] == ["planner"] and [g["reason"] for g in spec["gates"]] == ["budget"]
    assert len(home.codex_requests("planner")) == 1 and processes(cmd=sleep) == []
