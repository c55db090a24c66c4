"""Postgres and several workers: throughput against the SQLite file, and the time to take over
from a worker killed with SIGKILL.

1. Throughput: SPECS specs of six instant dispatches each (the fake agent answers at once), all
   submitted before the daemon starts; the clock runs from the first daemon's start to the last
   spec done. Same run, same machine: one daemon on SQLite (the baseline), one worker on
   Postgres, two workers on Postgres (two homes, one database).
2. Takeover: two workers with worker_timeout = 3s; worker 1 runs a spec whose tester takes
   6 s; worker 1 is killed -9 mid-tester. Reported: from the kill to worker 2 claiming worker 1
   (iwo_workers.recovered_at), and to the spec's next dispatch (the deployer's start), with the
   tester's run re-attached, not re-run (checked: one tester start in the fake agent's log).

Needs a Postgres server: IWO_TEST_POSTGRES_URL (see .ci/postgres.sh), a role with CREATEDB.

    eval "$(bash .ci/postgres.sh)"; python bench/postgres.py [--specs 12]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BenchHome  # noqa: E402  (puts tests/ on sys.path)
import fake_claude  # noqa: E402
import psycopg  # noqa: E402

from iwo_lite.store import pg  # noqa: E402
from iwo_lite.times import parse_utc  # noqa: E402


def new_database(admin: str) -> str:
    name = f"iwo_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + "/" + name


def workers(count: int, url: str | None, config: str = "") -> list[BenchHome]:
    homes = []
    for index in range(count):
        env = {"IWO_DATABASE_URL": url, "IWO_EXECUTOR_ID": f"bench-{index + 1}"} if url else {}
        home = BenchHome(f"w{index + 1}", env=env, config=config)
        if homes:  # one witness log and scenario for all
            home.env.update(FAKE_CLAUDE_LOG=homes[0].env["FAKE_CLAUDE_LOG"],
                            FAKE_CLAUDE_SCENARIO=homes[0].env["FAKE_CLAUDE_SCENARIO"])
            home.log = homes[0].log
        homes.append(home)
    homes[0].scenario({})
    return homes


def throughput(label: str, count: int, url: str | None, specs: int) -> float:
    homes = workers(count, url)
    slug = "".join(c if c.isalnum() else "-" for c in label)
    ids = [homes[0].submit(f"{slug}-{index}", f"# spec {index}\n") for index in range(specs)]
    begin = time.perf_counter()
    for home in homes:
        home.start()
    homes[0].wait(lambda: all(state == "done" for state in homes[0].states().values())
                  and len(homes[0].states()) == specs, 600, f"{label}: all specs done")
    seconds = time.perf_counter() - begin
    for home in homes:
        home.stop()
    starts = fake_claude.count_dispatches(homes[0].log)
    assert starts == 6 * len(ids), (label, starts)
    print(f"{label:28s} {seconds:6.2f} s for {specs} specs ({6 * specs / seconds:5.1f} dispatches/s)")
    return seconds


def takeover(url: str) -> None:
    first, second = workers(2, url, config="")
    for home in (first, second):
        config = home.root / "config.toml"
        config.write_text('worker_timeout = "3s"\n' + config.read_text())
    first.scenario({"roles": {"tester": [{"sleep": 6.0}]}})
    spec = first.submit("takeover")
    first.start()
    first.wait(lambda: first.first_start(spec, "tester"), 120, "tester start")
    second.start()
    time.sleep(1.0)
    killed_at = time.time()
    os.kill(first.daemon.pid, signal.SIGKILL)
    first.daemon.wait()
    second.wait(lambda: second.states().get(spec) == "done", 120, "spec done on worker 2")
    conn = pg.connect(url)
    recovered_at = conn.execute("SELECT recovered_at FROM iwo_workers WHERE executor_id = 'bench-1'").fetchone()[0]
    conn.close()
    deployer = second.first_start(spec, "deployer")
    testers = fake_claude.count_dispatches(first.log, role="tester")
    second.stop()
    print(f"takeover (worker_timeout 3s): claimed {parse_utc(recovered_at) - killed_at:5.2f} s after the kill; "
          f"next dispatch {deployer - killed_at:5.2f} s after; tester started {testers} time(s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--specs", type=int, default=12)
    args = parser.parse_args()
    admin = os.environ.get("IWO_TEST_POSTGRES_URL")
    if not admin:
        raise SystemExit("bench: set IWO_TEST_POSTGRES_URL (eval \"$(bash .ci/postgres.sh)\")")
    base = throughput("sqlite, 1 daemon", 1, None, args.specs)
    one = throughput("postgres, 1 worker", 1, new_database(admin), args.specs)
    two = throughput("postgres, 2 workers", 2, new_database(admin), args.specs)
    print(f"ratios to SQLite: postgres 1 worker x{one / base:.2f}, 2 workers x{two / base:.2f} (time)")
    takeover(new_database(admin))


if __name__ == "__main__":
    main()
