"""Helpers for tests that run the REAL Codex CLI against tests/fake_openai.py.

The CLI comes from npm (`.ci/codex.sh` installs the pinned version and prints
`export IWO_TEST_CODEX=<native binary>`). Without it the tests that need it are skipped, saying
why — except under CI (CI=true), where they fail.

Nothing here talks to a real OpenAI host: `codex_home()` writes a CODEX_HOME whose only model
provider is the fake (a custom provider speaks plain HTTP + SSE), and `offline_env()` sends any
other traffic to a closed local port. CODEX_HOME must not lie under $TMPDIR (/tmp): Codex then
refuses to install its sandbox helper and every sandboxed command fails without an event. So
the homes live under the checkout's ignored `.ci/codex/homes/`, not under pytest's tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
PINNED_VERSION = "0.169.0"
CI_NATIVE = (CHECKOUT / ".ci" / "codex" / "node_modules" / "@openai" / "codex-linux-x64" / "vendor"
             / "x86_64-unknown-linux-musl" / "bin" / "codex")
HOMES = CHECKOUT / ".ci" / "codex" / "homes"
CLOSED_PROXY = "http://127.0.0.1:9"
KEY_VAR = "FAKE_OPENAI_KEY"
MODEL = "gpt-5.5"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def codex_path() -> str | None:
    env = os.environ.get("IWO_TEST_CODEX", "")
    if env:
        return env
    return str(CI_NATIVE) if CI_NATIVE.is_file() else None


def require_codex() -> str:
    """The native binary's path, or skip saying how to get it (under CI=true: fail)."""
    path = codex_path()
    if path and Path(path).exists():
        return path
    message = ("the real Codex CLI is not installed: run `eval \"$(bash .ci/codex.sh)\"` (installs @openai/codex@"
               + PINNED_VERSION + " and sets IWO_TEST_CODEX)")
    if path:
        message = f"IWO_TEST_CODEX={path} does not exist: run `eval \"$(bash .ci/codex.sh)\"`"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def new_codex_home(base_url: str, **provider: object) -> Path:
    """A fresh CODEX_HOME (outside $TMPDIR) whose model provider is the fake at `base_url`;
    `provider` adds keys to [model_providers.fake] (request_max_retries, stream_idle_timeout_ms, ...)."""
    home = HOMES / uuid.uuid4().hex[:12]
    tmp = os.path.realpath(os.environ.get("TMPDIR") or "/tmp")
    assert not os.path.realpath(HOMES).startswith(tmp.rstrip("/") + "/"), (
        f"the checkout lies under $TMPDIR ({tmp}): a CODEX_HOME there breaks Codex's sandbox; set TMPDIR elsewhere")
    home.mkdir(parents=True, mode=0o700)
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in provider.items())
    home.joinpath("config.toml").write_text(
        f'model = "{MODEL}"\nmodel_provider = "fake"\ncheck_for_update_on_startup = false\n\n'
        f'[model_providers.fake]\nname = "fake"\nbase_url = "{base_url}/v1"\nenv_key = "{KEY_VAR}"\n'
        f'wire_api = "responses"\n{extra}\n'
        '[analytics]\nenabled = false\n\n[feedback]\nenabled = false\n\n[otel]\nexporter = "none"\n')
    return home


def remove_codex_home(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)


def offline_env(codex_home: Path, base: dict[str, str] | None = None, **extra: str | None) -> dict[str, str]:
    """`base` (default: this process's environment) without OPENAI_* / CODEX_* variables, with
    CODEX_HOME, the fake's key, and every proxy at a closed port except for 127.0.0.1."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith(("OPENAI_", "CODEX_")) and k != "IWO_TEST_CODEX"}
    env.update(CODEX_HOME=str(codex_home), **{KEY_VAR: "sk-fake-test"}, HTTPS_PROXY=CLOSED_PROXY,
               HTTP_PROXY=CLOSED_PROXY, https_proxy=CLOSED_PROXY, http_proxy=CLOSED_PROXY,
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Run:
    """One finished `codex exec --json` run."""

    def __init__(self, proc: subprocess.CompletedProcess, seconds: float):
        self.code, self.stdout, self.stderr, self.seconds = proc.returncode, proc.stdout, proc.stderr, seconds

    @property
    def events(self) -> list[dict]:
        out = []
        for line in self.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def thread_id(self) -> str | None:
        started = self.of("thread.started")
        return started[0]["thread_id"] if started else None

    def __repr__(self) -> str:
        return f"Run(code={self.code}, {self.seconds:.1f}s, stdout={self.stdout[-800:]!r}, stderr={self.stderr[-400:]!r})"


def run_codex(codex: str, args: list[str], *, env: dict[str, str], cwd: str | os.PathLike,
              prompt: str = "You are the builder. Do the job.", timeout: float = 120) -> Run:
    start = time.time()
    proc = subprocess.run([codex, *args], input=prompt, env=env, cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout)
    return Run(proc, time.time() - start)
