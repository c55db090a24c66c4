"""Approval latency: from an answer (a Telegram button press, or `iwo-lite approve` typed in a
shell) to the next agent dispatch starting; and the CPU the daemon spends idling with 50 open
gates. Each is measured twice in the same run: with DBOS's default polling (1 s, the baseline)
and with iwo-lite's setting.

    python bench/approval_latency.py [--rounds N] [--idle-seconds S]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import time

from harness import BenchHome, cpu_seconds, summary
from fake_bot_api import FakeBotAPI
from iwo_lite.times import parse_utc

CHAT, USER = 1001, 42


def measure_latency(label: str, env: dict, rounds: int) -> dict:
    api = FakeBotAPI().start()
    home = BenchHome(label, env={**env, "IWO_TELEGRAM_TOKEN": api.token},
                     config=f'[telegram]\nallowed_chat_ids = [{CHAT}]\nbase_url = "{api.base_url}"\n')
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Go?"}]}})
    home.start()
    telegram, cli = [], []
    try:
        for index in range(rounds * 2):
            spec = f"{label}-{index}"
            home.submit(spec)
            home.wait(lambda: home.states().get(spec) == "waiting", what=f"{spec} waiting")
            message = api.wait_for(lambda a: [m for m in a.sent_messages if spec in m["text"]], timeout=30)[0]
            time.sleep(random.uniform(0.3, 1.3))  # answer at a random phase of DBOS's poll
            answered = time.time()
            if index % 2 == 0:
                data = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
                api.push_callback(CHAT, USER, data)
            else:
                subprocess.run([sys.executable, "-m", "iwo_lite", "approve", spec], env=home.env, check=True,
                               capture_output=True)
            home.wait(lambda: home.first_start(spec, "builder"), what=f"{spec} builder")
            (telegram if index % 2 == 0 else cli).append(dispatch_started(home, spec) - answered)
    finally:
        home.stop()
        api.stop()
    return {"telegram": summary(telegram), "cli": summary(cli)}


def dispatch_started(home: BenchHome, spec: str) -> float:
    """When the daemon launched the builder's agent process (iwo_attempts.started_at)."""
    conn = sqlite3.connect(home.root / "iwo.sqlite", timeout=10)
    try:
        row = conn.execute("SELECT started_at FROM iwo_attempts WHERE spec_id = ? AND role = 'builder'"
                           " ORDER BY step LIMIT 1", (spec,)).fetchone()
    finally:
        conn.close()
    return parse_utc(row[0])


def measure_idle_cpu(label: str, env: dict, gates: int, seconds: float) -> float:
    home = BenchHome(label + "-idle", env=env)
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Go?"}]}})
    for index in range(gates):
        home.submit(f"idle-{index}")
    daemon = home.start()
    try:
        home.wait(lambda: sum(s == "waiting" for s in home.states().values()) == gates, timeout=300,
                  what=f"{gates} gates open")
        time.sleep(2)
        before, start = cpu_seconds(daemon.pid), time.time()
        time.sleep(seconds)
        used = cpu_seconds(daemon.pid) - before
        return used / (time.time() - start)
    finally:
        home.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--gates", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    settings = {
        "dbos-default": {"IWO_NOTIFICATION_POLL_S": "1.0", "IWO_WAKE_NUDGE": "0"},  # the baseline
        "poll-0.1s": {"IWO_NOTIFICATION_POLL_S": "0.1", "IWO_WAKE_NUDGE": "0"},  # polling alone, faster
        "iwo-lite": {},  # 1 s polling + the daemon waking its own waiter
    }
    results = {}
    for label, env in settings.items():
        results[label] = measure_latency(label, env, args.rounds)
        results[label]["idle_cpu_share"] = measure_idle_cpu(label, env, args.gates, args.idle_seconds)
    print(json.dumps(results, indent=2))
    base = results["dbos-default"]
    for label, result in results.items():
        for path in ("telegram", "cli"):
            print(f"{label:12s} {path:8s} answer -> dispatch started: median {result[path]['median'] * 1000:5.0f} ms"
                  f" p90 {result[path]['p90'] * 1000:5.0f} ms  (x{result[path]['median'] / base[path]['median']:.2f}"
                  " of DBOS default)")
        print(f"{label:12s} idle CPU, {args.gates} open gates: {result['idle_cpu_share'] * 100:5.1f}% of a core"
              f"  (x{result['idle_cpu_share'] / max(base['idle_cpu_share'], 1e-9):.2f} of DBOS default)")


if __name__ == "__main__":
    main()
