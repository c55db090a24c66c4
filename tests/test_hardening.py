"""Hardening found by adversarial rounds, end to end (the real CLI and daemon as processes).

Each test names the bad input it gives and checks the contract: the work goes on (or the command
exits 2 with one line naming what is at fault), nothing is lost, nothing lands outside the home.

* a home whose path holds `?`, `#`, `%` and a space (the database URL used to split there);
* the systemd unit of a home with a space and a `%` (EnvironmentFile= and WorkingDirectory= were
  quoted, which systemd does not unquote there: service.env was silently dropped); the rules
  systemd reads a unit by are written out below (`parse_unit`), and `systemd-analyze verify`
  checks the file too when it is installed;
* `status --sql` with a query that never ends, or returns without end;
* an agent whose JSON holds a lone surrogate ("\\ud800": valid JSON, what Node prints for a string
  cut in the middle of an emoji);
* `fork` three times when `<id>-fork2` is already taken;
* SIGHUP (a closed terminal) stops the daemon cleanly, as SIGTERM does.

Config bounds are unit-tested in tests/unit/test_hardening_unit.py.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import pytest

from conftest import IwoHome, wait_for

# "?" ends the path in a URL, "%41" decodes to "A", a lone "%" is no escape, "#" starts a fragment.
ODD = "we ird?x=1#frag%41%é"


def assert_one_line_error(proc, *names: str) -> None:
    detail = f"exit {proc.returncode}; stderr:\n{proc.stderr}"
    assert proc.returncode == 2, detail
    assert "Traceback" not in proc.stderr, detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), detail
    for name in names:
        assert name in lines[0], f"{name!r} not named; {detail}"


def cli_state(home: IwoHome, spec_id: str) -> str | None:
    """The spec's state as `status --json` shows it (the CLI opens the database, not the test)."""
    proc = home.cli("status", spec_id, "--json")
    return json.loads(proc.stdout)[0]["state"] if proc.returncode == 0 else None


def wait_cli_state(home: IwoHome, spec_id: str, *states: str, timeout: float = 60) -> str:
    return wait_for(lambda: (cli_state(home, spec_id) in states) and cli_state(home, spec_id), timeout,
                    lambda: f"{spec_id} never reached {states}; it is {cli_state(home, spec_id)}\n"
                    + home.daemon_logs())


# -- 1. a home path with ?, #, % and a space -------------------------------------------------


def test_a_home_whose_path_holds_url_characters_keeps_its_database_inside(tmp_path):
    home = IwoHome(tmp_path / ODD)
    try:
        home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "Ship it?"}]}})
        spec_id = home.submit()  # before the daemon: the shell creates the database
        assert sorted(os.listdir(tmp_path)) == [ODD], "a file was created outside the home"
        assert (home.root / "iwo.sqlite").is_file()
        daemon = home.start()
        wait_cli_state(home, spec_id, "waiting")
        home.cli("approve", spec_id, "-m", "yes", check=True)
        assert wait_cli_state(home, spec_id, "done", "failed") == "done", home.daemon_logs()
        # the spec's row says done in the workflow's last step; DBOS marks the workflow a moment later
        def workflow_status():
            conn = sqlite3.connect(f"file:{quote(str(home.root / 'iwo.sqlite'))}?mode=ro", uri=True)
            try:
                return conn.execute("SELECT status FROM workflow_status WHERE workflow_uuid = ?", (spec_id,)).fetchall()
            finally:
                conn.close()
        wait_for(lambda: workflow_status() == [("SUCCESS",)], 30, "the workflow to be marked SUCCESS")
        assert daemon.stop() == 0
        assert sorted(os.listdir(tmp_path)) == [ODD], "a file was created outside the home"
        assert sorted(p.name for p in home.root.glob("iwo.sqlite*")) in (
            ["iwo.sqlite"], ["iwo.sqlite", "iwo.sqlite-shm", "iwo.sqlite-wal"])

        # DBOS's workflow and iwo-lite's rows are both in the home's file
        conn = sqlite3.connect(f"file:{quote(str(home.root / 'iwo.sqlite'))}?mode=ro", uri=True)
        try:
            assert conn.execute("SELECT status FROM workflow_status WHERE workflow_uuid = ?",
                                (spec_id,)).fetchall() == [("SUCCESS",)]
            assert conn.execute("SELECT answer, answered_via FROM iwo_gates WHERE spec_id = ?",
                                (spec_id,)).fetchall() == [("approve", "cli")]
        finally:
            conn.close()

        # status reads that file, read-only
        rows = json.loads(home.cli("status", "--sql", "SELECT id, state FROM iwo_specs", "--json", check=True).stdout)
        assert rows == [{"id": spec_id, "state": "done"}]
        assert_one_line_error(home.cli("status", "--sql", "DELETE FROM iwo_specs"), "status --sql", "readonly")
        assert cli_state(home, spec_id) == "done"
        assert home.cli("doctor").returncode in (0, 1)  # answers (what it finds is not the point here)
    finally:
        home.cleanup()


# -- 2. the systemd unit ---------------------------------------------------------------------
#
# How systemd reads the lines iwo-lite writes (systemd.syntax(7), systemd.exec(5), systemd.service(5)):
# * every value: specifiers are expanded, "%%" is a "%", any other "%x" is a specifier;
# * ExecStart=: words split at blanks, "..." / '...' unquoted, C escapes (\\ \" \n ...) decoded,
#   then "$$" is a "$" and "$NAME" / "${NAME}" expand (the unit never means that);
# * Environment=: words split, unquoted and unescaped the same way, each NAME=VALUE; "$" means nothing;
# * WorkingDirectory= and EnvironmentFile=: the rest of the line is the path as it is — no quotes,
#   no escapes (a quoted path is "not absolute" and the setting is ignored); a leading "-" on
#   EnvironmentFile= means "if it exists";
# * a line that ends with a backslash goes on with the next.

_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "s": " ",
              "\\": "\\", '"': '"', "'": "'", " ": " "}


def _specifiers(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "%":
            if value[i + 1:i + 2] != "%":
                raise AssertionError(f"systemd would expand the specifier {value[i:i + 2]!r} in {value!r}")
            out.append("%")
            i += 2
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _words(value: str) -> list[str]:
    """extract_first_word(EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE), repeated over the value."""
    words: list[str] = []
    word: list[str] = []
    quote_char = None
    in_word = False
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            escape = value[i + 1:i + 2]
            if escape not in _C_ESCAPES:
                raise AssertionError(f"an escape systemd would not read as meant: {value[i:i + 2]!r} in {value!r}")
            word.append(_C_ESCAPES[escape])
            in_word = True
            i += 2
            continue
        if quote_char:
            if c == quote_char:
                quote_char = None
            else:
                word.append(c)
        elif c in "\"'":
            quote_char = c
            in_word = True
        elif c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(c)
            in_word = True
        i += 1
    if quote_char:
        raise AssertionError(f"an unterminated quote in {value!r}")
    if in_word:
        words.append("".join(word))
    return words


def _exec_dollars(word: str) -> str:
    out, i = [], 0
    while i < len(word):
        if word[i] == "$":
            if word[i + 1:i + 2] != "$":
                raise AssertionError(f"systemd would expand a variable in the ExecStart word {word!r}")
            out.append("$")
            i += 2
            continue
        out.append(word[i])
        i += 1
    return "".join(out)


def _absolute(path: str, key: str) -> str:
    if not path.startswith("/"):
        raise AssertionError(f"{key}= path is not absolute: {path!r} (systemd ignores the setting)")
    return path


def parse_unit(text: str) -> dict[str, list]:
    """The unit's settings as systemd reads them: key -> the list of its values, each parsed
    (a value systemd would not read as meant is the string "unreadable: <why>")."""
    lines: list[str] = []
    pending = ""
    for raw in text.split("\n"):
        if pending or not raw.lstrip().startswith(("#", ";")):
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            raw, pending = pending + raw, ""
        lines.append(raw)
    assert not pending, "the file ends in a line continuation"
    settings: dict[str, list] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line!r}"
        key, value = key.strip(), value.strip()
        try:
            parsed = _setting(key, value)
        except AssertionError as problem:  # kept as the value: each check says what is wrong with its line
            parsed = f"unreadable: {problem}"
        settings.setdefault(key, []).append(parsed)
    return settings


def _setting(key: str, value: str) -> object:
    if key == "ExecStart":
        return [_exec_dollars(word) for word in _words(_specifiers(value))]
    if key == "Environment":
        return [tuple(_specifiers(word).split("=", 1)) for word in _words(value)]
    if key == "EnvironmentFile":
        optional = "-" if value.startswith("-") else ""
        return (optional, _absolute(_specifiers(value[len(optional):]), key))
    if key == "WorkingDirectory":
        return _absolute(_specifiers(value), key)
    return _specifiers(value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are written on Linux")
def test_the_systemd_unit_keeps_service_env_in_a_home_with_a_space_and_a_percent(tmp_path):
    home = IwoHome(tmp_path / "my home 100%")
    workdir = tmp_path / "work dir %x"
    workdir.mkdir()
    path_env = os.environ.get("PATH", "/usr/bin:/bin") + ":/opt/odd$dir"
    env = dict(home.env, HOME=str(tmp_path / "user"), PATH=path_env)
    proc = subprocess.run([sys.executable, "-m", "iwo_lite", "service", "install"], env=env, cwd=workdir,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    unit_file = tmp_path / "user" / ".config" / "systemd" / "user" / "iwo-lite.service"
    unit = parse_unit(unit_file.read_text(encoding="utf-8"))
    assert unit["EnvironmentFile"] == [("-", str(home.root / "service.env"))]
    assert unit["WorkingDirectory"] == [str(workdir)]
    assert unit["ExecStart"] == [[sys.executable, "-m", "iwo_lite", "--home", str(home.root), "run"]]
    assert dict(item for items in unit["Environment"] for item in items) == {"PATH": path_env,
                                                                            "PYTHONUNBUFFERED": "1"}
    assert unit["Description"] == [f"iwo-lite daemon (home {home.root})"]

    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own reading of the file, where it is installed
        verify = subprocess.run([analyze, "verify", str(unit_file)], capture_output=True, text=True, timeout=60)
        said = verify.stdout + verify.stderr
        for complaint in ("not absolute", "ignoring", "bad unit file setting", "fatal error", "Invalid slot"):
            assert complaint not in said, said


# -- 3. status --sql: limits on time and size ------------------------------------------------

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
MEMORY_CAP = 1024 * 1024 * 1024  # the child's address space: a runaway query fails at 1 GiB instead of swapping


def run_measured(home: IwoHome, *args: str, extra_env: dict | None = None,
                 timeout: float = 60) -> tuple[subprocess.CompletedProcess, float, float]:
    """The CLI as a child of its own: (result, seconds, peak RSS in MiB of that child alone)."""

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    out_path, err_path = home.root / "measured.out", home.root / "measured.err"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", *args], env=dict(home.env, **(extra_env or {})),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=cap_memory)
    killer = threading.Timer(timeout, lambda: proc.kill())
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    seconds = time.monotonic() - started
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out_path.read_text(errors="replace"),
                                         err_path.read_text(errors="replace"))
    assert seconds < timeout, f"still running after {timeout}s (killed): {result.stderr[-2000:]}"
    return result, seconds, usage.ru_maxrss / 1024


def check_sql_limits(home: IwoHome, big_value: str = "randomblob(100000)") -> None:
    rows, seconds, peak = run_measured(home, "status", "--sql", ENDLESS + "SELECT x FROM c")
    assert_one_line_error(rows, "status --sql", "10000 rows", "LIMIT")
    assert seconds < 10 and peak < 250, (seconds, peak)

    endless, seconds, peak = run_measured(home, "status", "--sql", ENDLESS + "SELECT count(*) FROM c",
                                          extra_env={"IWO_SQL_TIMEOUT_S": "2"})
    assert_one_line_error(endless, "status --sql", "2s", "time limit", "IWO_SQL_TIMEOUT_S")
    assert 1.5 < seconds < 15 and peak < 250, (seconds, peak)

    big, seconds, peak = run_measured(home, "status", "--sql", ENDLESS + f"SELECT x, {big_value} FROM c",
                                      "--json")
    assert_one_line_error(big, "status --sql", "MiB")
    assert big.stdout == "" and peak < 400, peak

    fine = home.cli("status", "--sql", ENDLESS + "SELECT x FROM c LIMIT 3", "--json", check=True)
    assert [row["x"] for row in json.loads(fine.stdout)] == [1, 2, 3]
    refused = subprocess.run([sys.executable, "-m", "iwo_lite", "status", "--sql", "SELECT 1"],
                             env=dict(home.env, IWO_SQL_TIMEOUT_S="soon"), capture_output=True, text=True, timeout=60)
    assert_one_line_error(refused, "IWO_SQL_TIMEOUT_S", "soon")


def test_status_sql_stops_an_endless_query_with_one_line(home):
    home.submit()  # the database exists
    check_sql_limits(home)
    assert home.cli("status", "--json", check=True).returncode == 0  # nothing broken


def test_status_sql_stops_an_endless_query_on_postgres(tmp_path, postgres_url):
    home = IwoHome(tmp_path / "pg", database_url=postgres_url, executor_id="w1")
    try:
        home.submit()
        check_sql_limits(home, big_value="repeat('a', 100000)")
        empty = home.cli("status", "--sql", "SELECT id AS spec FROM iwo_specs WHERE false", "--json", check=True)
        assert json.loads(empty.stdout) == []
    finally:
        home.cleanup()


# -- 5. lone surrogates in the agent's JSON --------------------------------------------------


def handoff_texts(home: IwoHome, spec_id: str) -> dict[str, str]:
    folder = home.root / "specs" / spec_id / "handoffs"
    return {path.name: path.read_bytes().decode("utf-8") for path in sorted(folder.glob("*.md"))}  # strict UTF-8


def test_a_lone_surrogate_in_the_verdict_summary_does_not_fail_the_spec(home):
    # fake_claude prints the summary inside the fenced ```json block: "\ud800" reaches the verdict
    home.scenario({"roles": {"reviewer": [{"verdict": "approve", "summary": "cut emoji \ud800 here"}],
                             "tester": [{"mode": "structured", "summary": "half \udc00 of one"}]}})
    spec_id = home.submit()
    home.start()
    assert home.wait_state(spec_id, "done", "failed", "waiting") == "done", home.daemon_logs()
    texts = handoff_texts(home, spec_id)
    assert "cut emoji \ufffd here" in texts["03-reviewer.md"]
    assert "half \ufffd of one" in texts["04-tester.md"]
    assert json.loads(home.cli("status", spec_id, "--json", check=True).stdout)[0]["state"] == "done"


SURROGATE_AGENT = r'''
import json, os, sys
sys.stdin.read()
role = os.environ["IWO_ROLE"]
verdict = {"reviewer": "approve", "tester": "pass"}.get(role, "done")
cut = "\ud83d"  # half of an emoji, as Node prints a string cut in the middle of one
block = json.dumps({"verdict": verdict, "summary": role + " summary " + cut})
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                  "total_cost_usd": 0.01, "session_id": "session-" + role + cut,
                  "result": "work finished " + cut + "\n```json\n" + block + "\n```\n"}))
'''


def test_a_lone_surrogate_in_the_agent_result_does_not_fail_the_spec(home):
    agent = home.root / "surrogate_agent.py"
    agent.write_text(SURROGATE_AGENT)
    home.configure()
    config = home.root / "config.toml"
    config.write_text(config.read_text().replace(json.dumps(__import__("fake_claude").command()),
                                                 json.dumps([sys.executable, str(agent)])))
    assert str(agent) in config.read_text()
    spec_id = home.submit()
    home.start()
    assert home.wait_state(spec_id, "done", "failed", "waiting") == "done", home.daemon_logs()
    texts = handoff_texts(home, spec_id)
    assert len(texts) == 6
    for name, text in texts.items():
        assert "work finished \ufffd" in text and "summary \ufffd" in text, (name, text)
    assert home.cli("status", spec_id).returncode == 0


# -- 6. fork ids -----------------------------------------------------------------------------


def test_fork_three_times_with_fork2_taken_gives_three_new_specs(home):
    spec_id = home.submit(spec_id="forkme")
    taken = home.submit(home.spec_file("other.md", "# Another spec\nTaken id.\n"), spec_id="forkme-fork2")
    home.start()
    home.wait_state(spec_id, "done")
    home.wait_state(taken, "done")
    forks = []
    for _ in range(3):
        out = home.cli("fork", spec_id, "--from", "planner")
        assert out.returncode == 0, out.stderr
        forks.append(out.stdout.strip().splitlines()[-1])
    assert forks == ["forkme-fork1", "forkme-fork3", "forkme-fork4"]
    for fork_id in forks:
        home.wait_state(fork_id, "done")
        assert home.spec(fork_id)["parent_id"] == spec_id
    assert home.spec(taken)["parent_id"] is None  # the taken id is still the other spec
    assert home.role_counts(taken) == {"planner": 1, "builder": 1, "reviewer": 1, "tester": 1, "deployer": 1,
                                       "docs": 1}


# -- 7. SIGHUP -------------------------------------------------------------------------------


def test_sighup_stops_the_daemon_cleanly_and_loses_nothing(home):
    home.scenario({"roles": {"planner": [{"sleep": 3}]}})
    spec_id = home.submit()
    daemon = home.start()
    wait_for(lambda: home.started("planner", spec_id), 60, home.daemon_logs)
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.proc.wait(timeout=30) == 0, daemon.log()
    assert "SIGHUP" in daemon.log() and "stopping" in daemon.log(), daemon.log()
    home.start()  # the planner in flight is collected, not started again
    home.wait_state(spec_id, "done")
    assert home.role_counts(spec_id)["planner"] == 1
