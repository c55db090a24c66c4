"""The daemon idling: CPU with nothing to do and with 50 open gates, and how fast a submit (or a
file dropped into the inbox) reaches its first agent when the daemon is idle.

Baseline in the same run: a bare asyncio loop that wakes once a second (a Python process doing
nothing else), measured the same way (user + system CPU from /proc over the same window). The
daemon is measured in its steady state, from 25 s after its specs reached their gates (for its
first 20 s DBOS's internal queue polls every second: the launch's recovery goes through it); and a
daemon just started on an empty home, over its first 3 s.

    python bench/idle.py [--seconds 30] [--gates 50] [--rounds 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from harness import BenchHome, cpu_seconds, summary

BARE_LOOP = "import asyncio\nasync def main():\n    while True:\n        await asyncio.sleep(1)\nasyncio.run(main())\n"


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core `pid` used over `seconds`."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


def bare_loop(seconds: float) -> float:
    proc = subprocess.Popen([sys.executable, "-c", BARE_LOOP])
    try:
        time.sleep(2)
        return cpu_share(proc.pid, seconds)
    finally:
        proc.kill()
        proc.wait()


TELEGRAM_DOWN = ('[telegram]\nallowed_chat_ids = [1]\nbase_url = "http://127.0.0.1:9/bot"\n',
                 {"IWO_TELEGRAM_TOKEN": "123:bench"})  # a bot configured, Telegram unreachable (nothing on port 9)


def idle_daemon(seconds: float, gates: int, telegram_down: bool = False) -> float:
    config, env = TELEGRAM_DOWN if telegram_down else ("", None)
    home = BenchHome(f"idle{gates}", config=config, env=env)
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Go?"}]}})
    for index in range(gates):
        home.submit(f"gate-{index}")
    daemon = home.start()
    try:
        home.wait(lambda: list(home.states().values()).count("waiting") == gates, 300, f"{gates} gates")
        time.sleep(25)  # past start-up: DBOS's internal queue polls every second for its first 20 s (recovery)
        return cpu_share(daemon.pid, seconds)
    finally:
        home.stop()


def wait_running(home: BenchHome) -> None:
    """Until the daemon holds its lock and has logged "daemon running"."""
    home.wait(lambda: (home.root / "daemon.lock").exists() and "daemon running" in
              (home.root / "daemon.log").read_text(errors="replace"), 60, "daemon running")


def just_started(seconds: float = 3.0) -> float:
    """A daemon on an empty home, over its first `seconds` after it logs "daemon running" (DBOS's
    internal queue polls fast then only when launch found something to recover)."""
    home = BenchHome("started")
    daemon = home.start()
    try:
        wait_running(home)
        return cpu_share(daemon.pid, seconds)
    finally:
        home.stop()


def submit_to_first_agent(rounds: int) -> dict:
    """From `iwo-lite submit` starting (process start) and from a file dropped into the inbox, to
    the fake agent's "start" line, with the daemon idle between rounds."""
    home = BenchHome("submit")
    home.scenario({})
    daemon = home.start()
    shell, inbox = [], []
    try:
        wait_running(home)
        time.sleep(2)
        for index in range(rounds):
            spec = f"s-{index}"
            path = home.root / f"{spec}.md"
            path.write_text(f"# bench {index}\nbody\n")
            begin = time.time()
            subprocess.run([sys.executable, "-m", "iwo_lite", "submit", str(path), "--id", spec], env=home.env,
                           check=True, capture_output=True)
            started = home.wait(lambda: home.first_start(spec, "planner"), 60, f"{spec} planner")
            shell.append(started - begin)
            home.wait(lambda: home.states().get(spec) == "done", 60, f"{spec} done")
            time.sleep(1.5)
            drop = home.root / f"drop-{index}.md"
            drop.write_text(f"# dropped {index}\nbody\n")
            begin = time.time()
            drop.rename(home.root / "inbox" / drop.name)
            started = home.wait(lambda: next((line["t"] for line in __import__("fake_claude").read_log(home.log)
                                              if line["event"] == "start" and line["spec"].startswith(f"drop-{index}-")),
                                             None), 60, f"drop {index}")
            inbox.append(started - begin)
            time.sleep(1.5)
    finally:
        home.stop()
    _ = daemon
    return {"submit": summary(shell), "inbox": summary(inbox)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--gates", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    bare = bare_loop(args.seconds)
    print(f"bare asyncio loop (1 s timer): {bare * 100:.2f}% of a core (baseline)")
    started = [just_started() for _ in range(3)]
    print(f"a daemon just started, empty home, its first 3 s: {min(started) * 100:.2f}-{max(started) * 100:.2f}% "
          f"of a core (3 starts)")
    for gates in (0, args.gates):
        share = idle_daemon(args.seconds, gates)
        print(f"idle daemon, {gates} open gates: {share * 100:.2f}% of a core "
              f"(+{(share - bare) * 100:.2f} points over the baseline)")
    share = idle_daemon(args.seconds, 0, telegram_down=True)
    print(f"idle daemon, 0 open gates, Telegram configured but unreachable: {share * 100:.2f}% of a core "
          f"(+{(share - bare) * 100:.2f} points over the baseline)")
    latency = submit_to_first_agent(args.rounds)
    for name, figures in latency.items():
        print(f"{name} -> first agent: median {figures['median'] * 1000:.0f} ms, p90 {figures['p90'] * 1000:.0f} ms, "
              f"max {figures['max'] * 1000:.0f} ms (n={figures['n']})")


if __name__ == "__main__":
    main()
