"""The dashboard's JSON API and its rules, from outside: `iwo-lite web` as a process, plain HTTP.

Every answer of the contract (200 / 400 / 401 / 404 / 409, one-line JSON errors), the token (0600,
stable), CSRF, no change on a GET, no secret in any answer, the same data as `status --json`,
the daemon serving it with [web] enabled, and a gate answered on the page while the daemon is dead."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.parse

import pytest

from web_helpers import WebServer, agent_runs, call, wait_for, web_home

SECRET = "123456:SECRET-BOT-TOKEN-never-shown"


def _json(status_headers_text):
    status, _, text = status_headers_text
    return status, json.loads(text)


def test_every_answer_of_the_api(tmp_path):
    home, _ = web_home(tmp_path, extra='[telegram]\ntoken_env = "WEB_TEST_BOT"\n')
    home.env["WEB_TEST_BOT"] = SECRET
    web = WebServer(home)
    bodies: list[str] = []

    def api(path, **options):
        answer = call(web.base, path, token=web.token, **options)
        bodies.append(answer[2])
        return answer

    try:
        token_file = home.root / "web-token"
        assert token_file.stat().st_mode & 0o777 == 0o600 and token_file.read_text().strip() == web.token
        # 401: no token, a wrong one, on the API and the pages
        for path in ("/api/specs", "/api/board", "/api/specs/x", "/", "/spec/x"):
            assert call(web.base, path)[0] == 401
            assert call(web.base, path, token="wrong" * 8)[0] == 401
        status, body = _json(call(web.base, "/api/specs"))
        assert status == 401 and "token" in body["error"] and "\n" not in body["error"]
        assert call(web.base, "/?token=" + "x" * 32)[0] == 401
        assert call(web.base, "/api/specs", method="POST", body={"text": "# T\n"})[0] == 401
        # the printed URL: the token becomes a cookie (HttpOnly, SameSite=Strict) and leaves the address bar
        status, headers, _ = call(web.base, "/?token=" + web.token)
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert call(web.base, "/api/specs", headers={"Cookie": cookie.split(";")[0]})[0] == 200
        assert "script-src 'self'" in call(web.base, "/", token=web.token)[1]["Content-Security-Policy"]

        # submit: 400 for bad bodies, 200, then 409 for the same id
        assert api("/api/specs", method="POST", raw=b"{not json")[0] == 400
        assert api("/api/specs", method="POST", raw=b"[1, 2]")[0] == 400
        for bad in ({}, {"text": ""}, {"text": 5}, {"text": "# T\n", "id": "no spaces allowed"},
                    {"text": "# T\n", "id": 7}):
            status, body = _json(api("/api/specs", method="POST", body=bad))
            assert status == 400 and body["error"] and "\n" not in body["error"], (bad, body)
        # CSRF: another origin's POST, or a form's content type, changes nothing
        evil = {"Origin": "http://evil.example", "Content-Type": "application/json"}
        assert api("/api/specs", method="POST", body={"text": "# Evil\n"}, headers=evil)[0] == 403
        form = {"Content-Type": "text/plain"}
        assert api("/api/specs", method="POST", raw=b'{"text": "# Evil\\n"}', headers=form)[0] == 400
        assert json.loads(api("/api/specs")[2]) == []
        status, body = _json(api("/api/specs", method="POST", body={"text": "# Greet\nSay hello.\n", "id": "greet"},
                                 headers={"Origin": web.base}))
        assert status == 200 and body["spec_id"] == "greet"
        assert _json(api("/api/specs", method="POST", body={"text": "# Greet\nSay hello.\n", "id": "greet"}))[0] == 409

        # 404: unknown ids, dispatches, actions and paths
        for path in ("/api/specs/nope", "/api/specs/nope/diff", "/api/specs/nope/events",
                     "/api/specs/nope/dispatches/1", "/api/specs/greet/dispatches/7", "/api/whatever"):
            status, body = _json(api(path))
            assert status == 404 and body["error"], path
        assert api("/api/specs/nope/approve", method="POST", body={})[0] == 404
        assert api("/api/specs/greet/explode", method="POST", body={})[0] == 404
        # 409 / 400 on a queued spec
        assert _json(api("/api/specs/greet/approve", method="POST", body={}))[0] == 409
        assert _json(api("/api/specs/greet/revise", method="POST", body={}))[0] == 400
        assert _json(api("/api/specs/greet/fork", method="POST", body={"from": "chef"}))[0] == 400
        assert _json(api("/api/specs/greet/fork", method="POST", body={"from": "builder"}))[0] == 409
        assert _json(api("/api/specs/greet/resume", method="POST", body={}))[0] == 409
        # every query parameter of the wrong kind: 400, one line naming it (never ignored)
        for path, name in (("/api/specs/greet/events?dispatch=x", "dispatch"), ("/api/specs/greet/diff?dispatch=-1", "dispatch"),
                           ("/api/specs/greet/events?dispatch=1&attempt=x", "attempt"),
                           ("/api/specs/greet/diff?stat=maybe", "stat"), ("/api/specs/greet/dispatches/x", "dispatch"),
                           ("/api/specs?since=garbage", "since"), ("/api/board?since=2026-13-45", "since"),
                           ("/api/specs/greet/diff?dispatch=%C2%B2", "dispatch"),  # a digit to str.isdigit only
                           ("/api/specs/greet/dispatches/%C2%B2", "dispatch"),
                           ("/api/specs/greet/events?dispatch=1&attempt=%D9%A3", "attempt")):
            status, body = _json(api(path))
            assert status == 400 and body["error"].startswith(name + ":") and "\n" not in body["error"], (path, body)
        # a GET changes nothing
        assert api("/api/specs/greet/cancel")[0] in (404, 405)
        assert home.state("greet") == "queued"

        # the daemon runs it to the planner's question: the API gives what status --json gives
        home.start()
        home.wait_state("greet", "waiting")
        # the same data as status --json (read again while the gate's last steps still touch updated_at)
        wait_for(lambda: json.loads(api("/api/specs")[2]) == json.loads(home.cli("status", "--json").stdout), 15)
        wait_for(lambda: json.loads(api("/api/specs/greet")[2])
                 == json.loads(home.cli("status", "greet", "--json").stdout)[0], 15)
        one = json.loads(api("/api/specs/greet")[2])
        assert one["steps"][0]["attempts"][0]["tools"]["calls"] == 1
        assert _json(api("/api/specs/greet/approve", method="POST", body={"note": "hello"}))[0] == 200
        status, body = _json(api("/api/specs/greet/approve", method="POST", body={"note": "again"}))
        assert status == 409 and body["error"]
        home.wait_state("greet", "done")

        status, headers, diff = api("/api/specs/greet/diff")
        assert status == 200 and headers["Content-Type"].startswith("text/plain") and "+built" in diff
        assert "+built" in api("/api/specs/greet/diff?dispatch=2")[2]
        assert "feature.txt" in api("/api/specs/greet/diff?stat=1")[2]
        assert api("/api/specs/greet/diff?dispatch=99")[0] == 404
        # ?since= in any ISO 8601 form compares as a moment, not as text (a done spec: only its update counts)
        updated = datetime.datetime.fromisoformat(json.loads(api("/api/specs/greet")[2])["updated_at"])
        zone = datetime.timezone(datetime.timedelta(hours=1))
        for moment, listed in ((updated - datetime.timedelta(seconds=1), True), (updated + datetime.timedelta(seconds=1), False)):
            for text in (moment.astimezone(zone).isoformat(), moment.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat()):
                ids = [spec["id"] for spec in json.loads(api("/api/specs?since=" + urllib.parse.quote(text))[2])]
                assert ("greet" in ids) == listed, (text, ids)
        events = json.loads(api("/api/specs/greet/events?dispatch=2")[2])
        assert events["role"] == "builder" and [e["status"] for e in events["events"]] == ["ok", "failed", "denied"]
        dispatch = json.loads(api("/api/specs/greet/dispatches/2")[2])
        assert dispatch["prompt"].startswith("You are the builder") and "&lt;script&gt;" in dispatch["handoff_html"]
        costs = json.loads(api("/api/costs")[2])
        assert costs["total_usd"] == pytest.approx(0.075) and costs["days"][-1]["usd"] == pytest.approx(0.075)
        assert {r["role"] for r in costs["roles"]} == {"planner", "builder", "reviewer", "tester", "deployer", "docs"}
        assert _json(api("/api/specs/greet/cancel", method="POST", body={}))[0] == 409
        assert _json(api("/api/specs/greet/approve", method="POST", body={}))[0] == 409
        # fork from the tester: a new spec, run by the daemon
        status, body = _json(api("/api/specs/greet/fork", method="POST", body={"from": "tester"}))
        assert status == 200 and body["new_id"] != "greet"
        assert home.wait_state(body["new_id"], "done", "failed") == "done"
        assert agent_runs(home).count("builder") == 1  # the fork replayed the builder's checkpoint
        assert not any(SECRET in text for text in bodies)
    finally:
        web.stop()
        home.cleanup()

    again = WebServer(home)  # the token is the home's: the same after a restart
    try:
        assert again.token == web.token
    finally:
        again.stop()


def test_cancel_and_resume_from_the_api(tmp_path):
    home, _ = web_home(tmp_path)
    (home.root / "hold").write_text("")
    web = WebServer(home)
    try:
        home.submit(home.spec_file("s.md", "# Hold\nbody\n"), "held")
        home.start()
        home.wait_state("held", "running")
        status, body = _json(call(web.base, "/api/specs/held/cancel", method="POST", body={}, token=web.token))
        assert status == 200 and "held" in body["output"]
        assert home.state("held") == "cancelled"
        assert _json(call(web.base, "/api/specs/held/cancel", method="POST", body={}, token=web.token))[0] == 409
        (home.root / "hold").unlink()
        assert _json(call(web.base, "/api/specs/held/resume", method="POST", body={}, token=web.token))[0] == 200
        assert home.wait_state("held", "waiting", "done") == "waiting"  # the planner's question
    finally:
        web.stop()
        home.cleanup()


def test_the_daemon_serves_the_dashboard_and_a_gate_answered_there_while_it_is_dead(tmp_path):
    home, _ = web_home(tmp_path, extra="[web]\nenabled = true\nport = 0\n")
    try:
        home.submit(home.spec_file("s.md", "# Greet\nbody\n"), "greet")
        daemon = home.start()
        url = wait_for(lambda: next((line for line in daemon.log().splitlines() if line.startswith("http://")), None),
                       30, "the daemon printing the dashboard's URL")
        base, token = url.split("/?token=")
        home.wait_state("greet", "waiting")
        assert json.loads(call(base, "/api/specs", token=token)[2])[0]["state"] == "waiting"
        # a submit through the daemon's own web server, then one from the shell: both run (a submit in
        # the daemon's process once dropped the process's SQLite locks, and the daemon saw no new row)
        assert _json(call(base, "/api/specs", method="POST", body={"text": "# Two\nbody\n", "id": "two"},
                          token=token))[0] == 200
        three = home.submit(home.spec_file("three.md", "# Three\nbody\n"), "three")
        assert home.wait_state("two", "waiting") == "waiting" and home.wait_state(three, "waiting") == "waiting"
        daemon.kill9()
        # the daemon is dead: `iwo-lite web` says so, and takes the answer
        web = WebServer(home)
        try:
            assert web.token == token
            status, body = _json(call(web.base, "/api/daemon", token=token))
            assert body["running"] is False and body["ok"] is False and "NOT RUNNING" in body["line"]
            assert _json(call(web.base, "/api/specs/greet/approve", method="POST", body={}, token=token))[0] == 200
        finally:
            web.stop()
        home.start()
        assert home.wait_state("greet", "done", "failed") == "done"
        assert agent_runs(home).count("planner") == 3 and agent_runs(home).count("builder") == 1
    finally:
        home.cleanup()


def test_bad_web_settings_are_one_line_errors(tmp_path):
    home, _ = web_home(tmp_path)
    for args in (["--port", "70000"], ["--port", "-1"], ["--host", "http://x:80"]):
        done = home.cli("web", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    config = home.root / "config.toml"
    text = config.read_text()
    for bad, key in (('port = "x"', "port"), ("enabled = 1", "enabled"), ('host = ""', "host")):
        config.write_text(text + f"\n[web]\n{bad}\n")
        done = home.cli("web")
        assert done.returncode == 2 and "web" in done.stderr and key in done.stderr and "Traceback" not in done.stderr
    config.write_text(text)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = home.cli("web", "--port", str(taken.getsockname()[1]))
        assert done.returncode == 2 and "in use" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # anything but loopback: a warning, and still the token on every request
    proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", "web", "--port", "0", "--host", "0.0.0.0"],
                            env=home.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://0.0.0.0:")
        port = url.split(":")[2].split("/")[0]
        assert call(f"http://127.0.0.1:{port}", "/api/specs")[0] == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert "warning" in err and "0.0.0.0" in err
    assert proc.returncode == 0
    assert os.stat(home.root / "web-token").st_mode & 0o777 == 0o600
