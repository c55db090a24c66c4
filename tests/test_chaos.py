"""Chaos: the daemon killed with SIGKILL at random moments, and one agent killed outright.

Specs whose fake agent takes a random time per role (some with a rework), the daemon killed -9
at random moments and restarted, and once an agent's whole process group killed -9 (that
attempt fails and is retried per agent.retries, so that role is started twice for that spec).
Afterwards: every spec is done; the fake agent's own log shows no paid call made twice; every
completed call (an "end" line) matches exactly one recorded attempt; each role was started
exactly as often as the transitions (plus the one killed attempt) demand; one intact handoff per
dispatch; `PRAGMA integrity_check` is ok.

`ChaosRun` is reused by bench/chaos.py for the long run (20 rounds x 10 specs by default).
Set CHAOS_SEED to replay a run; the seed is in every failure message.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field


from conftest import IwoHome, wait_for
import fake_claude

ROLES = ("planner", "builder", "reviewer", "tester", "deployer", "docs")
HANDOFF = re.compile(r"^(\d\d)-(planner|builder|reviewer|tester|deployer|docs)\.md$")


@dataclass
class ChaosReport:
    seed: int
    specs: int = 0
    done: int = 0
    daemon_kills: int = 0
    agent_kills: int = 0
    kills_with_agents_running: int = 0
    temp_litter: int = 0  # temp files of handoff writes cut short by a kill (not counted as a problem)
    dispatches: int = 0
    agent_calls: int = 0
    repeated_calls: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class ChaosRun:
    """One home, `specs` specs, `kills` daemon kills at random moments, one agent group killed."""

    def __init__(self, home: IwoHome, *, specs: int = 3, kills: int = 4, seed: int | None = None,
                 max_sleep: float = 0.8, max_concurrent: int = 2, kill_window: tuple[float, float] = (0.0, 2.0)):
        self.home = home
        self.seed = seed if seed is not None else int(os.environ.get("CHAOS_SEED") or time.time_ns() % 2**31)
        self.rng = random.Random(self.seed)
        self.killer_rng = random.Random(self.seed + 1)  # the agent killer runs in its own thread
        self.kills = kills
        self.kill_window = kill_window
        self.ids = [f"chaos-{i:02d}" for i in range(specs)]
        self.expected: dict[str, collections.Counter] = {}
        scenario: dict = {"specs": {}}
        for spec_id in self.ids:
            roles, counts = self._spec_scenario(max_sleep)
            scenario["specs"][spec_id] = {"roles": roles}
            self.expected[spec_id] = counts
        self.victim = (self.rng.choice(self.ids), self.rng.choice(ROLES))
        victim_entry = scenario["specs"][self.victim[0]]["roles"][self.victim[1]][0]
        victim_entry["attempts"] = {"1": {"sleep": 60}}  # lives until it is killed; attempt 2 is normal
        self.scenario = scenario
        home.configure(retries=1, max_concurrent=max_concurrent, timeout="120s")
        home.scenario(scenario)
        self.report = ChaosReport(seed=self.seed, specs=specs)
        self.killed_agent: dict | None = None

    def _spec_scenario(self, max_sleep: float) -> tuple[dict, collections.Counter]:
        def entry(**extra) -> dict:
            return {"sleep": round(self.rng.uniform(0.02, max_sleep), 3), **extra}

        counts = collections.Counter({role: 1 for role in ROLES})
        roles = {role: [entry()] for role in ROLES}
        twist = self.rng.choice(("straight", "straight", "review-changes", "test-fails"))
        if twist == "review-changes":
            roles["reviewer"] = [entry(verdict="changes"), entry(verdict="approve")]
            roles["builder"].append(entry())
            counts.update(builder=1, reviewer=1)
        elif twist == "test-fails":
            roles["tester"] = [entry(verdict="fail"), entry(verdict="pass")]
            roles["builder"].append(entry())
            roles["reviewer"].append(entry())
            counts.update(builder=1, reviewer=1, tester=1)
        return roles, counts

    # -- the run -------------------------------------------------------------------------

    def _kill_the_victim(self, stop: threading.Event) -> None:
        spec_id, role = self.victim
        while not stop.is_set():
            for line in fake_claude.read_log(self.home.log):
                if (line["event"], line["spec"], line["role"], line["attempt"]) == ("start", spec_id, role, 1):
                    time.sleep(self.killer_rng.uniform(0.0, 0.5))
                    os.killpg(os.getpgid(line["pid"]), signal.SIGKILL)
                    self.killed_agent = line
                    self.report.agent_kills = 1
                    return
            time.sleep(0.05)

    def run(self, timeout: float = 240) -> ChaosReport:
        home = self.home
        started = time.time()
        for spec_id in self.ids:
            home.submit(home.spec_file(f"{spec_id}.md", f"# Chaos {spec_id}\nrandom durations\n"), spec_id=spec_id)
        stop = threading.Event()
        killer = threading.Thread(target=self._kill_the_victim, args=(stop,), daemon=True)
        killer.start()
        try:
            for _ in range(self.kills):
                daemon = home.start()
                if self.rng.random() < 0.3:  # while it starts and recovers
                    time.sleep(self.rng.uniform(0.05, 1.5))
                else:  # while it works
                    wait_for(lambda: "daemon running" in daemon.log() or daemon.proc.poll() is not None, 60)
                    time.sleep(self.rng.uniform(*self.kill_window))
                if self.agents_in_flight():
                    self.report.kills_with_agents_running += 1
                daemon.kill9()
                self.report.daemon_kills += 1
                time.sleep(self.rng.choice((0.0, 0.0, self.rng.uniform(0.0, 0.5))))
            home.start()
            killer.join(timeout=120)
            deadline = time.time() + timeout
            while time.time() < deadline and not all(home.state(s) in ("done", "failed", "rejected", "waiting")
                                                      for s in self.ids):
                time.sleep(0.2)
        finally:
            stop.set()
        self.report.seconds = time.time() - started
        self.check()
        return self.report

    def agents_in_flight(self) -> bool:
        ended = {line["pid"] for line in fake_claude.read_log(self.home.log) if line["event"] == "end"}
        return any(line["event"] == "start" and line["pid"] not in ended and _alive(line["pid"])
                   for line in fake_claude.read_log(self.home.log))

    # -- the checks ----------------------------------------------------------------------

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def check(self) -> None:
        home, report = self.home, self.report
        if self.killed_agent is None:
            self.problem(f"the agent {self.victim} was never seen starting, so never killed")
        states = {s: home.state(s) for s in self.ids}
        report.done = sum(state == "done" for state in states.values())
        for spec_id, state in states.items():
            if state != "done":
                self.problem(f"{spec_id} ended {state}")
        lines = fake_claude.read_log(home.log)
        starts = [line for line in lines if line["event"] == "start"]
        ends = [line for line in lines if line["event"] == "end"]
        report.agent_calls = len(starts)
        keys = collections.Counter((l["spec"], l["role"], l["n"], l["attempt"]) for l in starts)
        report.repeated_calls = sum(n - 1 for n in keys.values())
        for key, n in keys.items():
            if n > 1:
                self.problem(f"paid call started {n} times: {key}")
        attempts = home.query("SELECT spec_id, step, attempt, role, finished_at, exit_code, error FROM iwo_attempts")
        steps = home.query("SELECT spec_id, step, role FROM iwo_steps ORDER BY spec_id, step")
        report.dispatches = len(steps)
        if len(attempts) != len(starts):
            self.problem(f"{len(starts)} agent processes started but {len(attempts)} attempts recorded")
        step_of: dict[tuple[str, str], list[int]] = collections.defaultdict(list)  # (spec, role) -> steps
        for spec_id, step, role in steps:
            step_of[spec_id, role].append(step)
        rows = {(a[0], a[1], a[2]): a for a in attempts}
        for line in ends:
            spec_id, role, n, attempt = line["spec"], line["role"], line["n"], line["attempt"]
            try:
                row = rows[spec_id, step_of[spec_id, role][n - 1], attempt]
            except (KeyError, IndexError):
                self.problem(f"completed call has no recorded attempt: {spec_id} {role} #{n} attempt {attempt}")
                continue
            if row[4] is None or row[5] != line["exit"]:
                self.problem(f"attempt {row} does not match the completed call (exit {line['exit']})")
        for spec_id in self.ids:
            expected = collections.Counter(self.expected[spec_id])
            dispatched = collections.Counter(role for (s, role), found in step_of.items() if s == spec_id
                                             for _ in found)
            if dispatched != expected:
                self.problem(f"{spec_id}: dispatches {dict(dispatched)} != transitions {dict(expected)}")
            if spec_id == self.victim[0]:
                expected[self.victim[1]] += 1  # the killed attempt is retried once
            started = collections.Counter(l["role"] for l in starts if l["spec"] == spec_id)
            if started != expected:
                self.problem(f"{spec_id}: agent starts {dict(started)} != expected {dict(expected)}")
            self.check_handoffs(spec_id, [(step, role) for s, step, role in steps if s == spec_id])
        if self.killed_agent is not None:
            spec_id, role = self.victim
            errors = [a[6] or "" for a in attempts if a[0] == spec_id and a[3] == role and a[2] == 1]
            if not any("vanished" in e for e in errors[:1]):
                self.problem(f"the killed attempt is not recorded as vanished: {errors}")
        integrity = home.query("PRAGMA integrity_check")
        if integrity != [("ok",)]:
            self.problem(f"integrity_check: {integrity}")

    def check_handoffs(self, spec_id: str, steps: list[tuple[int, str]]) -> None:
        folder = self.home.root / "specs" / spec_id / "handoffs"
        found = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        names = [name for name in found if not name.startswith(".")]
        self.report.temp_litter += len(found) - len(names)  # see test_a_handoff_write_cut_short_...
        wanted = [f"{step:02d}-{role}.md" for step, role in steps]
        if names != wanted:
            self.problem(f"{spec_id}: handoff files {names} != one per dispatch {wanted}")
        for name in names:
            match = HANDOFF.match(name)
            text = (folder / name).read_text(encoding="utf-8", errors="replace")
            if not match or not text.startswith(f"# {name[:-3]} — {spec_id}\n") \
                    or f"\n- role: {match.group(2)}\n" not in text or "\n## Agent output\n" not in text \
                    or "- verdict: none" in text:
                self.problem(f"{spec_id}: handoff {name} is damaged: {text[:200]!r}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_random_kills_of_the_daemon_and_one_agent_lose_nothing_and_pay_once(tmp_path):
    home = IwoHome(tmp_path / "home")
    chaos = ChaosRun(home, specs=3, kills=4)
    try:
        report = chaos.run()
    finally:
        home.cleanup()
    assert report.ok, (f"CHAOS_SEED={report.seed}: " + "\n".join(report.problems) + "\n" + home.daemon_logs())
    assert report.repeated_calls == 0 and report.done == 3 and report.daemon_kills == 4 and report.agent_kills == 1
    print(f"chaos seed {report.seed}: {report.dispatches} dispatches, {report.agent_calls} agent calls, "
          f"{report.daemon_kills} daemon kills ({report.kills_with_agents_running} with agents running), 0 repeated calls, {report.temp_litter} temp file(s) left, {report.seconds:.1f}s")


def test_a_handoff_write_cut_short_by_a_kill_leaves_no_temp_file(home):
    """What a kill in the middle of a handoff write leaves behind, set up deterministically."""
    spec_id = home.submit()
    handoffs = home.root / "specs" / spec_id / "handoffs"
    handoffs.mkdir(parents=True)
    (handoffs / ".01-planner.md.k1ll3d9x").write_text("# 01-planner — half of it")
    home.start()
    home.wait_state(spec_id, "done")
    assert sorted(p.name for p in handoffs.iterdir()) == [f"{n:02d}-{r}.md" for n, r in enumerate(ROLES, 1)]
