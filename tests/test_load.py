"""Load: many specs through the loop with an instant agent while another process keeps reading.

40 specs (240 dispatches) with a shell-script agent that answers at once, while a second
process runs `iwo-lite status` / `status --json` in a loop, as a user watching would. Every
spec must finish with each role called exactly once, and "database is locked" must appear
nowhere: not in the daemon's log, not on the readers' stderr. (bench/throughput.py is the
same at 200 specs, timed.)
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import wait_for

SPECS = 40

# Prints Claude Code's JSON result with the role's passing verdict; logs "<spec> <role> <attempt>".
INSTANT_AGENT = r"""#!/bin/sh
case "$IWO_ROLE" in reviewer) v=approve ;; tester) v=pass ;; *) v=done ;; esac
echo "$IWO_SPEC_ID $IWO_ROLE $IWO_ATTEMPT" >> "{log}"
printf '{{"type":"result","subtype":"success","is_error":false,"num_turns":1,"session_id":"instant","total_cost_usd":0.001,"result":"```json\\n{{\\"verdict\\": \\"%s\\", \\"summary\\": \\"instant\\"}}\\n```"}}\n' "$v"
"""


def write_instant_agent(folder: Path, log: Path) -> Path:
    path = folder / "instant-agent.sh"
    path.write_text(INSTANT_AGENT.format(log=log))
    path.chmod(0o755)
    return path


class StatusReader(threading.Thread):
    """Runs `iwo-lite status` (alternating with --json) in a loop until stopped."""

    def __init__(self, home):
        super().__init__(daemon=True)
        self.home = home
        self.stop = threading.Event()
        self.runs: list[tuple[int, str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            args = ("status", "--json") if len(self.runs) % 2 else ("status",)
            proc = subprocess.run([sys.executable, "-m", "iwo_lite", *args], env=self.home.env,
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            self.runs.append((proc.returncode, proc.stderr))


def test_40_specs_with_an_instant_agent_while_status_reads_in_a_loop(home):
    agent_log = home.root / "instant.log"
    agent = write_instant_agent(home.root, agent_log)
    home.configure(max_concurrent=4)
    config = home.root / "config.toml"
    config.write_text(re.sub(r"command = .*", f'command = ["{agent}"]', config.read_text()))
    ids = [home.submit(home.spec_file(f"load-{i:03d}.md", f"# Load {i}\nspec number {i}\n")) for i in range(SPECS)]
    reader = StatusReader(home)
    reader.start()
    daemon = home.start()
    started = time.time()
    try:
        wait_for(lambda: all(s["state"] == "done" for s in home.specs()), 180,
                 lambda: f"states: {collections.Counter(s['state'] for s in home.specs())}\n{home.daemon_logs()}",
                 interval=0.5)
    finally:
        reader.stop.set()
        reader.join(timeout=120)
    elapsed = time.time() - started
    calls = collections.Counter(tuple(line.split()[:2]) for line in agent_log.read_text().splitlines())
    assert len(calls) == SPECS * 6 and set(calls.values()) == {1}, [c for c, n in calls.items() if n != 1]
    assert {spec for spec, _ in calls} == set(ids)
    for spec in home.specs():
        assert spec["dispatches"] == 6 and spec["step"] == 6, spec
    assert len(reader.runs) >= 5, "the status reader barely ran"
    bad_reads = [(code, err) for code, err in reader.runs if code != 0 or err.strip()]
    assert not bad_reads, bad_reads[:3]
    log = daemon.log()
    assert "database is locked" not in log and "Traceback" not in log, log[-3000:]
    assert home.query("PRAGMA integrity_check") == [("ok",)]
    print(f"{SPECS * 6} dispatches in {elapsed:.1f}s with {len(reader.runs)} status reads alongside")
