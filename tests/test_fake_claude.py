"""Tests of the fake `claude` executable itself (tests/fake_claude.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_claude  # noqa: E402
from fake_claude import count_dispatches, read_log, write_scenario  # noqa: E402

LAST_JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.S)


def last_block(text: str) -> dict:
    return json.loads(LAST_JSON_BLOCK.findall(text)[-1])


@pytest.fixture
def fc(tmp_path):
    """Run the fake with a temp log/scenario; returns a helper object."""

    class FC:
        log = tmp_path / "calls.jsonl"
        scenario = tmp_path / "scenario.json"

        def env(self, role="reviewer", spec="S1", attempt="1", **extra):
            env = dict(os.environ)
            for k in list(env):
                if k.startswith(("FAKE_CLAUDE_", "IWO_")):
                    del env[k]
            env.update(
                IWO_ROLE=role, IWO_SPEC_ID=spec, IWO_WORKFLOW_ID=f"wf-{spec}",
                IWO_HANDOFF_DIR=str(tmp_path / "handoffs"), IWO_ATTEMPT=str(attempt),
                FAKE_CLAUDE_LOG=str(self.log),
            )
            if self.scenario.exists():
                env["FAKE_CLAUDE_SCENARIO"] = str(self.scenario)
            env.update(extra)
            return env

        def set(self, scenario):
            write_scenario(self.scenario, scenario)

        def run(self, prompt="do the thing", argv=(), timeout=10, **kw):
            return subprocess.run(
                fake_claude.command(*argv), input=prompt.encode(), capture_output=True,
                env=self.env(**kw), timeout=timeout, cwd=tmp_path,
            )

        def popen(self, prompt="x", **kw):
            p = subprocess.Popen(
                fake_claude.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=self.env(**kw), start_new_session=True,
            )
            p.stdin.write(prompt.encode())
            p.stdin.close()
            return p

        def wait_start(self, pid, timeout=5.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                for e in read_log(self.log):
                    if e["event"] == "start" and e["pid"] == pid:
                        return e
                time.sleep(0.01)
            raise AssertionError("no start line")

    return FC()


def verdict_of(proc) -> dict:
    res = json.loads(proc.stdout)
    return res.get("structured_output") or last_block(res["result"])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- defaults and the ok result

def test_no_scenario_default_verdicts(fc):
    expected = {"planner": "done", "builder": "done", "reviewer": "approve",
                "tester": "pass", "deployer": "done", "docs": "done"}
    for role, verdict in expected.items():
        p = fc.run(role=role)
        assert p.returncode == 0, p.stderr
        res = json.loads(p.stdout)
        assert res["type"] == "result" and res["subtype"] == "success"
        assert res["is_error"] is False
        assert res["total_cost_usd"] == 0.01
        assert res["num_turns"] == 3 and res["session_id"]
        assert set(res["usage"]) >= {"input_tokens", "output_tokens",
                                     "cache_read_input_tokens", "cache_creation_input_tokens"}
        blocks = LAST_JSON_BLOCK.findall(res["result"])
        assert json.loads(blocks[0])["verdict"] == "decoy"
        assert last_block(res["result"]) == {"verdict": verdict, "summary": f"fake {role} summary"}


def test_log_lines(fc):
    p = fc.run(prompt="héllo", argv=("--model", "opus"), role="builder", spec="S9", attempt="1")
    assert p.returncode == 0
    start, end = read_log(fc.log)
    raw = "héllo".encode()
    for e in (start, end):
        assert e["role"] == "builder" and e["spec"] == "S9" and e["workflow"] == "wf-S9"
        assert e["attempt"] == 1 and e["n"] == 1 and e["mode"] == "ok"
        assert e["argv"] == ["-p", "--output-format", "json", "--model", "opus"]
        assert e["prompt_sha"] == hashlib.sha256(raw).hexdigest()
        assert e["prompt_len"] == len(raw)
        assert e["cwd"] == str(fc.log.parent)
        assert "prompt" not in e
    assert start["event"] == "start" and end["event"] == "end" and end["exit"] == 0
    assert start["pid"] == end["pid"] and start["t"] <= end["t"]
    assert count_dispatches(fc.log) == 1
    assert count_dispatches(fc.log, role="builder", spec="S9") == 1
    assert count_dispatches(fc.log, role="tester") == 0


def test_log_prompt_opt_in(fc):
    fc.run(prompt="secret prompt", FAKE_CLAUDE_LOG_PROMPT="1")
    assert all(e["prompt"] == "secret prompt" for e in read_log(fc.log))


# ---------------------------------------------------------------- counting rule

def test_sequence_per_spec_and_role_with_last_repeating(fc):
    fc.set({"roles": {"reviewer": [{"verdict": "changes", "summary": "fix X"},
                                   {"verdict": "approve"}]}})
    got = [verdict_of(fc.run(spec="A"))["verdict"] for _ in range(3)]
    assert got == ["changes", "approve", "approve"]
    # another spec has its own counter; another role is unaffected
    assert verdict_of(fc.run(spec="B")) == {"verdict": "changes", "summary": "fix X"}
    assert verdict_of(fc.run(spec="A", role="tester"))["verdict"] == "pass"
    assert [e["n"] for e in read_log(fc.log) if e["event"] == "start"] == [1, 2, 3, 1, 1]


def test_retries_reuse_the_entry_and_attempts_override(fc):
    fc.set({"roles": {"reviewer": [
        {"attempts": {"1": {"mode": "garbage"}}, "verdict": "changes"},
        {"attempts": {"2": {"mode": "exit", "code": 5}}, "verdict": "approve"},
    ]}})
    p = fc.run(attempt=1)
    assert p.returncode == 0 and p.stdout == b"this is not json\n"
    p = fc.run(attempt=2)                      # retry of dispatch 1
    assert verdict_of(p)["verdict"] == "changes"
    p = fc.run(attempt=3)                      # still dispatch 1
    assert verdict_of(p)["verdict"] == "changes"
    p = fc.run(attempt=1)                      # dispatch 2
    assert verdict_of(p)["verdict"] == "approve"
    p = fc.run(attempt=2)
    assert p.returncode == 5 and p.stdout == b""
    starts = [(e["attempt"], e["n"], e["mode"]) for e in read_log(fc.log) if e["event"] == "start"]
    assert starts == [(1, 1, "garbage"), (2, 1, "ok"), (3, 1, "ok"), (1, 2, "ok"), (2, 2, "exit")]


def test_retry_first_counts_as_dispatch_one(fc):
    fc.set({"roles": {"tester": [{"verdict": "fail"}, {"verdict": "pass"}]}})
    assert verdict_of(fc.run(role="tester", attempt=2))["verdict"] == "fail"
    assert verdict_of(fc.run(role="tester", attempt=1))["verdict"] == "pass"


def test_state_dir_env_and_concurrent_counting(fc, tmp_path):
    state = tmp_path / "state"
    fc.set({"roles": {"builder": [{"summary": f"b{i}"} for i in range(1, 9)]}})
    with ThreadPoolExecutor(8) as ex:
        procs = list(ex.map(lambda _: fc.run(role="builder", FAKE_CLAUDE_STATE=str(state)),
                            range(8)))
    assert sorted(verdict_of(p)["summary"] for p in procs) == sorted(f"b{i}" for i in range(1, 9))
    log = read_log(fc.log)
    assert len(log) == 16
    assert sorted(e["n"] for e in log if e["event"] == "start") == list(range(1, 9))
    assert list(state.iterdir())  # counters went to FAKE_CLAUDE_STATE
    assert count_dispatches(fc.log, role="builder") == 8


def test_default_and_per_spec_overrides(fc):
    fc.set({"default": {"cost": 0.5},
            "roles": {"docs": [{"summary": "top"}]},
            "specs": {"X": {"default": {"cost": 0.25}, "roles": {"docs": [{"mode": "exit"}]}}}})
    p = fc.run(role="docs", spec="Y")
    assert json.loads(p.stdout)["total_cost_usd"] == 0.5 and verdict_of(p)["summary"] == "top"
    assert fc.run(role="docs", spec="X").returncode == 3


# ---------------------------------------------------------------- modes

def test_structured(fc):
    fc.set({"roles": {"reviewer": [{"mode": "structured", "verdict": "blocker"}]}})
    res = json.loads(fc.run().stdout)
    assert "```" not in res["result"]
    assert res["structured_output"] == {"verdict": "blocker", "summary": "fake reviewer summary",
                                        "question": "fake reviewer question?"}


def test_question_and_null_keys(fc):
    fc.set({"roles": {"deployer": [{"verdict": "blocker", "question": "ship on Friday?"},
                                   {"verdict": None, "summary": None}]}})
    assert verdict_of(fc.run(role="deployer"))["question"] == "ship on Friday?"
    assert verdict_of(fc.run(role="deployer")) == {}


@pytest.mark.parametrize("mode,code", [("is_error", 1), ("is_error_exit0", 0)])
def test_is_error(fc, mode, code):
    fc.set({"roles": {"reviewer": [{"mode": mode, "cost": 0}]}})
    p = fc.run()
    res = json.loads(p.stdout)
    assert p.returncode == code
    assert res["is_error"] is True and res["subtype"] == "success"
    assert res["result"] == "API Error: 529 overloaded" and res["total_cost_usd"] == 0
    assert read_log(fc.log)[-1]["exit"] == code


def test_max_turns(fc):
    fc.set({"roles": {"reviewer": [{"mode": "max_turns"}]}})
    p = fc.run()
    res = json.loads(p.stdout)
    assert p.returncode == 1
    assert res["subtype"] == "error_max_turns" and res["is_error"] is True
    assert res["errors"] == ["max turns reached"] and "result" not in res


def test_garbage_truncated_no_verdict_exit(fc):
    fc.set({"roles": {"reviewer": [{"mode": "garbage"}, {"mode": "truncated"},
                                   {"mode": "no_verdict"}, {"mode": "exit"},
                                   {"mode": "exit", "code": 0}]}})
    p = fc.run()
    assert (p.returncode, p.stdout) == (0, b"this is not json\n")
    p = fc.run()
    assert p.returncode == 0 and p.stdout.startswith(b'{"type": "result"')
    with pytest.raises(ValueError):
        json.loads(p.stdout)
    p = fc.run()
    res = json.loads(p.stdout)
    assert p.returncode == 0 and res["is_error"] is False and "```" not in res["result"]
    p = fc.run()
    assert (p.returncode, p.stdout) == (3, b"")
    p = fc.run()
    assert (p.returncode, p.stdout) == (0, b"")


def test_huge(fc):
    fc.set({"roles": {"reviewer": [{"mode": "huge", "bytes": 2_000_000, "verdict": "changes"}]}})
    p = fc.run()
    res = json.loads(p.stdout)
    assert len(res["result"]) > 2_000_000
    assert last_block(res["result"])["verdict"] == "changes"


def test_huge_default_size(fc):
    fc.set({"roles": {"reviewer": [{"mode": "huge"}]}})
    assert len(fc.run().stdout) > 5_000_000


def test_stderr_noise(fc):
    fc.set({"roles": {"tester": [{"mode": "stderr_noise", "verdict": "fail"}]}})
    p = fc.run(role="tester")
    assert p.returncode == 0 and p.stderr.count(b"\n") == 20_000 and len(p.stderr) > 1_000_000
    assert verdict_of(p)["verdict"] == "fail"


def test_sleep(fc):
    fc.set({"default": {"sleep": 0.3}})
    t0 = time.monotonic()
    p = fc.run()
    assert p.returncode == 0 and time.monotonic() - t0 >= 0.3
    assert json.loads(p.stdout)["duration_ms"] >= 300


def test_sleep_dies_on_sigterm(fc):
    fc.set({"default": {"sleep": 30}})
    p = fc.popen()
    fc.wait_start(p.pid)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=2) == -signal.SIGTERM and time.monotonic() - t0 < 1
    assert [e["event"] for e in read_log(fc.log)] == ["start"]


def test_hang(fc):
    fc.set({"roles": {"reviewer": [{"mode": "hang"}]}})
    p = fc.popen()
    fc.wait_start(p.pid)
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.3)
    p.terminate()
    assert p.wait(timeout=2) == -signal.SIGTERM


def test_spawn_child_killed_with_the_group(fc):
    fc.set({"roles": {"reviewer": [{"mode": "spawn_child"}]}})
    p = fc.popen()
    start = fc.wait_start(p.pid)
    child = start["child_pid"]
    assert alive(child) and os.getpgid(child) == os.getpgid(p.pid) == p.pid
    os.killpg(p.pid, signal.SIGKILL)
    assert p.wait(timeout=2) == -signal.SIGKILL
    end = time.monotonic() + 2
    while alive(child) and time.monotonic() < end:
        time.sleep(0.01)
    assert not alive(child)


def test_bad_scenario(fc):
    fc.scenario.write_text("{nope")
    p = fc.run()
    assert p.returncode == 97 and b"cannot read scenario" in p.stderr
    fc.set({"roles": {"reviewer": [{"mode": "bogus"}]}})
    p = fc.run()
    assert p.returncode == 97 and b"unknown mode" in p.stderr


def test_runs_as_executable_without_log(tmp_path):
    script = Path(fake_claude.__file__)
    assert os.access(script, os.X_OK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_CLAUDE_", "IWO_"))}
    env.update(IWO_ROLE="planner", IWO_SPEC_ID="exe", IWO_ATTEMPT="1",
               FAKE_CLAUDE_STATE=str(tmp_path))
    p = subprocess.run([str(script), "-p", "--output-format", "json"], input=b"plan",
                       capture_output=True, env=env, timeout=10)
    assert p.returncode == 0, p.stderr
    assert verdict_of(p)["verdict"] == "done"


def test_read_log_missing_and_partial(tmp_path):
    assert read_log(tmp_path / "none") == []
    f = tmp_path / "l"
    f.write_text('{"event": "start", "role": "a"}\n{"event": "st')
    assert read_log(f) == [{"event": "start", "role": "a"}]
    assert count_dispatches(f, role="a") == 1
