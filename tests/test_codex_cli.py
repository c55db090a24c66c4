"""What the REAL Codex CLI (pinned 0.169.0) does, against tests/fake_openai.py — and that
iwo_lite/agents/codex.py reads each of those outputs right. No daemon here: the binary is run
directly, as the dispatcher would run it (`CodexAgent.argv`), in a scratch git repository.

These pin the facts design.md ("Codex CLI, measured") and the codex agent rely on: the events
of a run, the schema request, a refused write that emits no event, the requests each failure
costs and its exit status, resume (same thread, flags given again), and which processes a
kill leaves. Needs the CLI (`eval "$(bash .ci/codex.sh)"`, or IWO_TEST_CODEX); skipped
without it, except under CI=true where it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import fake_openai as fo
from conftest import processes, wait_for
from iwo_lite.agents.base import Session
from iwo_lite.agents.codex import SCHEMA_FILE, CodexAgent
from iwo_lite.config import CODEX_PRICES
from iwo_lite.roles import VERDICTS
from real_codex import Run, new_codex_home, offline_env, remove_codex_home, require_codex, run_codex

VERDICT = {"verdict": "done", "summary": "did it", "question": ""}


@pytest.fixture
def cli(tmp_path):
    """(codex binary, fake API, CODEX_HOME factory, a git repository, a run helper)."""
    codex = require_codex()
    fake = fo.FakeOpenAI().start()
    homes: list[Path] = []
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)

    class Cli:
        binary = codex
        api = fake
        work = repo

        def __init__(self):
            self.home = self.new_home()

        def new_home(self, **provider) -> Path:
            homes.append(new_codex_home(fake.url, **provider))
            return homes[-1]

        def agent(self, role: str = "builder", profile: str | None = None) -> CodexAgent:
            return CodexAgent(command=(codex,), permissions={role: profile} if profile else {},
                              prices=dict(CODEX_PRICES))

        def run(self, role: str = "builder", *, profile: str | None = None, session: Session | None = None,
                home: Path | None = None, prompt: str | None = None, timeout: float = 120) -> Run:
            agent = self.agent(role, profile)
            run_dir = tmp_path / f"run-{time.monotonic_ns()}"
            run_dir.mkdir()
            for name, text in agent.files(role).items():
                run_dir.joinpath(name).write_text(text)
            argv = agent.argv(role, session=session, run_dir=run_dir)
            return run_codex(argv[0], argv[1:], env=self.env(home), cwd=repo, timeout=timeout,
                             prompt=prompt or agent.stdin(f"You are the {role} of this test.", role, session))

        def env(self, home: Path | None = None) -> dict[str, str]:
            return offline_env(home or self.home)

        def parse(self, run: Run, role: str = "builder", home: Path | None = None):
            return self.agent(role).parse(role, run.stdout, run.code, run.stderr[-2000:], env=self.env(home))

    yield Cli()
    fake.stop()
    for home in homes:
        remove_codex_home(home)


def test_a_run_prints_its_thread_items_and_tokens_and_sends_the_verdict_schema(cli):
    cli.api.script = {"rules": fo.verdict_flow("builder", VERDICT, steps=[fo.shell("echo made > made.txt; echo hi")],
                                               usage={"input_tokens": 1000, "cached_tokens": 400, "output_tokens": 50})}
    run = cli.run()
    assert run.code == 0, run
    assert [e["type"] for e in run.events] == ["thread.started", "turn.started", "item.started", "item.completed",
                                               "item.completed", "turn.completed"]
    command = run.events[3]["item"]
    assert command["type"] == "command_execution" and command["status"] == "completed" and command["exit_code"] == 0
    assert command["command"] == "/bin/bash -lc 'echo made > made.txt; echo hi'" and "hi" in command["aggregated_output"]
    assert json.loads(run.events[4]["item"]["text"]) == VERDICT
    usage = run.of("turn.completed")[0]["usage"]
    assert (usage["input_tokens"], usage["cached_input_tokens"], usage["output_tokens"]) == (2000, 800, 100)
    assert "cost" not in json.dumps(run.events)  # tokens only: the price table makes the cost
    assert run.stderr.strip() == ""  # with "-": not even "Reading prompt from stdin..."
    assert (cli.work / "made.txt").read_text() == "made\n"  # "run": workspace-write
    # the schema went as a strict json_schema text format; the prompt as a user message
    request = cli.api.responses_requests()[0]
    fmt = request["body"]["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True
    assert fmt["schema"]["properties"]["verdict"]["enum"] == list(VERDICTS["builder"]) and request["authorized"]
    assert "You are the builder of this test." in fo.user_text(request["body"])
    assert len(cli.api.responses_requests()) == 2  # one per model turn: nothing else is sent
    # what iwo-lite reads from it
    answer = cli.parse(run)
    assert (answer.verdict, answer.summary, answer.error, answer.session_id) == ("done", "did it", None, run.thread_id)
    assert answer.tokens == 2100 and answer.cost_usd == pytest.approx((1200 * 1.25 + 800 * 0.125 + 100 * 10) / 1e6)
    (event,) = cli.agent().tool_events(run.stdout)
    assert (event.seq, event.tool, event.input, event.status) == (1, "exec_command", "echo made > made.txt; echo hi", "ok")


def test_a_verdict_outside_the_schema_comes_back_unchecked_and_is_refused_by_us(cli):
    cli.api.script = {"default": {"text": json.dumps({"verdict": "ship it", "summary": "x", "question": ""})}}
    run = cli.run("reviewer")
    assert run.code == 0 and json.loads(run.of("item.completed")[-1]["item"]["text"])["verdict"] == "ship it"
    answer = cli.parse(run, "reviewer")
    assert answer.error_class == "retry" and "unknown verdict 'ship it' for reviewer" in answer.error
    cli.api.script = {"default": {"text": json.dumps({"verdict": "blocker", "summary": "x", "question": ""})}}
    assert cli.parse(cli.run("reviewer"), "reviewer").error == "verdict blocker without a question"


def test_a_write_refused_by_the_read_only_sandbox_emits_no_event_and_is_read_as_denied(cli):
    cli.api.script = {"rules": fo.verdict_flow("reviewer", {"verdict": "approve", "summary": "fine", "question": ""},
                                               steps=[fo.shell("touch denied.txt")])}
    run = cli.run("reviewer")  # reviewer: "read" -> -s read-only
    assert run.code == 0, run
    # mostly no event at all for the refused command; on a loaded machine (seen once in ten under load)
    # its item.started / item.completed do come, failed, with the refusal in the output
    commands = [e["item"] for e in run.of("item.completed") if e["item"]["type"] == "command_execution"]
    assert [e["type"] for e in run.events] in (
        ["thread.started", "turn.started", "item.completed", "turn.completed"],
        ["thread.started", "turn.started", "item.started", "item.completed", "item.completed", "turn.completed"]), run
    assert all(c["status"] == "failed" and "Read-only file system" in c["aggregated_output"] for c in commands)
    assert not (cli.work / "denied.txt").exists()
    # the model was told; only the thread's rollout file has the call
    output = fo.call_outputs(cli.api.responses_requests()[1]["body"])[0]["output"]
    assert "Read-only file system" in output and "exited with code 1" in output
    answer = cli.parse(run, "reviewer")
    assert answer.error_class == "denied" and answer.verdict == "approve"
    assert answer.denials == ({"tool": "exec_command", "input": "touch denied.txt"},)
    # a write inside a command that still exits 0 does show, with the refusal in its output
    cli.api.script = {"rules": fo.verdict_flow("reviewer", {"verdict": "approve", "summary": "fine", "question": ""},
                                               steps=[fo.shell("echo x > denied.txt; true")])}
    run = cli.run("reviewer")
    (event,) = cli.agent("reviewer").tool_events(run.stdout)
    assert event.status == "denied" and "Read-only file system" in event.result
    assert cli.parse(run, "reviewer").error_class == "denied"


FAILURES = {
    # name: (action, provider settings, requests, exit status, our error class)
    "429 without retry-after": (fo.error(429), {}, 1, 1, "rate_limited"),
    "429 with retry-after": (fo.error(429, headers={"retry-after": "0"}), {}, 6, 1, "rate_limited"),
    "usage limit": (fo.usage_limit(3600), {}, 1, 1, "usage_limit"),
    "401": (fo.error(401), {}, 6, 1, "fatal"),
    # a 500 costs 6 attempts x 5 HTTP tries = 30 requests (~25 s) with the default retries; the
    # provider's request_max_retries / stream_max_retries are what change it
    "500, no retries": (fo.error(500), {"request_max_retries": 0, "stream_max_retries": 0}, 1, 1, "overloaded"),
    "500, one retry each": (fo.error(500), {"request_max_retries": 1, "stream_max_retries": 1}, 4, 1, "overloaded"),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_requests_and_exit_status_per_failure(cli, name):
    action, provider, requests, code, error_class = FAILURES[name]
    if error_class == "usage_limit":
        action = fo.usage_limit(3600)  # its reset counted from now, not from when the module was read
    home = cli.new_home(**provider)
    cli.api.script = {"default": action}
    run = cli.run(home=home)
    count = len(cli.api.responses_requests())
    print(f"{name}: {count} requests, exit {run.code}, {run.seconds:.1f}s")
    assert (count, run.code) == (requests, code), run
    assert run.of("turn.failed") and run.stderr.strip() == ""
    assert all(e["type"] != "turn.completed" for e in run.events)
    answer = cli.parse(run, home=home)
    assert answer.error_class == error_class and answer.session_id == run.thread_id
    if error_class == "usage_limit":
        # "Try again at 1:39 AM." read back: the minute's end (Codex cuts the seconds), never before the reset
        assert 3600 - 5 <= answer.resets_at - time.time() <= 3600 + 65
        assert "hit your usage limit" in run.of("turn.failed")[0]["error"]["message"]


def test_resume_continues_the_same_thread_only_with_the_flags_given_again(cli):
    cli.api.script = {"rules": [{"match": "you were interrupted", "turn": [0, 1], "calls": [fo.shell("touch resumed.txt")]},
                                {"text": json.dumps(VERDICT)}]}
    first = cli.run("reviewer")  # read-only
    assert first.code == 0 and first.thread_id
    run = cli.run("builder", session=Session(None, first.thread_id))  # run: workspace-write, before `resume`
    assert run.code == 0 and run.thread_id == first.thread_id, run
    assert (cli.work / "resumed.txt").exists()  # the sandbox of this call, not the thread's first one
    resumed = cli.api.responses_requests()[-2]["body"]
    assert resumed["text"]["format"]["type"] == "json_schema"  # --output-schema given again, honoured
    texts = fo.user_text(resumed)
    assert "You are the reviewer of this test." in texts and "you were interrupted" in texts  # the history, then ours
    rollouts = list((cli.home / "sessions").glob(f"*/*/*/rollout-*-{first.thread_id}.jsonl"))
    assert len(rollouts) == 1  # one file per thread, appended to
    answer = cli.parse(run)
    assert answer.verdict == "done" and answer.session_id == first.thread_id
    # a thread that is not in this CODEX_HOME: stderr, exit 1, nothing on stdout, no request
    before = len(cli.api.responses_requests())
    gone = cli.run(session=Session(None, "01a243a4-9116-7271-b720-000000000000"), home=cli.new_home())
    assert gone.code == 1 and gone.stdout == "" and "no rollout found for thread id" in gone.stderr
    assert len(cli.api.responses_requests()) == before
    assert cli.parse(gone).error_class == "no_session"


def test_what_a_kill_leaves_and_a_server_that_never_answers(cli):
    marker = f"sleep 7{os.getpid() % 100:02d}.5"
    cli.api.script = {"rules": [{"turn": 0, "calls": [fo.shell(marker)]}, {"text": json.dumps(VERDICT)}]}
    agent = cli.agent()
    run_dir = cli.work.parent / "kill-run"
    run_dir.mkdir()
    run_dir.joinpath(SCHEMA_FILE).write_text(agent.files("builder")[SCHEMA_FILE])
    argv = agent.argv("builder", run_dir=run_dir)
    results = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=cli.env(), cwd=cli.work, start_new_session=True)
        proc.stdin.write(b"You are the builder.")
        proc.stdin.close()
        wait_for(lambda: processes(cmd=marker), 30, "the command")
        # the marker shows in bwrap's own command line as soon as it is forked, before it has armed
        # --die-with-parent (PR_SET_PDEATHSIG): a kill in that window leaves the command running (CI
        # met it twice). Killing a run that far into its command is what this test is about.
        time.sleep(1.0)
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=10)
        end = time.time() + 20  # on a loaded machine (the suite runs 4 workers) the nested sandbox takes a while
        while processes(cmd=marker) and time.time() < end:
            time.sleep(0.05)
        results[sig] = (code, processes(cmd=marker))
        for pid in results[sig][1]:
            os.kill(pid, signal.SIGKILL)
        cli.api.reset_counts()
    print({signal.Signals(s).name: r for s, r in results.items()})
    # the sandbox (bwrap --die-with-parent) takes the command down with codex, either way
    assert results[signal.SIGTERM][1] == [] and results[signal.SIGKILL] == (-signal.SIGKILL, [])
    # a server that never sends its headers: codex waits (its idle timeout does not cover it)
    cli.api.script = {"default": {"hang": "headers"}}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=cli.env(cli.new_home(stream_idle_timeout_ms=1000)), cwd=cli.work)
    proc.stdin.write(b"You are the builder.")
    proc.stdin.close()
    time.sleep(4)
    assert proc.poll() is None  # still waiting: only an outside timeout (agent.timeout) ends it
    proc.kill()
    proc.wait()


def test_a_codex_home_under_tmpdir_breaks_its_sandbox_without_a_word(cli, tmp_path):
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="codex-home-", dir=tempfile.gettempdir()))  # under $TMPDIR
    try:
        shutil.copy(cli.home / "config.toml", home / "config.toml")
        cli.api.script = {"rules": [{"turn": 0, "calls": [fo.shell("echo visible-output")]}, {"text": json.dumps(VERDICT)}]}
        run = cli.run("reviewer", home=home)
        assert run.code == 0 and not run.of("item.started")  # not a command event: the refusal is silent
        output = fo.call_outputs(cli.api.responses_requests()[-1]["body"])[0]["output"]
        assert "codex-linux-sandbox: No such file or directory" in output and "visible-output" not in output
    finally:
        shutil.rmtree(home, ignore_errors=True)
