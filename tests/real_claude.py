"""Helpers for tests that run the REAL Claude Code CLI against tests/fake_anthropic.py.

The CLI comes from npm (`.ci/claude.sh` installs the pinned version and prints
`export IWO_TEST_CLAUDE=<path>`). Without it the tests that need it are skipped, saying why —
except under CI (CI=true), where they fail: CI must never skip them silently.

Nothing here talks to a real Anthropic host: `offline_env()` points the CLI at the fake, gives it
a scratch HOME, and routes any other traffic to a closed local port.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
PINNED_VERSION = "2.1.197"
CI_BINARY = CHECKOUT / ".ci" / "claude-code" / "node_modules" / ".bin" / "claude"
CI_NATIVE = CHECKOUT / ".ci" / "claude-code" / "node_modules" / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
CLOSED_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens there, so egress fails fast
API_KEY = "sk-ant-test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _works(path: Path) -> bool:
    """The npm stub left when the install script did not run is a tiny file, not the binary."""
    return path.is_file() and os.access(path, os.X_OK) and path.stat().st_size > 1_000_000


def claude_path() -> str | None:
    """$IWO_TEST_CLAUDE, else the checkout's `.ci/claude-code` install, else None."""
    env = os.environ.get("IWO_TEST_CLAUDE", "")
    if env:
        return env
    for candidate in (CI_BINARY, CI_NATIVE):
        if _works(candidate.resolve() if candidate.exists() else candidate):
            return str(candidate)
    return None


def require_claude() -> str:
    """The CLI's path, or skip the test saying how to get it (under CI=true: fail)."""
    path = claude_path()
    if path and Path(path).exists():
        return path
    if path:
        message = f"IWO_TEST_CLAUDE={path} does not exist: run `eval \"$(bash .ci/claude.sh)\"`"
    else:
        message = ("the real Claude Code CLI is not installed: run `eval \"$(bash .ci/claude.sh)\"` "
                   "(installs @anthropic-ai/claude-code@" + PINNED_VERSION + " and sets IWO_TEST_CLAUDE)")
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def claude_bin() -> str:
    return require_claude()


def offline_env(base_url: str, home_dir: str | os.PathLike, **extra: str | None) -> dict[str, str]:
    """The environment for an offline CLI run: this process's environment minus every
    ANTHROPIC_* / CLAUDE_* variable, then the fake's URL, a test API key, a scratch HOME,
    no telemetry/updates/nonessential traffic, proxies at a closed port (except for
    127.0.0.1). `extra` is applied last; a value of None
    removes that variable (e.g. ANTHROPIC_API_KEY=None with CLAUDE_CODE_OAUTH_TOKEN=...)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_", "CLAUDECODE")) and k not in ("IWO_TEST_CLAUDE",)}
    for key in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy",
                "NO_PROXY", "no_proxy"):
        env.pop(key, None)
    home = Path(home_dir)
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY=API_KEY,
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        HTTPS_PROXY=CLOSED_PROXY,
        HTTP_PROXY=CLOSED_PROXY,
        https_proxy=CLOSED_PROXY,
        http_proxy=CLOSED_PROXY,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.pop("IS_SANDBOX", None)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


class Run:
    """One finished CLI run: exit code, stdout, stderr, wall time, and parsed output."""

    def __init__(self, proc: subprocess.CompletedProcess, seconds: float):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.seconds = seconds

    @property
    def lines(self) -> list[dict]:
        """stdout as JSON lines (stream-json), unparsable lines skipped."""
        out = []
        for line in self.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    @property
    def result(self) -> dict:
        """The `result` object (the last `type: result` line; with --output-format json, stdout)."""
        for line in reversed(self.lines):
            if line.get("type") == "result":
                return line
        raise AssertionError(f"no result object (exit {self.code}):\nstdout: {self.stdout[-2000:]}\n"
                             f"stderr: {self.stderr[-2000:]}")

    def __repr__(self) -> str:
        return f"Run(code={self.code}, {self.seconds:.1f}s, stdout={self.stdout[-500:]!r}, stderr={self.stderr[-500:]!r})"


def run_claude(claude: str, args: list[str], *, prompt: str = "You are the builder. Do the job.",
               env: dict[str, str], cwd: str | os.PathLike, timeout: float = 120) -> Run:
    """`claude <args>` with the prompt on stdin; waits for it (killing it after `timeout`)."""
    start = time.time()
    proc = subprocess.run([claude, *args], input=prompt, env=env, cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout)
    return Run(proc, time.time() - start)
