"""Hardening found by adversarial rounds, at the unit level (no processes): database URLs of homes
whose path holds URL characters, bounds on config durations and counts, lone surrogates in an
agent's answer, and the systemd unit's quoting rules.

The process-level half is tests/test_hardening.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from iwo_lite.config import ConfigError, load_config

# A path with every character a sqlite:/// URL could misread: "?" (SQLAlchemy ends the path there),
# "%41" (percent-decoded to "A"), a lone "%", "#", a space, and a non-ASCII letter.
ODD = "we ird?x=1#frag%41%é"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "user")}


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(home: Path, text: str, env: dict[str, str]) -> str:
    path = write_config(home, text)
    with pytest.raises(ConfigError) as info:
        load_config(home, environ=env)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


# -- 1. a home path with ?, #, % and a space -------------------------------------------------


def test_the_default_database_url_names_the_file_in_the_home_as_sqlalchemy_reads_it(tmp_path, env):
    from sqlalchemy.engine import make_url

    from iwo_lite.store import sqlite_path

    home = tmp_path / ODD
    config = load_config(home, environ=env)
    assert config.db_path == home / "iwo.sqlite"
    assert sqlite_path(config.database_url) == home / "iwo.sqlite"
    parsed = make_url(config.database_url)  # what DBOS (SQLAlchemy) opens
    assert parsed.database == str(home / "iwo.sqlite") and not parsed.query


def test_a_configured_sqlite_url_is_percent_decoded_like_sqlalchemy_does(tmp_path, env):
    from sqlalchemy.engine import make_url

    from iwo_lite.store import sqlite_path

    home = tmp_path / "home"
    # the user's URL, encoded as a URL must be: %3F is a "?" in the path, "?timeout=" a query
    write_config(home, 'database_url = "sqlite:///data%3Fx/db%2541.sqlite?timeout=20"\n')
    config = load_config(home, environ=env)
    wanted = home / "data?x" / "db%41.sqlite"
    assert config.db_path == wanted
    parsed = make_url(config.database_url)
    assert parsed.database == str(wanted) and parsed.query == {"timeout": "20"}
    assert sqlite_path(config.database_url) == wanted


def test_sqlite_url_and_sqlite_path_round_trip_any_path():
    from sqlalchemy.engine import make_url

    from iwo_lite.store import sqlite_path, sqlite_url

    for path in (f"/tmp/{ODD}/iwo.sqlite", "/tmp/a b/%20/%/x.sqlite", "/tmp/#/?/&/=/+/;/@/:/x.sqlite",
                 "/tmp/plain/iwo.sqlite"):
        url = sqlite_url(path)
        assert sqlite_path(url) == Path(path)
        assert make_url(url).database == path


def test_the_readonly_store_opens_the_file_in_an_odd_home(tmp_path, env):
    from iwo_lite.store import Store, prepare
    from iwo_lite.store import specs as spec_rows

    home = tmp_path / ODD
    config = load_config(home, environ=env)
    prepare(config.database_url)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ODD]  # nothing outside the home
    assert (home / "iwo.sqlite").is_file()
    with Store.open(config.database_url) as store:
        store.run(spec_rows.queued("odd-1", "Odd", "text"))
    with Store.open_readonly(config.database_url) as store:
        assert [s["id"] for s in store.run(spec_rows.listed())[0]] == ["odd-1"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.conn.execute("DELETE FROM iwo_specs")


# -- 4. bounds on durations and counts -------------------------------------------------------


@pytest.mark.parametrize("text, key", [
    ('[approvals]\ntimeout = "99999999d"\n', "approvals.timeout"),
    ('[approvals]\ntimeout = "366d"\n', "approvals.timeout"),
    ('[approvals]\nremind_every = "9000h"\n', "approvals.remind_every"),
    ('[agent]\ntimeout = 1e12\n', "agent.timeout"),
    ('[agent]\ntimeout = "527041m"\n', "agent.timeout"),
    ('[agent]\ntmux_keep = "1000000000s"\n', "agent.tmux_keep"),
    ('worker_timeout = "400d"\n', "worker_timeout"),
])
def test_a_duration_over_a_year_is_refused_naming_its_key(tmp_path, env, text, key):
    message = config_error(tmp_path / "home", text, env)
    assert f": {key}: expected at most 365d, got " in message, message


def test_a_duration_of_a_year_is_accepted(tmp_path, env):
    write_config(tmp_path / "home", '[approvals]\ntimeout = "365d"\nremind_every = "8760h"\n'
                 '[agent]\ntimeout = 31536000\n')
    config = load_config(tmp_path / "home", environ=env)
    assert config.approvals.timeout == config.approvals.remind_every == config.agent.timeout == 365 * 86400


@pytest.mark.parametrize("text, key", [
    ("[agent]\nmax_concurrent = 1001\n", "agent.max_concurrent"),
    ("[agent]\nretries = 9223372036854775807\n", "agent.retries"),
    ("[agent]\nglobal_max_concurrent = 1000000000\n", "agent.global_max_concurrent"),
    ("[loop]\nmax_rework = 100000\n", "loop.max_rework"),
])
def test_a_count_over_a_thousand_is_refused_naming_its_key(tmp_path, env, text, key):
    message = config_error(tmp_path / "home", text, env)
    assert f": {key}: expected an integer from " in message and " to 1000, got " in message, message


def test_a_count_of_a_thousand_is_accepted(tmp_path, env):
    write_config(tmp_path / "home", "[agent]\nmax_concurrent = 1000\nretries = 1000\nglobal_max_concurrent = 1000\n"
                 "[loop]\nmax_rework = 1000\n")
    config = load_config(tmp_path / "home", environ=env)
    assert (config.agent.max_concurrent, config.agent.retries, config.agent.global_max_concurrent,
            config.loop.max_rework) == (1000, 1000, 1000, 1000)


# -- 5. lone surrogates in an agent's answer -------------------------------------------------


def test_clean_replaces_lone_surrogates_and_keeps_real_characters():
    from iwo_lite.text import clean, clip

    assert clean("cut \ud83d here \udc00 and \udfff") == "cut \ufffd here \ufffd and \ufffd"
    assert clean("a whole emoji 😀, é, tab\tand newline\n") == "a whole emoji 😀, é, tab\tand newline\n"
    assert clean("\x1b[31mred\x1b[0m") == "[31mred[0m"
    clean("\ud800" * 3).encode("utf-8")  # storable
    clip("x\ud800y").encode("utf-8")


def test_an_agent_answer_with_lone_surrogates_is_storable_text():
    from iwo_lite.agents.answer import parse_agent_output
    from iwo_lite.handoff import render_handoff

    verdict = {"verdict": "blocker", "summary": "half an emoji: \ud83d", "question": "go on? \udc00"}
    stdout = json.dumps({  # json escapes the surrogates as \ud83d: valid JSON, as Node prints it
        "type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "total_cost_usd": 0.01,
        "session_id": "session-\ud800",
        "result": "I stopped mid-emoji \ud83d\n```json\n" + json.dumps(verdict) + "\n```\n",
        "permission_denials": [{"tool_name": "Bash\udfff", "tool_input": {"command": "ls \ud800"}}],
    })
    answer = parse_agent_output("reviewer", stdout, 0)
    assert answer.verdict == "blocker"
    for text in (answer.result, answer.summary, answer.question, answer.session_id, answer.error or "",
                 json.dumps(answer.to_json(), ensure_ascii=False)):
        text.encode("utf-8")  # no UnicodeEncodeError: every field can be written and stored
    assert "\ufffd" in answer.result and "\ufffd" in answer.summary and "\ufffd" in answer.question
    render_handoff(spec_id="s", step=3, role="reviewer", answer=answer, attempts=1).encode("utf-8")


# -- 2. the systemd unit (parsed by the rules in tests/test_hardening.py) ---------------------


def test_the_systemd_unit_names_odd_paths_as_systemd_reads_them(tmp_path):
    from iwo_lite.service import systemd_unit
    from test_hardening import parse_unit  # tests/ is on sys.path (conftest.py)

    home = tmp_path / "ho me%h 100%"
    workdir = tmp_path / "work dir%x"
    path_env = "/usr/bin:/opt/a$b:/opt/c d"
    command = ["/usr/bin/python3", "-m", "iwo_lite", "--home", str(home), "run"]
    unit = parse_unit(systemd_unit(command, home, workdir, path_env))
    assert unit["ExecStart"] == [command]
    assert unit["WorkingDirectory"] == [str(workdir)]
    assert unit["EnvironmentFile"] == [("-", str(home / "service.env"))]
    assert {"PATH": path_env, "PYTHONUNBUFFERED": "1"} == dict(item for items in unit["Environment"]
                                                                for item in items)
    assert unit["Description"] == [f"iwo-lite daemon (home {home})"]


def test_a_path_no_systemd_unit_can_name_is_refused(tmp_path):
    from iwo_lite.errors import UserError
    from iwo_lite.service import systemd_unit

    for home in (tmp_path / "line\nbreak", tmp_path / "trailing\\"):
        with pytest.raises(UserError, match="a systemd unit cannot name this path"):
            systemd_unit(["/usr/bin/python3", "run"], home, tmp_path, "/usr/bin")


def test_a_run_s_awake_time_is_the_monotonic_clock_of_its_boot_else_the_wall_clock(tmp_path):
    """agent.timeout counts time the machine was awake: `launch` records the monotonic clock with the
    boot it belongs to; from another boot (or an older launch file) the wall clock is all there is."""
    import os as _os
    import time as _time

    from iwo_lite.runs.journal import RunDir, boot_id, launch_text

    run = RunDir(tmp_path)
    (tmp_path / "launch").write_text(launch_text("2026-12-05T00:00:00.000Z"))
    assert run.awake_since_launch() < 5
    (tmp_path / "launch").write_text(f"x\nmonotonic {_time.monotonic() - 100:.3f} {boot_id() or '-'}\n")
    assert 99 < run.awake_since_launch() < 110  # counted on this boot's monotonic clock
    (tmp_path / "launch").write_text(f"x\nmonotonic {_time.monotonic() - 100:.3f} another-boot\n")
    _os.utime(tmp_path / "launch", (_time.time() - 3600, _time.time() - 3600))
    assert 3590 < run.awake_since_launch() < 3700  # not this boot: the wall clock since the file was written
