"""Chaos, the long run: R rounds, each a fresh home with N specs whose fake agent takes a random
time per role (some specs with a rework), the daemon killed -9 at K random moments and
restarted, and one agent's process group killed -9 per round (that attempt is retried).

After each round: every spec done, no paid agent call started twice (the fake agent's own log),
every completed call matching exactly one recorded attempt, each role started exactly as often
as the transitions demand (+1 for the killed attempt), one intact handoff per dispatch,
`PRAGMA integrity_check` ok. The checks are tests/test_chaos.py's `ChaosRun`.

    python bench/chaos.py [--rounds 20] [--specs 10] [--kills 5] [--seed S]

The baseline for the "repeated calls" figure: the agent calls a runner without checkpoints or
re-attachment would have had to make again — at each kill, every call already made for a spec
not yet finished (printed as "a naive runner would repeat").
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT  # noqa: E402  (puts tests/ on sys.path)

sys.path.insert(0, str(ROOT / "tests"))
from conftest import IwoHome  # noqa: E402
from test_chaos import ChaosRun  # noqa: E402
import fake_claude  # noqa: E402


def naive_repeats(home: IwoHome, kill_times: list[float]) -> int:
    """Calls a runner without checkpoints would make again: at each kill, every call already made
    for a spec that was not finished yet (it would start that spec over)."""
    from iwo_lite.times import parse_utc

    done_at = {spec: parse_utc(updated) for spec, updated in
               home.query("SELECT id, updated_at FROM iwo_specs WHERE state = 'done'")}
    starts = [(line["t"], line["spec"]) for line in fake_claude.read_log(home.log) if line["event"] == "start"]
    return sum(1 for kill in kill_times for t, spec in starts if t < kill < done_at.get(spec, float("inf")))


class TimedChaos(ChaosRun):
    """ChaosRun that also notes when each daemon kill happened (for the naive baseline)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_times: list[float] = []
        original = self.home.start

        def start():
            daemon = original()
            kill9 = daemon.kill9

            def timed_kill9():
                self.kill_times.append(time.time())
                kill9()

            daemon.kill9 = timed_kill9
            return daemon

        self.home.start = start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--specs", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5, help="daemon kills per round")
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None, help="seed of the first round (default: random)")
    args = parser.parse_args()
    first_seed = args.seed if args.seed is not None else random.randrange(2**31)
    totals = dict(specs=0, done=0, dispatches=0, calls=0, kills=0, busy_kills=0, agent_kills=0, repeated=0,
                  naive=0, litter=0, problems=0)
    started = time.time()
    print(f"chaos: {args.rounds} rounds x {args.specs} specs, {args.kills} daemon kills + 1 agent kill per "
          f"round, agent.max_concurrent {args.max_concurrent}, first seed {first_seed}")
    for index in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="iwo-bench-chaos-"))
        home = IwoHome(root / "home")
        home.env.pop("PYTHONDONTWRITEBYTECODE", None)
        chaos = TimedChaos(home, specs=args.specs, kills=args.kills, seed=first_seed + index,
                           max_concurrent=args.max_concurrent, max_sleep=0.6)
        try:
            report = chaos.run(timeout=600)
        finally:
            home.cleanup()
        naive = naive_repeats(home, chaos.kill_times)
        for key, value in (("specs", report.specs), ("done", report.done), ("dispatches", report.dispatches),
                           ("calls", report.agent_calls), ("kills", report.daemon_kills),
                           ("busy_kills", report.kills_with_agents_running), ("agent_kills", report.agent_kills),
                           ("repeated", report.repeated_calls), ("naive", naive), ("litter", report.temp_litter),
                           ("problems", len(report.problems))):
            totals[key] += value
        print(f"round {index + 1:2d} seed {report.seed}: {report.done}/{report.specs} done, {report.dispatches} "
              f"dispatches, {report.agent_calls} agent calls, {report.daemon_kills} kills "
              f"({report.kills_with_agents_running} with agents running), {report.repeated_calls} repeated calls "
              f"(a naive runner would repeat {naive}), {report.temp_litter} temp file(s) left, "
              f"{report.seconds:.1f}s" + ("" if report.ok else "  PROBLEMS:"), flush=True)
        for problem in report.problems:
            print(f"    {problem}")
        if report.ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"    kept {root}")
    elapsed = time.time() - started
    print()
    print(f"total: {totals['done']}/{totals['specs']} specs done, {totals['dispatches']} dispatches, "
          f"{totals['calls']} agent calls, {totals['kills']} daemon kills ({totals['busy_kills']} with agents "
          f"running), {totals['agent_kills']} agent kills, {elapsed / 60:.1f} min")
    print(f"{totals['repeated']} repeated calls (a runner without checkpoints would have repeated "
          f"{totals['naive']}); {totals['problems']} problems; {totals['litter']} handoff temp file(s) left")
    return 0 if totals["problems"] == 0 and totals["repeated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
