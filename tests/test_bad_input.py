"""Bad input of every kind, as a user (or a misbehaving agent, chat or process) gives it.

The contract under test: the CLI answers bad input with exit status 2 and ONE line on stderr
naming the file, key or id at fault, never a traceback; the daemon handles a bad spec or a bad
agent answer where it belongs (a human gate showing the error, or a refusal), leaves every
other spec alone, and loses nothing.

Kinds already covered elsewhere are not repeated here: missing / empty / binary / not-UTF-8 /
oversized / directory spec files and a bad --id (test_cli.py); garbage, truncated, no-verdict,
is_error, max_turns, empty-exit agent output, unknown verdict, blocker without question, a
timeout killing the process group, 3 MB stdout, stderr noise, a missing agent program
(test_agent_failures.py); strangers, forged answers, unknown gates and stale buttons on
Telegram (test_telegram.py); DELETE / UPDATE / DROP / syntax errors in status --sql and a
second daemon's exit status (test_cli.py, test_status.py); every config key's validation at
the unit level (test_config.py). Here each config kind is checked end to end through the CLI.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_ROLE_COUNTS, IwoHome, wait_for
import fake_claude

ROLE_ORDER = ("planner", "builder", "reviewer", "tester", "deployer", "docs")
HANDOFF_NAME = re.compile(r"^(\d\d)-(planner|builder|reviewer|tester|deployer|docs)\.md$")


def assert_one_line_error(proc: subprocess.CompletedProcess, *names: str) -> None:
    """Exit 2, exactly one line on stderr, naming every one of `names`, no traceback."""
    detail = f"exit {proc.returncode}; stderr:\n{proc.stderr}"
    assert proc.returncode == 2, detail
    assert "Traceback" not in proc.stderr, detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), detail
    for name in names:
        assert name in lines[0], f"{name!r} not named; {detail}"


def handoffs_intact(home: IwoHome, spec_id: str) -> list[str]:
    """The spec's handoff files: named NN-role.md, numbered 01..N without a gap, each parses."""
    folder = home.root / "specs" / spec_id / "handoffs"
    names = sorted(p.name for p in folder.glob("*.md")) if folder.exists() else []
    for number, name in enumerate(names, start=1):
        match = HANDOFF_NAME.match(name)
        assert match and int(match.group(1)) == number, (spec_id, names)
        text = (folder / name).read_text(encoding="utf-8")
        assert text.startswith(f"# {name[:-3]} — {spec_id}\n"), (name, text[:200])
        assert f"\n- role: {match.group(2)}\n" in text and "\n- verdict: " in text and "\n## Summary\n" in text
    leftovers = [p.name for p in folder.glob(".*")] if folder.exists() else []
    assert not leftovers, f"temp files left in {folder}: {leftovers}"
    return names


def log_since(daemon, offset: int) -> str:
    return daemon.log()[offset:]


# ================================================================================ config
# End to end: the same broken config makes `submit`, `status` and `run` each exit 2 with one
# line naming the file and the key, and nothing is created in the home.

CONFIG_CASES = {
    "toml_syntax_error": ('[agent\nretries = 1\n', "line 1"),
    "wrong_type": ('[agent]\nretries = "2"\n', "agent.retries"),
    "unknown_key_with_suggestion": ('[agent]\ntimout = "5s"\n', "did you mean 'timeout'?"),
    "negative_duration": ('[agent]\ntimeout = "-5m"\n', "agent.timeout"),
    "empty_agent_command": ("[agent]\ncommand = []\n", "agent.command"),
    "bad_dispatch": ('[agent]\ndispatch = "docker"\n', "agent.dispatch"),
    "bad_on_timeout": ('[approvals]\non_timeout = "maybe"\n', "approvals.on_timeout"),
    "bad_database_url": ('database_url = "mysql://u:hunter2@db/iwo"\n', "database_url"),
    "unknown_role_table": ('[roles.reviwer]\nmodel = "opus"\n', "did you mean 'reviewer'?"),
    "token_in_config": ('[telegram]\ntoken = "123456:SECRET-do-not-echo"\n', "telegram.token"),
    "duration_too_short": ('[agent]\ntimeout = "0.001s"\n', "agent.timeout"),
    "interval_too_short": ('[approvals]\nremind_every = "0.5s"\n', "approvals.remind_every"),
    "duration_too_long": ('[approvals]\ntimeout = "99999999d"\n', "approvals.timeout"),
    "output_cap_too_small": ('[agent]\nmax_output = 1\n', "agent.max_output"),
    "budget_absurd": ("[budget]\nper_spec_usd = 1e308\n", "budget.per_spec_usd"),
    "budget_negative": ("[budget]\ndaily_usd = -1\n", "budget.daily_usd"),
    "bad_sandbox": ('[agent]\nsandbox = "docker"\n', "agent.sandbox"),
    "relative_sandbox_path": ('[agent]\nsandbox_rw = ["build/cache"]\n', "agent.sandbox_rw[0]"),
    "sandbox_hide_not_a_list": ('[agent]\nsandbox_hide = "~/.secrets"\n', "agent.sandbox_hide"),
}


@pytest.mark.parametrize("kind", sorted(CONFIG_CASES))
def test_config_error_is_one_line_naming_file_and_key_for_every_command(home, kind):
    text, key = CONFIG_CASES[kind]
    config = home.root / "config.toml"
    config.write_text(text)
    spec = home.spec_file()
    for args in (("submit", str(spec)), ("status",), ("status", "--json"), ("run",), ("approve", "some-id")):
        out = home.cli(*args, timeout=60)
        assert_one_line_error(out, str(config), key)
        assert "hunter2" not in out.stderr and "SECRET" not in out.stderr
    assert not (home.root / "iwo.sqlite").exists()  # a refused command created nothing
    assert not (home.root / "specs").exists()


def test_config_flag_naming_a_missing_file(home):
    missing = home.root / "nope.toml"
    for args in (("--config", str(missing), "status"), ("submit", str(home.spec_file()), "--config", str(missing)),
                 ("run", "--config", str(missing))):
        out = home.cli(*args)
        assert_one_line_error(out, str(missing), "not found")


def test_config_flag_naming_a_directory(home):
    out = home.cli("--config", str(home.root), "submit", str(home.spec_file()))
    assert_one_line_error(out, str(home.root), "directory")


def test_config_broken_after_submit_keeps_the_queued_spec(home):
    """The daemon refuses a broken config (exit 2, one line) and loses nothing: fixed, it runs the spec once."""
    spec_id = home.submit()
    good = (home.root / "config.toml").read_text()
    (home.root / "config.toml").write_text(good + "[loop]\nmax_rework = -1\n")
    refused = home.cli("run", timeout=60)
    assert_one_line_error(refused, "config.toml", "loop.max_rework")
    assert home.state(spec_id) == "queued"
    (home.root / "config.toml").write_text(good)
    home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS


@pytest.mark.parametrize("command", ["submit", "run"])
def test_an_unreachable_postgres_url_is_one_line_without_the_password(home, command):
    config = home.root / "config.toml"
    config.write_text(config.read_text().replace("[agent]", 'database_url = "postgresql://u:hunter2@127.0.0.1:1/iwo"\n[agent]'))
    args = ("submit", str(home.spec_file())) if command == "submit" else ("run",)
    out = home.cli(*args, timeout=120)
    assert_one_line_error(out, "database_url")
    assert "hunter2" not in out.stderr


@pytest.mark.parametrize("command", ["submit", "status", "run"])
def test_home_that_is_a_file(home, command):
    not_a_dir = home.root / "a-file"
    not_a_dir.write_text("x")
    args = ("submit", str(home.spec_file())) if command == "submit" else (command,)
    out = home.cli("--home", str(not_a_dir), *args, timeout=60)
    assert_one_line_error(out, str(not_a_dir))


# ================================================================================ spec files

@pytest.mark.parametrize("name, expected_id", [
    ("my spec file.md", "my-spec-file-"),
    ("spéc-ü日本.md", "sp-c-"),
    ("日本語.md", "spec-"),
    ("...md", "spec-"),
    ("new\nline.md", "new-line-"),
], ids=["spaces", "unicode", "all-non-ascii", "only-dots", "newline"])
def test_odd_file_names_get_a_safe_id_and_run(home, name, expected_id):
    path = home.spec_file(name, f"# Odd name {name!r}\nbody\n")
    spec_id = home.submit(path)
    assert spec_id.startswith(expected_id) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", spec_id)
    assert home.query("SELECT source FROM iwo_specs WHERE id = ?", (spec_id,)) == [(str(path),)]
    home.start()
    home.wait_state(spec_id, "done")
    assert len(handoffs_intact(home, spec_id)) == 6


def test_a_file_name_with_a_leading_dash(home):
    path = home.spec_file("-dash.md", "# Dash\n")
    spec_id = home.submit(path)  # an absolute path is unambiguous
    assert spec_id.startswith("dash-")
    for args in (("--", "-dash.md"), ("./-dash.md",)):  # relative: after "--", or with ./
        relative = subprocess.run([sys.executable, "-m", "iwo_lite", "submit", *args], cwd=home.root,
                                  env=home.env, capture_output=True, text=True, timeout=60)
        assert relative.returncode == 0 and relative.stdout.strip().splitlines()[-1] == spec_id, relative.stderr
    assert home.query("SELECT COUNT(*) FROM iwo_specs") == [(1,)]


def test_duplicate_id_with_different_content_keeps_the_first_spec(home):
    first = home.spec_file("first.md", "# First\nthe original\n")
    second = home.spec_file("second.md", "# Second\nsomething else entirely\n")
    assert home.submit(first, spec_id="same") == "same"
    out = home.cli("submit", str(second), "--id", "same", check=True)
    assert out.stdout.strip().splitlines()[-1] == "same" and "already exists" in out.stderr
    home.env["FAKE_CLAUDE_LOG_PROMPT"] = "1"
    home.start()
    home.wait_state("same", "done")
    assert home.role_counts("same") == DEFAULT_ROLE_COUNTS  # one run, not two
    assert (home.root / "specs" / "same" / "spec.md").read_text() == "# First\nthe original\n"
    prompts = [line["prompt"] for line in fake_claude.read_log(home.log) if line["event"] == "start"]
    assert all("the original" in p and "something else" not in p for p in prompts)
    assert home.query("SELECT title FROM iwo_specs") == [("First",)]


def test_an_endless_spec_file(home):
    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (800 * 1024 * 1024, 800 * 1024 * 1024))

    out = subprocess.run([sys.executable, "-m", "iwo_lite", "submit", "/dev/zero"], env=home.env,
                         capture_output=True, text=True, timeout=60, preexec_fn=cap_memory)
    assert_one_line_error(out, "/dev/zero")


def test_a_fifo_as_spec_file(home):
    fifo = home.root / "pipe.md"
    os.mkfifo(fifo)
    try:
        out = home.cli("submit", str(fifo), timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("submit of a FIFO hung")
    assert_one_line_error(out, str(fifo))


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_huge_file_dropped_into_the_inbox_is_rejected_without_reading_it_whole(home):
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 60, daemon.log)
    inbox = home.root / "inbox"
    big = inbox / "huge.md"
    with open(big, "wb") as handle:
        handle.truncate(512 * 1024 * 1024)  # sparse: no disk used
    spec_id = home.submit()  # a good spec alongside
    why = inbox / "rejected" / "huge.md.why"
    wait_for(why.exists, 60, daemon.log)
    assert "limit" in why.read_text()
    home.wait_state(spec_id, "done")
    assert daemon.proc.poll() is None and "Traceback" not in daemon.log()
    assert peak_rss_mb(daemon.pid) < 300, f"the daemon peaked at {peak_rss_mb(daemon.pid):.0f} MB"


# ================================================================================ agent output
# One daemon for all of them (retries = 1, timeout 6 s): each test submits one bad spec whose
# agent misbehaves in one way and one good spec beside it. The bad spec must end at a gate
# showing the error after two attempts; the good one must finish untouched.

AGENT_WRAPPER = """#!/bin/sh
# Per (spec, role) override: overrides/<spec>.<role>.sh replaces the agent; else the fake claude.
o="{overrides}/$IWO_SPEC_ID.$IWO_ROLE.sh"
if [ -f "$o" ]; then
  echo "$IWO_ATTEMPT" >> "{overrides}/$IWO_SPEC_ID.$IWO_ROLE.calls"
  exec /bin/sh "$o"
fi
exec {python} {fake} "$@"
"""


class AgentLab:
    def __init__(self, home: IwoHome):
        self.home = home
        self.overrides = home.root / "overrides"
        self.overrides.mkdir()
        self.scenario: dict = {"specs": {}}
        wrapper = home.root / "agent.sh"
        wrapper.write_text(AGENT_WRAPPER.format(overrides=self.overrides, python=sys.executable,
                                                fake=fake_claude.SCRIPT))
        wrapper.chmod(0o755)
        home.configure(timeout="6s", retries=1, max_concurrent=4)
        config = home.root / "config.toml"
        config.write_text(re.sub(r"command = .*", f'command = ["{wrapper}", "-p", "--output-format", "json"]',
                                 config.read_text()))
        self.daemon = home.start()
        wait_for(lambda: "daemon running" in self.daemon.log(), 60, self.daemon.log)

    def override(self, spec_id: str, role: str, script: str) -> None:
        (self.overrides / f"{spec_id}.{role}.sh").write_text(script)

    def stdout_file(self, name: str, data: bytes) -> Path:
        path = self.overrides / name
        path.write_bytes(data)
        return path

    def calls(self, spec_id: str, role: str) -> list[str]:
        path = self.overrides / f"{spec_id}.{role}.calls"
        return path.read_text().split() if path.exists() else []

    def per_spec(self, spec_id: str, roles: dict) -> None:
        self.scenario["specs"][spec_id] = {"roles": roles}
        self.home.scenario(self.scenario)

    def bad_and_good(self, bad_id: str, role: str, expected: str, *, timeout: float = 90) -> dict:
        """Submit the bad spec and a good one together; check the gate, the good spec and the daemon."""
        home = self.home
        offset = len(self.daemon.log())
        home.submit(home.spec_file(f"{bad_id}.md", f"# Bad {bad_id}\n"), spec_id=bad_id)
        good_id = home.submit(home.spec_file(f"{bad_id}-good.md", f"# Good beside {bad_id}\n"),
                              spec_id=f"{bad_id}-good")
        state = home.wait_state(bad_id, "waiting", "done", "rejected", "failed", timeout=timeout)
        home.wait_state(good_id, "done", timeout=timeout)
        assert state == "waiting", f"{bad_id} ended {state}: " + ", ".join(
            f"{s['role']} {s['verdict']}" for s in home.spec(bad_id)["steps"])
        spec = home.spec(bad_id)
        gate = spec["gates"][0]
        assert (gate["reason"], gate["role"]) == ("agent_failed", role), gate
        assert "2 attempt(s)" in gate["question"] and expected in gate["question"], gate["question"]
        step = ROLE_ORDER.index(role) + 1
        assert [a["attempt"] for a in spec["steps"][step - 1]["attempts"]] == [1, 2]
        assert all(a["error"] for a in spec["steps"][step - 1]["attempts"])
        assert len(handoffs_intact(home, bad_id)) == step
        assert home.role_counts(good_id) == DEFAULT_ROLE_COUNTS and len(handoffs_intact(home, good_id)) == 6
        assert self.daemon.proc.poll() is None, "the daemon died"
        assert "Traceback" not in log_since(self.daemon, offset)
        return spec


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = IwoHome(tmp_path_factory.mktemp("agents") / "home")
    instance = AgentLab(home)
    yield instance
    home.cleanup()


def test_agent_prints_json_that_is_not_an_object(lab):
    lab.override("json-array", "builder", "echo '[1, 2, 3]'\n")
    lab.bad_and_good("json-array", "builder", "not a result object")
    assert lab.calls("json-array", "builder") == ["1", "2"]


def test_agent_prints_stream_json_lines_instead_of_one_object(lab):
    lines = b'{"type": "system", "subtype": "init"}\n{"type": "result", "is_error": false, "result": "done"}\n'
    out = lab.stdout_file("stream.json", lines)
    lab.override("stream-json", "planner", f"cat '{out}'\n")
    lab.bad_and_good("stream-json", "planner", "not JSON")


def test_agent_prints_a_good_verdict_but_exits_non_zero(lab):
    result = {"type": "result", "subtype": "success", "is_error": False, "result":
              '```json\n{"verdict": "approve", "summary": "looks fine"}\n```', "total_cost_usd": 0.02}
    out = lab.stdout_file("exit2.json", json.dumps(result).encode())
    lab.override("exit-2", "reviewer", f"cat '{out}'; exit 2\n")
    spec = lab.bad_and_good("exit-2", "reviewer", "exit status 2")
    assert [a["exit_code"] for a in spec["steps"][2]["attempts"]] == [2, 2]
    assert spec["steps"][2]["verdict"] is None  # never a silent pass


def test_agent_killed_by_a_signal(lab):
    lab.override("sigkill", "tester", "echo 'half a line' >&2; kill -9 $$\n")
    spec = lab.bad_and_good("sigkill", "tester", "status 137")
    assert "half a line" in spec["question"]  # the last line of its stderr is shown


def test_agent_prints_binary_bytes(lab):
    out = lab.stdout_file("binary.out", bytes(range(256)) * 64)
    lab.override("binary-out", "docs", f"cat '{out}'\n")
    lab.bad_and_good("binary-out", "docs", "not JSON")


def test_agent_answers_after_a_hang_the_timeout_kills_it_and_a_concurrent_spec_is_unaffected(lab):
    lab.per_spec("hang", {"deployer": [{"mode": "hang"}]})
    lab.bad_and_good("hang", "deployer", "timed out after 6s", timeout=120)
    starts = [line for line in fake_claude.read_log(lab.home.log) if line["spec"] == "hang" and line["role"] == "deployer"]
    assert [line["attempt"] for line in starts if line["event"] == "start"] == [1, 2]
    good_done = lab.home.query("SELECT updated_at FROM iwo_specs WHERE id = 'hang-good'")[0][0]
    gate_opened = lab.home.query("SELECT opened_at FROM iwo_gates WHERE spec_id = 'hang'")[0][0]
    assert good_done < gate_opened  # the good spec did not wait for the hanging one


def test_a_malformed_last_verdict_block_is_unreadable_not_an_earlier_example(lab):
    text = ('The answer format is:\n```json\n{"verdict": "approve", "summary": "an example"}\n```\n'
            'My verdict:\n```json\n{"verdict": "changes", "summary": "the null check is missing"\n```\n')
    result = {"type": "result", "subtype": "success", "is_error": False, "result": text, "total_cost_usd": 0.01}
    out = lab.stdout_file("broken-block.json", json.dumps(result).encode())
    lab.override("broken-block", "reviewer", f"cat '{out}'\n")
    lab.bad_and_good("broken-block", "reviewer", "verdict")


def test_agent_stdout_over_the_64_mib_cap_is_reported_as_such(lab):
    lab.override("huge-stdout", "planner", "head -c 68000000 /dev/zero | tr '\\0' x\n")
    spec = lab.bad_and_good("huge-stdout", "planner", "2 attempt(s)")
    assert "printed nothing" not in spec["question"]
    assert re.search(r"MiB|too large|limit|bytes", spec["question"]), spec["question"]


def test_escape_sequences_in_agent_output_never_reach_the_terminal(lab):
    """Every kind of terminal-driving text (escapes, a bell, NUL, a C1 CSI, bidi overrides and
    isolates, the marks) through every command that shows an agent's output."""
    hostile = "\x1b]0;owned\x07\x1b[2J\x1b[31mnot json\x00 \u202eevil\u2066x\u2069\u200f\x9b6n\n"
    out = lab.stdout_file("escape.out", hostile.encode("utf-8"))
    lab.override("escape-out", "tester", f"cat '{out}'\n")
    lab.bad_and_good("escape-out", "tester", "not JSON")
    home = lab.home
    watch = subprocess.Popen([sys.executable, "-m", "iwo_lite", "status", "escape-out", "--watch"], env=home.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)
    finally:
        watch.send_signal(2)
        watched, watch_err = watch.communicate(timeout=30)
    runs = {"status ID": home.cli("status", "escape-out", check=True).stdout, "status": home.cli("status").stdout,
            "logs ID": home.cli("logs", "escape-out").stdout, "status --watch | cat": watched + watch_err,
            "status --sql": home.cli("status", "--sql", "SELECT note FROM iwo_gates").stdout}
    unsafe = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
    for what, shown in runs.items():
        assert not unsafe.findall(shown), f"{what}: {unsafe.findall(shown)!r} in {shown[-1500:]!r}"
    assert "not json" in runs["status ID"] and watched.count("escape-out") >= 2  # a snapshot a second, plain


# ================================================================================ Telegram
# One daemon and one fake Bot API for these: each test parks its own spec at a reviewer gate,
# sends the junk, then the right answer. The bot handles updates in order, so if the junk had
# been taken the gate would carry it instead of the right answer.

CHAT, ALICE, MALLORY = 1001, 42, 99


class TelegramLab:
    def __init__(self, home: IwoHome):
        from fake_bot_api import FakeBotAPI

        self.api = FakeBotAPI().start()
        self.home = home
        home.env["IWO_TELEGRAM_TOKEN"] = self.api.token
        home.configure(f"[telegram]\nallowed_chat_ids = [{CHAT}]\nallowed_user_ids = [{ALICE}]\n"
                       f'base_url = "{self.api.base_url}"\n')
        home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "Add the dependency?"},
                                              {"verdict": "approve"}]}})
        self.daemon = home.start()

    def park(self, spec_id: str) -> dict:
        """Submit a spec, wait for its gate, return the question message the bot sent."""
        self.home.submit(self.home.spec_file(f"{spec_id}.md", f"# {spec_id}\n"), spec_id=spec_id)
        self.home.wait_state(spec_id, "waiting")
        return self.api.wait_for(lambda api: [m for m in api.sent_messages
                                              if m["chat_id"] == CHAT and f"spec {spec_id}:" in m["text"]])[0]

    def approve_and_finish(self, spec_id: str, message: dict) -> dict:
        data = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        self.api.push_callback(CHAT, ALICE, data, message_id=message["message_id"])
        self.home.wait_state(spec_id, "done", "rejected")
        gate = self.home.spec(spec_id)["gates"][0]
        assert (gate["answer"], gate["note"], gate["answered_by"], gate["answered_via"]) == (
            "approve", None, "@alice", "telegram"), gate
        assert self.home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # one builder: no revise slipped in
        assert self.daemon.proc.poll() is None and "Traceback" not in self.daemon.log()
        assert self.api.token not in self.daemon.log()
        return gate

    def stop(self) -> None:
        self.api.stop()


@pytest.fixture(scope="module")
def tg(tmp_path_factory):
    home = IwoHome(tmp_path_factory.mktemp("telegram") / "home")
    lab = TelegramLab(home)
    yield lab
    home.cleanup()
    lab.stop()


def answered_texts(api) -> list[str]:
    return [c["text"] or "" for c in api.answered_callbacks]


@pytest.mark.parametrize("name, data", [("oversized", "g1:a" + "0" * 300), ("huge-rowid", "g" + "9" * 40 + ":a"),
                                        ("bidi-suffix", "g1:a\u202e"), ("fullwidth", "ｇ１:ａ"), ("empty", "")])
def test_telegram_forged_or_oversized_callback_data(tg, name, data):
    spec_id = f"tg-data-{name}"
    message = tg.park(spec_id)
    before = len(tg.api.answered_callbacks)
    tg.api.push_callback(CHAT, ALICE, data, message_id=message["message_id"])
    wait_for(lambda: len(tg.api.answered_callbacks) > before, 20)
    assert answered_texts(tg.api)[-1] == "Unknown or expired button."
    assert tg.home.state(spec_id) == "waiting"
    tg.approve_and_finish(spec_id, message)


def test_telegram_callback_without_data(tg):
    spec_id = "tg-no-data"
    message = tg.park(spec_id)
    before = len(tg.api.answered_callbacks)
    tg.api.push_raw({"callback_query": {"id": "777000111", "from": {"id": ALICE, "is_bot": False, "first_name": "A",
                                                                    "username": "alice"},
                                        "chat_instance": "1", "game_short_name": "nope",
                                        "message": {"message_id": message["message_id"], "date": int(time.time()),
                                                    "chat": {"id": CHAT, "type": "private"}}}})
    wait_for(lambda: len(tg.api.answered_callbacks) > before, 20)
    assert tg.home.state(spec_id) == "waiting"
    tg.approve_and_finish(spec_id, message)


def telegram_reply(text: str, replied_id: int, replied_from_bot: bool) -> dict:
    """A message update replying to message `replied_id` (as Telegram embeds the replied message)."""
    alice = {"id": ALICE, "is_bot": False, "first_name": "Alice", "username": "alice"}
    bot = {"id": 123456, "is_bot": True, "first_name": "IWO Test Bot", "username": "iwo_test_bot"}
    chat = {"id": CHAT, "type": "private", "first_name": "Alice"}
    return {"message": {"message_id": 900_000 + replied_id, "from": alice, "chat": chat, "date": int(time.time()),
                        "text": text,
                        "reply_to_message": {"message_id": replied_id, "from": bot if replied_from_bot else alice,
                                             "chat": chat, "date": int(time.time()), "text": "something else"}}}


def test_telegram_reply_to_a_message_that_is_not_a_gate_question(tg):
    spec_id = "tg-reply-elsewhere"
    message = tg.park(spec_id)
    tg.api.push_raw(telegram_reply("Use urllib instead", 424_242, replied_from_bot=False))  # a user's own message
    tg.api.push_raw(telegram_reply("Use httpx instead", 424_243, replied_from_bot=True))   # a bot message, no gate
    tg.api.push_text(CHAT, ALICE, "and this is not a reply at all")
    time.sleep(1.5)  # the bot waits 1 s for a reply to one of its messages that it has not recorded yet
    assert tg.home.state(spec_id) == "waiting"
    assert tg.home.spec(spec_id)["gates"][0]["answer"] is None
    tg.approve_and_finish(spec_id, message)


def test_telegram_reply_from_a_user_not_allowed_in_an_allowed_chat(tg):
    spec_id = "tg-stranger-reply"
    message = tg.park(spec_id)
    offset = len(tg.daemon.log())
    tg.api.push_text(CHAT, MALLORY, "ship it without tests", reply_to_message_id=message["message_id"],
                     username="mallory")
    wait_for(lambda: "dropped an update" in log_since(tg.daemon, offset), 20)
    assert tg.home.state(spec_id) == "waiting"
    tg.approve_and_finish(spec_id, message)


def test_telegram_reply_to_a_gate_already_answered(tg):
    spec_id = "tg-stale-reply"
    message = tg.park(spec_id)
    gate = tg.approve_and_finish(spec_id, message)
    sent_before = len(tg.api.sent_messages)
    tg.api.push_text(CHAT, ALICE, "too late: revise it", reply_to_message_id=message["message_id"])
    reply = tg.api.wait_for(lambda api: [m for m in api.sent_messages[sent_before:] if "already answered" in m["text"]])
    assert reply and tg.home.state(spec_id) == "done"
    assert tg.home.spec(spec_id)["gates"] == [gate]
    assert tg.home.role_counts(spec_id)["builder"] == 1


# ================================================================================ status --sql

@pytest.fixture
def submitted(home):
    spec_id = home.submit()
    return home, spec_id


def test_sql_several_statements_run_nothing(submitted):
    home, spec_id = submitted
    out = home.cli("status", "--sql", "SELECT 1; DELETE FROM iwo_specs")
    assert_one_line_error(out, "status --sql", "one statement")
    assert home.query("SELECT id, state FROM iwo_specs") == [(spec_id, "queued")]


def test_sql_cannot_change_the_journal_mode(submitted):
    home, _ = submitted
    out = home.cli("status", "--sql", "PRAGMA journal_mode=DELETE")
    assert_one_line_error(out, "status --sql")
    assert home.query("PRAGMA journal_mode") == [("wal",)]
    assert home.cli("status", "--sql", "PRAGMA user_version=7").returncode == 2
    assert home.query("PRAGMA user_version") == [(0,)]


@pytest.mark.parametrize("statement", ["ATTACH DATABASE '{path}' AS x", "VACUUM INTO '{path}'"],
                         ids=["attach", "vacuum-into"])
def test_sql_creates_no_file(submitted, statement):
    home, _ = submitted
    target = home.root / "created-by-sql.db"
    out = home.cli("status", "--sql", statement.format(path=target))
    assert not target.exists(), f"status --sql created {target}"
    assert_one_line_error(out, "status --sql")


# ================================================================================ the daemon and the database

def test_a_second_daemon_says_so_in_one_line_and_the_first_works_on(home):
    first = home.start()
    wait_for(lambda: "daemon running" in first.log(), 60, first.log)
    second = home.cli("run", timeout=60)
    assert_one_line_error(second, "daemon.lock", str(first.pid))
    spec_id = home.submit()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
    assert home.query("SELECT COUNT(*) FROM iwo_daemon_starts") == [(1,)]


def test_a_stale_lock_file_from_a_dead_daemon_does_not_block_the_next(home):
    spec_id = home.submit()
    (home.root / "daemon.lock").write_text("999999\n")  # written by a daemon that died; nobody holds the flock
    daemon = home.start()
    home.wait_state(spec_id, "done")
    assert (home.root / "daemon.lock").read_text().strip() == str(daemon.pid)


def corrupt(home: IwoHome, kind: str = "garbage") -> Path:
    """The home's database path holding garbage, or a directory where the file should be."""
    db = home.root / "iwo.sqlite"
    if kind == "directory":
        if db.exists():
            db.unlink()
        (db / "inside").mkdir(parents=True)
        return db
    db.write_bytes(b"this is not a database, it is garbage. " * 200)
    os.chmod(db, 0o600)
    return db


def left_as_it_was(db: Path, kind: str) -> bool:
    return (db / "inside").is_dir() if kind == "directory" else db.read_bytes().startswith(b"this is not a database")


@pytest.mark.parametrize("kind", ["garbage", "directory"])
@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("status", "some-id"), ("submit", "SPEC"),
                                  ("run",), ("approve", "some-id"), ("cancel", "some-id")],
                         ids=lambda args: "-".join(a.strip("-") for a in args))
def test_a_corrupt_database_file(home, args, kind):
    db = corrupt(home, kind)
    args = tuple(str(home.spec_file()) if a == "SPEC" else a for a in args)
    out = home.cli(*args, timeout=60)
    assert_one_line_error(out, str(db))
    assert left_as_it_was(db, kind)  # for the user to look at


@pytest.mark.parametrize("kind", ["garbage", "directory"])
def test_doctor_reports_a_corrupt_database_as_a_failed_check(home, kind):
    corrupt(home, kind)
    out = home.cli("doctor")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert re.search(r"✗ database.*(not a database|integrity)", out.stdout), out.stdout + out.stderr
    assert "agent command" in out.stdout  # the other checks still ran


@pytest.mark.parametrize("workdir", ["missing", "a-file"])
def test_run_refuses_a_workdir_that_is_not_a_directory(home, workdir):
    """Every agent would start in it: `run` says so at once (exit 2, the file and key), doctor marks it."""
    path = home.root / workdir
    if workdir == "a-file":
        path.write_text("not a directory\n")
    config = home.root / "config.toml"
    config.write_text(re.sub(r'^workdir = .*$', f'workdir = "{path}"', config.read_text(), flags=re.M))
    out = home.cli("run", timeout=60)
    assert_one_line_error(out, f"workdir: {path}")
    assert "✗ workdir" in home.cli("doctor").stdout


def hold_write_lock(db: Path, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_the_database_locked_by_another_writer_for_3s_loses_nothing(home):
    home.configure(max_concurrent=4)
    home.scenario({"default": {"sleep": 0.2}})
    ids = [home.submit(home.spec_file(f"locked-{i}.md", f"# Locked {i}\n")) for i in range(4)]
    daemon = home.start()
    db = home.root / "iwo.sqlite"
    for wait_until in (1, 10):  # lock twice: as the first agents start, and again mid-way
        wait_for(lambda: home.invocations() >= wait_until, 90)
        held = threading.Event()
        locker = threading.Thread(target=hold_write_lock, args=(db, 3.0, held))
        locker.start()
        assert held.wait(30)
        status = home.cli("status", "--json")  # readers are not blocked (WAL)
        assert status.returncode == 0, status.stderr
        if wait_until == 1:
            ids.append(home.submit(home.spec_file("during-lock.md", "# Submitted during the lock\n")))
        locker.join()
    for spec_id in ids:
        home.wait_state(spec_id, "done", timeout=120)
        assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS
        assert len(handoffs_intact(home, spec_id)) == 6
    log = daemon.log()
    assert "database is locked" not in log and "Traceback" not in log and "WARNING" not in log, log[-3000:]
    assert home.query("PRAGMA integrity_check") == [("ok",)]


# -- numbers an agent reports: every cost that is not a finite number >= 0 (and believable) --------

BAD_COSTS = {"planner": float("nan"), "builder": float("inf"), "reviewer": -5.0, "tester": 1e9,
             "deployer": "0.5", "docs": {"usd": 1}}


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (they are not JSON)."""
    def refuse(name):
        raise AssertionError(f"not JSON: {name} in the output")
    return json.loads(text, parse_constant=refuse)


def test_costs_an_agent_reports_that_are_not_believable_are_unknown_never_break_a_spec_or_the_json(home):
    """NaN, ±inf, negative, absurd, a string, an object: each call's cost is recorded as unknown (0 in
    the sums, null in the JSON, a note in the trace); the spec goes on to done, `status --json` and
    `status --sql --json` stay JSON, and the bad token counts are not counted either."""
    home.scenario({"roles": {role: [{"cost": cost}] for role, cost in BAD_COSTS.items()}})
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # each paid once: none retried
    listed = strict_json(home.cli("status", "--json", check=True).stdout)
    assert listed[0]["cost_usd"] == 0
    trace = strict_json(home.cli("status", spec_id, "--json", check=True).stdout)[0]
    attempts = [a for step in trace["steps"] for a in step["attempts"]]
    assert [a["cost_usd"] for a in attempts] == [None] * 6
    notes = [a["cost_note"] for a in attempts]
    for note, shown in zip(notes, ("nan", "inf", "-5.0", "1000000000.0", "'0.5'", '{"usd": 1}')):
        assert note.startswith(f"the agent reported cost {shown} (") and "recorded as unknown" in note, notes
    sql = home.cli("status", "--json", "--sql", "SELECT cost_usd, cost_note FROM iwo_attempts", check=True)
    assert [row["cost_usd"] for row in strict_json(sql.stdout)] == [0.0] * 6
    shown = home.cli("status", spec_id, check=True).stdout
    assert "the agent reported cost nan (not a finite number)" in shown and "negative" in shown
    assert "over the ceiling of $1000 per call" in shown
    handoff = (home.root / "specs" / spec_id / "handoffs" / "01-planner.md").read_text()
    assert "- cost_usd: unknown (the agent reported cost nan" in handoff
    assert "Traceback" not in daemon.log()


def test_a_negative_cost_does_not_bypass_the_cap_nor_an_absurd_one_close_the_day(home):
    home.configure("[budget]\nper_spec_usd = 0.05\ndaily_usd = 100\n")
    home.scenario({"default": {"cost": 0.02}, "roles": {"planner": [{"cost": -100}], "builder": [{"cost": 1e12}]}})
    spec_id = home.submit()
    home.start()
    # planner -100 and builder 1e12 are unknown: reviewer $0.02, tester $0.02, deployer $0.02 reach the cap
    spec = wait_for(lambda: (s := home.spec(spec_id))["state"] == "waiting" and s, 60, lambda: home.spec(spec_id))
    assert spec["gates"][-1]["reason"] == "budget" and spec["role"] == "docs", spec
    assert spec["cost_usd"] == pytest.approx(0.06)


def test_a_workdir_that_cannot_give_a_spec_its_branch_is_refused_at_submit(home):
    """A newcomer's first real repository: workspace = "worktree" on a directory that is not a git
    repository, or a fresh `git init` with no commit yet. The old submit queued the spec, and the
    daemon failed it after four blind retries (or, with the mode left "", let the agents loose in the
    workdir itself). Now submit and the inbox refuse it in one line naming the workdir and the fix."""
    work = home.root / "work"
    config = home.root / "config.toml"
    config.write_text('workspace = "worktree"\n' + config.read_text())
    spec = home.spec_file()
    out = home.cli("submit", str(spec), "--id", "nogit")
    assert_one_line_error(out, str(work), "not a git repository")
    config.write_text(config.read_text().replace('workspace = "worktree"\n', ""))
    env = {**home.env, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(work)], check=True, env=env)
    out = home.cli("submit", str(spec), "--id", "nocommit")
    assert_one_line_error(out, str(work), "without a commit")
    daemon = home.start()
    wait_for(lambda: "daemon running" in daemon.log(), 30)
    (home.root / "inbox" / "dropped.md").write_text("# Dropped\nbody\n")
    why = home.root / "inbox" / "rejected" / "dropped.md.why"
    wait_for(why.exists, 30, "the inbox to refuse dropped.md")
    assert str(work) in why.read_text() and "without a commit" in why.read_text()
    assert home.state("nogit") is None and home.state("nocommit") is None
    subprocess.run(["git", "-C", str(work), "-c", "user.name=U", "-c", "user.email=u@example.invalid",
                    "-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", "start"], check=True, env=env)
    assert home.cli("submit", str(spec), "--id", "committed").returncode == 0
    assert home.state("committed") == "queued"
