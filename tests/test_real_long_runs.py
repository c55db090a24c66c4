"""Long agent runs with the real Claude Code CLI: live progress, the stall watchdog, a usage limit
that waits for its reset, and a reboot that resumes the interrupted session instead of paying for
it again — through the REAL daemon and CLI, the REAL `claude` binary (pinned 2.1.197) and
tests/fake_anthropic.py as the Messages API (a process of its own: its request log survives
every kill). Homes as in tests/test_real_agents.py (conftest.RealClaudeHome).

Needs the CLI (`eval "$(bash .ci/claude.sh)"`, or IWO_TEST_CLAUDE); skipped without it, except
under CI=true where it fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import zlib

import fake_anthropic as fa
from conftest import (
    PASSING,
    RealClaudeHome,
    kill_all_at_once,
    loop_rules,
    processes,
    wait_for,
)

from iwo_lite.times import parse_utc


def done(home: RealClaudeHome, spec_id: str, timeout: float = 120) -> dict:
    home.wait_state(spec_id, "done", "waiting", "failed", "rejected", timeout=timeout)
    spec = home.spec(spec_id)
    assert spec["state"] == "done", f"{spec}\n{home.daemon_logs()}"
    return spec


def session_of(request: dict) -> str | None:
    return request["headers"].get("x-claude-code-session-id")


def tool_result_texts(request: dict) -> list[str]:
    return [str(block.get("content")) for block in fa.tool_results(request["body"])]


def verdict(role: str) -> dict:
    return fa.structured_output({"verdict": PASSING[role], "summary": f"the {role} did its job"})


# -- 8. progress while a multi-turn run is mid-way -----------------------------------------------------------------

def test_progress_is_visible_while_a_multi_turn_run_is_mid_way(real_home):
    home = real_home()
    usage = {"input_tokens": 5000, "output_tokens": 300}
    home.script(loop_rules({"builder": [
        {"role": "builder", "turn": 0, "tool_uses": [fa.bash("sleep 2")], "usage": usage},
        {"role": "builder", "turn": 1, "delay": 4, "tool_uses": [fa.bash("echo second")], "usage": usage},
        {"role": "builder", "turn": 2, "delay": 4, "tool_uses": [verdict("builder")], "usage": usage},
    ]}))
    spec_id = home.submit(spec_id="progress")
    home.start()
    seen: list[dict] = []  # each distinct progress of the builder's run, as `status --json` showed it
    shown: list[str] = []  # the "now:" line of `status ID`
    end = time.time() + 90
    while time.time() < end:
        spec = home.specs()[0]
        if spec["state"] not in ("queued", "running") or spec["role"] not in (None, "planner", "builder"):
            break
        if spec["role"] == "builder" and spec["progress"] and spec["progress"] not in seen:
            seen.append(spec["progress"])
        if spec["role"] == "builder" and spec["progress"] and spec["progress"]["turns"]:
            shown += [line.strip() for line in home.trace(spec_id).splitlines() if line.startswith("now:")]
    done(home, spec_id)
    print("progress seen:", json.dumps(seen))
    assert seen and all(set(p) == {"turns", "tool", "tokens", "cost_usd", "last_event_at"} for p in seen)
    turns = [p["turns"] for p in seen]
    assert turns == sorted(turns) and {1, 2} <= set(turns), seen  # it moved, mid-way, turn by turn
    assert "Bash: sleep 2" in [p["tool"] for p in seen] and "Bash: echo second" in [p["tool"] for p in seen]
    by_turn = {p["turns"]: p for p in seen}
    assert 5000 <= by_turn[1]["tokens"] < by_turn[2]["tokens"]  # as of each message's start: estimates
    assert 0 < by_turn[1]["cost_usd"] < by_turn[2]["cost_usd"]
    stamps = [parse_utc(p["last_event_at"]) for p in seen]
    assert stamps == sorted(stamps) and len(set(stamps)) >= 2 and abs(stamps[-1] - time.time()) < 120
    assert any(line.startswith("now: Bash: sleep 2 · 1 turns · 5k tok") for line in shown), shown
    assert any(line.startswith("now: Bash: echo second · 2 turns") for line in shown), shown
    # once finished, the attempt keeps its last progress: the result's exact totals
    (attempt,) = home.attempts(spec_id, 2)
    assert attempt["progress"]["turns"] == attempt["num_turns"] == 4 and attempt["progress"]["tool"] == "StructuredOutput"
    assert home.specs()[0]["progress"] is None  # not running: no progress in the table


# -- 9. a hang after the first turn: the stall watchdog ----------------------------------------------------------------

def test_a_hang_after_the_first_turn_is_killed_as_stalled_and_resumed(real_home):
    home = real_home(agent='stall_timeout = "5s"\n')
    home.script(loop_rules({"builder": [
        {"role": "builder", "turn": 0, "tool_uses": [fa.bash("echo first-turn")]},
        {"id": "hang", "role": "builder", "turn": 1, "hang": "start", "times": 1},
        {"role": "builder", "min_turn": 1, "tool_uses": [verdict("builder")]},  # resumed: turn 2 (CLI's note)
    ]}))
    spec_id = home.submit(spec_id="stall")
    home.start()
    spec = done(home, spec_id)
    first, second = home.attempts(spec_id, 2)
    assert first["error_class"] == "stalled" and first["error"] == "stalled: no output for 5s; killed"
    assert second["error"] is None and second["verdict"] == "done"
    assert second["resumed_from"] == first["session_id"] and second["session_id"] != first["session_id"]
    trace = home.trace(spec_id)
    assert "stalled" in trace and f"resumed session {first['session_id'][:8]}" in trace
    # killed within stall_timeout + 10 s of its last output before the kill: the first turn's tool
    # result line (then it waited on the API, silent; what it prints once stopped comes after the kill)
    run = home.run_dir(spec_id, 2, "builder", 1)
    killed_at = run.joinpath("stalled").stat().st_mtime
    stamps = [parse_utc(json.loads(line)["timestamp"]) for line in run.joinpath("stdout").read_text().splitlines()
              if line.startswith('{"type":"user"') and '"timestamp"' in line]
    last_output = max(stamp for stamp in stamps if stamp < killed_at)
    delay = killed_at - last_output
    print(f"stall: killed {delay:.1f}s after its last output (stall_timeout 5s)")
    assert 5 <= delay <= 15
    assert processes(env=f"IWO_RUN_DIR={run}") == []
    # the resumed attempt carried the first turn: its tool_use and tool_result, not asked again
    builder = home.requests("builder")
    assert [(session_of(r), r["turn"], r["action"]) for r in builder[:2]] == [
        (first["session_id"], 0, "tool_use"), (first["session_id"], 1, "hang")]
    resumed = [r for r in builder if session_of(r) == second["session_id"]]
    assert len(resumed) == 1 and len(builder) == 3
    assert [b["input"]["command"] for b in fa.tool_uses_in(resumed[0]["body"])] == ["echo first-turn"]
    assert tool_result_texts(resumed[0]) == ["first-turn"]
    assert spec["gates"] == []


# -- 10. a usage limit waits for its reset ------------------------------------------------------------------------------

def spec_id_with_least_jitter(prefix: str) -> str:
    """A spec id whose pause after a usage limit is the shortest: the daemon waits until the reset
    plus 5 + crc32(id) % 55 seconds (spreading specs over a minute)."""
    return next(f"{prefix}-{n}" for n in range(1000) if zlib.crc32(f"{prefix}-{n}".encode()) % 55 == 0)


def test_a_usage_limit_pauses_until_its_reset_then_resumes_the_session(real_home):
    home = real_home(oauth=True)
    spec_id = spec_id_with_least_jitter("usage")
    reset = int(time.time()) + 8
    home.script([{"id": "limit", "role": "planner", "times": 1, **fa.usage_limit(reset)},
                 {"role": "planner", "tool_uses": [verdict("planner")]}] + loop_rules())
    home.submit(spec_id=spec_id)
    home.start()
    spec = wait_for(lambda: (s := home.spec(spec_id))["paused_until"] and s, 60,
                    lambda: f"never paused: {home.spec(spec_id)}\n{home.daemon_logs()}")
    assert (spec["state"], spec["pause_reason"], spec["gate_reason"], spec["question"]) == (
        "running", "usage limit", None, None)
    jitter = 5 + zlib.crc32(spec_id.encode()) % 55
    until = parse_utc(spec["paused_until"])
    print(f"usage limit: reset {dt.datetime.fromtimestamp(reset, dt.UTC):%H:%M:%S}, paused until "
          f"{spec['paused_until']} (reset + {until - reset:.1f}s)")
    assert abs(until - (reset + jitter)) < 0.01  # the reset from the CLI's rate_limit_event, plus the jitter
    (limited,) = home.attempts(spec_id, 1)
    assert limited["error_class"] == "usage_limit" and limited["error"].startswith("usage limit; resets ")
    assert len(home.requests()) == 1 and "authorization" in home.requests()[0]["headers"]  # OAuth, not retried
    spec = done(home, spec_id, timeout=until - time.time() + 90)
    first, second = home.attempts(spec_id, 1)
    assert second["resumed_from"] == first["session_id"] and second["error"] is None
    planner = home.requests("planner")
    assert len(planner) == 2 and planner[1]["time"] >= until  # nothing asked before the pause was over
    resumed = planner[1]
    assert session_of(resumed) == second["session_id"]
    # the resumed session holds the original prompt, then the continue prompt
    assert fa.first_user_text(resumed["body"]).count("You are the planner in a six-role coding loop (") == 1
    assert resumed["body"]["messages"][-1]["content"][-1]["text"].startswith(
        "You are the planner in a six-role coding loop; you were interrupted.")
    assert spec["gates"] == [] and spec["paused_until"] is None and spec["pause_reason"] is None
    assert [s["role"] for s in spec["steps"]] == list(PASSING)


# -- 11. a simulated reboot between two turns -------------------------------------------------------------------------

def test_a_reboot_between_two_turns_resumes_the_session(real_home):
    home = real_home()
    home.script(loop_rules({"builder": [
        {"role": "builder", "turn": 0, "tool_uses": [fa.bash("echo marker-zero")]},
        {"role": "builder", "turn": 1, "tool_uses": [fa.bash("echo marker-one")]},
        {"id": "hang", "role": "builder", "turn": 2, "hang": "start", "times": 1},
        {"role": "builder", "min_turn": 2, "tool_uses": [verdict("builder")]},
    ]}))
    spec_id = home.submit(spec_id="reboot")
    daemon = home.start()
    wait_for(lambda: any(r["role"] == "builder" and r["turn"] == 2 for r in home.requests()), 60,
             lambda: f"the builder's third request\n{home.daemon_logs()}")
    (running,) = home.attempts(spec_id, 2)
    session = running["session_id"]
    transcript = home.transcript(spec_id, session)
    wait_for(lambda: transcript.exists() and '"content":"marker-one"' in transcript.read_text(), 20,
             "turn 1's tool result in the session transcript")
    run = home.run_dir(spec_id, 2, "builder", 1)
    tree = processes(env=f"IWO_RUN_DIR={run}")  # the reaper wrapper, the CLI, anything under them
    assert len(tree) >= 2
    kill_all_at_once([daemon.pid] + tree)  # the machine goes down: nobody writes anything more
    daemon.proc.wait(timeout=10)
    # after a reboot not even a zombie is left: wait until init has reaped them (here ~1 s; a zombie
    # wrapper still looks alive to iwo-lite, see the report on journal.process_start_time)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in tree), 30, "the run's processes reaped")
    assert not run.joinpath("exit").exists()
    home.start()
    spec = done(home, spec_id)
    first, second = home.attempts(spec_id, 2)
    assert first["error_class"] == "interrupted" and "vanished without an exit status" in first["error"]
    assert second["resumed_from"] == session and second["verdict"] == "done"
    assert f"resumed session {session[:8]}" in home.trace(spec_id)
    builder = home.requests("builder")
    resumed = [r for r in builder if session_of(r) == second["session_id"]]
    assert len(resumed) == 1 and tool_result_texts(resumed[0]) == ["marker-zero", "marker-one"]
    # turns 0 and 1 were asked once, by the first attempt: not again from scratch
    assert [(r["turn"], session_of(r)) for r in builder if r["turn"] in (0, 1)] == [(0, session), (1, session)]
    assert len(builder) == 4
    assert sum(len(s["attempts"]) for s in spec["steps"]) == 7
