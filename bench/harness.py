"""Shared bench helpers: a temporary home with the fake `claude`, the daemon as a process,
and the fake Telegram Bot API from tests/. Stdlib only (plus iwo-lite's own CLI)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fake_claude  # noqa: E402


class BenchHome:
    def __init__(self, label: str, *, env: dict | None = None, config: str = ""):
        self.root = Path(tempfile.mkdtemp(prefix=f"iwo-bench-{label}-"))
        self.log = self.root / "fake.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("IWO_", "FAKE_CLAUDE"))}
        self.env.update(IWO_HOME=str(self.root), FAKE_CLAUDE_LOG=str(self.log),
                        FAKE_CLAUDE_SCENARIO=str(self.root / "scenario.json"), **(env or {}))
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        (self.root / "work").mkdir()
        (self.root / "config.toml").write_text(
            f'workdir = "{self.root / "work"}"\n[agent]\ncommand = {json.dumps(fake_claude.command())}\n'
            f'max_concurrent = 8\nsandbox = "off"  # the fake agent logs into the home, which the sandbox hides\n[approvals]\nremind_every = ""\n{config}\n')
        self.daemon: subprocess.Popen | None = None

    def scenario(self, data: dict) -> None:
        fake_claude.write_scenario(self.root / "scenario.json", data)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "iwo_lite", *args], env=self.env, capture_output=True,
                              text=True, check=True)

    def submit(self, spec_id: str, text: str = "# bench\nbody\n") -> str:
        path = self.root / f"{spec_id}.md"
        path.write_text(text)
        return self.cli("submit", str(path), "--id", spec_id).stdout.strip().splitlines()[-1]

    def start(self) -> subprocess.Popen:
        self.daemon = subprocess.Popen([sys.executable, "-m", "iwo_lite", "run"], env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=open(self.root / "daemon.log", "wb"))
        return self.daemon

    def stop(self) -> None:
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=60)

    def states(self) -> dict[str, str]:
        url = self.env.get("IWO_DATABASE_URL")
        if url:  # a Postgres worker (bench/postgres.py)
            from iwo_lite.store import pg

            conn = pg.connect(url)
            try:
                return dict(conn.execute("SELECT id, state FROM iwo_specs").fetchall()) if pg.has_table(
                    conn, "iwo_specs") else {}
            finally:
                conn.close()
        db = self.root / "iwo.sqlite"
        if not db.exists():
            return {}
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return dict(conn.execute("SELECT id, state FROM iwo_specs").fetchall())
        finally:
            conn.close()

    def wait(self, predicate, timeout: float = 120.0, what: str = "condition"):
        end = time.time() + timeout
        while time.time() < end:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise SystemExit(f"bench: timed out waiting for {what}; see {self.root / 'daemon.log'}")

    def first_start(self, spec: str, role: str) -> float | None:
        for line in fake_claude.read_log(self.log):
            if line["event"] == "start" and line["spec"] == spec and line["role"] == role:
                return line["t"]
        return None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"n": len(values), "median": statistics.median(ordered),
            "p90": ordered[max(0, int(len(ordered) * 0.9) - 1)], "max": ordered[-1]}
