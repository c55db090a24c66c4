"""For the dashboard's tests: a home whose agent prints Claude Code's stream-json, `iwo-lite web` as a
process, a small HTTP client, and Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import wait_for
from test_worktrees import make_home

SCREENSHOTS = Path(os.environ.get("IWO_SCREENSHOTS") or Path(__file__).resolve().parent.parent / "build" / "screenshots")

# A `claude` printing stream-json. The planner asks a question (a blocker) until the prompt carries
# the answer; the builder writes feature.txt and makes three tool calls: Bash, a Write that fails, a Write refused
# (EACCES: denied); each
# role waits for <home>/go-<role> when <home>/hold exists (so a test sees a role running).
WEB_AGENT = r'''#!PYTHON
import json, os, sys, time
prompt = sys.stdin.read()
role = os.environ["IWO_ROLE"]
home = os.environ["WEB_AGENT_DIR"]
with open(os.path.join(home, "agent.log"), "a") as log:
    log.write(role + "\n")
def say(line):
    print(json.dumps(line, separators=(",", ":")), flush=True)
say({"type": "system", "subtype": "init", "session_id": "s-" + role, "tools": ["Bash"], "model": "m"})
say({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Bash",
    "input": {"command": "ls -la <b>here</b>"}}]}})
while os.path.exists(os.path.join(home, "hold")) and not os.path.exists(os.path.join(home, "go-" + role)):
    time.sleep(0.05)
say({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "README.md"}]}})
verdict = {"reviewer": "approve", "tester": "pass"}.get(role, "done")
out = {"verdict": verdict, "summary": role + " did it <script>alert(1)</script>"}
if role == "planner" and "question (" not in prompt:
    out = {"verdict": "blocker", "summary": "one thing to decide", "question": "Greet with <b>hello</b> or hi?"}
if role == "builder":
    open("feature.txt", "w").write("built\nsecond line\n")
    say({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t2", "name": "Write",
        "input": {"file_path": "/etc/passwd"}}]}})
    say({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t2", "is_error": True,
        "content": "File has not been read yet. Read it first before writing to it."}]}})
    say({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t3", "name": "Write",
        "input": {"file_path": "/etc/hosts"}}]}})
    say({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t3", "is_error": True,
        "content": "EACCES: permission denied, open '/etc/hosts'"}]}})
say({"type": "result", "subtype": "success", "is_error": False, "result": "ok", "session_id": "s-" + role,
     "total_cost_usd": 0.0125, "num_turns": 2, "structured_output": out})
'''


def web_home(tmp_path: Path, name: str = "home", extra: str = ""):
    """A worktree home whose agent is WEB_AGENT (its log: <home>/agent.log); `extra`: config sections."""
    home, work = make_home(tmp_path, name, top='workspace = "worktree"')
    agent = tmp_path / f"bin-{name}" / "claude"
    agent.parent.mkdir()
    agent.write_text(WEB_AGENT.replace("#!PYTHON", "#!" + sys.executable))
    agent.chmod(0o755)
    config = (home.root / "config.toml").read_text()
    start = config.index("command = ")
    end = config.index("\n", start)
    (home.root / "config.toml").write_text(config[:start] + f"command = {json.dumps([str(agent)])}" + config[end:]
                                           + "\n" + extra)
    home.env["WEB_AGENT_DIR"] = str(home.root)
    return home, work


def agent_runs(home, role: str | None = None) -> list[str]:
    path = home.root / "agent.log"
    runs = path.read_text().split() if path.exists() else []
    return [r for r in runs if role is None or r == role]


class WebServer:
    """`iwo-lite web --port 0` as a process; `url` is the first line it printed."""

    def __init__(self, home, *args: str):
        self.home = home
        self.proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", "web", "--port", "0", *args], env=home.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise AssertionError(f"iwo-lite web printed {self.url!r}: {self.proc.stderr.read()}")
        self.base = self.url.split("/?token=")[0]
        self.token = self.url.split("?token=")[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def call(base: str, path: str, *, token: str | None = None, method: str = "GET", body=None,
         headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict, str]:
    """(status, headers, text) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None and not (headers and "Content-Type" in headers):
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (pinned). Under CI=true a missing Chromium fails.

    Module-scoped, not session: Playwright's sync API runs an event loop in this thread while it is
    open, and every later test on the worker that calls asyncio.run() would fail. The module's
    tests run on one worker, one after the other (tests/conftest.py groups them), so it starts once."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/setup.sh installs it): the browser tests must run in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


__all__ = ["WebServer", "agent_runs", "browser", "call", "screenshot", "wait_for", "web_home"]
