"""The dashboard's pure parts: Markdown that never becomes markup, refusals as HTTP statuses, the
token file, loopback, the [web] keys."""

from __future__ import annotations

import pytest

from iwo_lite.config import ConfigError, load_config
from iwo_lite.web import actions, data, server


def test_a_handoff_s_markdown_never_carries_markup_or_script_links():
    html = data.markdown_html("# Done\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
                              "[x](javascript:alert(1)) [y](https://example.com) **bold**\n")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript:' not in html and 'href="https://example.com"' in html
    assert "<strong>bold</strong>" in html and "<h1>Done</h1>" in html


@pytest.mark.parametrize("message, status", [
    ("greet: no such spec", 404),
    ("greet: --dispatch 09: no such dispatch", 404),
    ("greet: not waiting for an answer (state queued)", 409),
    ("gate greet#01 was already answered: approve by me via cli", 409),
    ("greet: already done; nothing to cancel", 409),
    ("greet: is done; only a cancelled or failed spec can be resumed", 409),
    ("greet: the builder has not run yet; nothing to fork from", 409),
    ("--from 'chef': expected one of planner, builder", 400),
    ("greet: revise needs the instructions for the builder: -m TEXT", 400),
])
def test_a_refusal_s_http_status(message, status):
    assert actions.status_of(message) == status


def test_the_token_is_made_once_0600_and_kept(tmp_path):
    config = load_config(tmp_path / "home", None, environ={})
    first = server.load_token(config)
    path = server.token_path(config)
    assert path.stat().st_mode & 0o777 == 0o600 and len(first) >= 32
    path.chmod(0o644)
    assert server.load_token(config) == first and path.stat().st_mode & 0o777 == 0o600
    path.write_text("short\n")
    with pytest.raises(Exception, match="web-token"):
        server.load_token(config)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.1.2.3", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.5", False), ("example.com", False)])
def test_loopback(host, loopback):
    assert server.is_loopback(host) is loopback


def test_the_url_printed():
    assert server.url_of("127.0.0.1", 8765, "T") == "http://127.0.0.1:8765/?token=T"
    assert server.url_of("::1", 80, "T") == "http://[::1]:80/?token=T"


def test_the_web_keys(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    config = load_config(home, None, environ={})
    assert (config.web.host, config.web.port, config.web.enabled) == ("127.0.0.1", 8765, False)
    for bad, key in (('port = "8765"', "web.port"), ("port = 70000", "web.port"), ("enabled = 1", "web.enabled"),
                     ('host = "http://x"', "web.host"), ("colour = 1", "web.colour")):
        (home / "config.toml").write_text(f"[web]\n{bad}\n")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(home, None, environ={})


def test_the_web_process_never_imports_dbos(tmp_path):
    """`iwo-lite web` runs beside a daemon or without one, fast: its modules, and what they do on a
    request (every read; an answer, a submit), leave DBOS unimported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from iwo_lite.config import load_config\n"
        "from iwo_lite.web import server, data, actions\n"
        f"config = load_config(__import__('pathlib').Path({str(tmp_path / 'home')!r}), None, environ={{}})\n"
        "server.make_app(config, 'x' * 32)\n"
        "actions.submit(config, {'text': '# T\\nbody\\n', 'id': 't'})\n"
        "data.board(config); data.spec(config, 't'); data.events(config, 't'); data.costs(config)\n"
        "data.fingerprint(config)\n"
        "try:\n    actions.act(config, 't', 'approve', {})\nexcept actions.ActionError as e:\n    assert e.status == 409\n"
        "assert 'dbos' not in sys.modules, sorted(m for m in sys.modules if 'dbos' in m)[:3]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_unforeseen_error_in_an_api_handler_is_a_one_line_json_500(caplog):
    """web.server.api: not aiohttp's text/plain 500 page, and nothing of the exception's text (it may
    hold a path or a secret) beyond its type; the traceback goes to the log."""
    import asyncio
    import json

    from aiohttp.test_utils import make_mocked_request

    from iwo_lite.web import server

    @server.api
    async def broken(request):
        raise RuntimeError("/home/u/.secret\nsecond line")

    response = asyncio.run(broken(make_mocked_request("GET", "/api/specs/x")))
    assert response.status == 500 and response.content_type == "application/json"
    error = json.loads(response.text)["error"]
    assert error.startswith("/api/specs/x: failed (RuntimeError)") and "secret" not in response.text
    assert "RuntimeError" in caplog.text
