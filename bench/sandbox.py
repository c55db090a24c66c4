"""The cost of starting an agent inside the OS sandbox (bubblewrap, iwo_lite/sandbox.py) against the
same agent outside it, in the same run.

Per-run wall time of an agent started the daemon's way — the reaper wrapper (runs/reaper.py) as a
child in a session of its own, with a run directory, waited for until it wrote `exit` — for:

  * `/bin/true` (the floor: what the sandbox adds to any start) and
  * `python3 -c pass` (an interpreter start, closer to a real CLI's),

each (a) unconfined and (b) wrapped in the sandbox's full command line for a spec worktree of a
real git repository with 20 other specs' branches (the worktree, git's admin dir and objects
writable, the branch's ref and reflog directories the run's private copies, a private /tmp, the CLI state, the iwo-lite home hidden, the
credentials list) with a HOME that holds every credential path of the list. The runs are
interleaved so drift hits both alike. Prints the medians and the difference (goal: <= 20 ms).

    python bench/sandbox.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iwo_lite import sandbox  # noqa: E402
from iwo_lite.runs import reaper  # noqa: E402


def setup(base: Path) -> tuple[sandbox.Confinement, dict]:
    repo, home, user = base / "repo", base / "home", base / "user"
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@localhost"]
    subprocess.run(git + ["init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("# bench\n")
    subprocess.run(git + ["-C", str(repo), "add", "-A"], check=True)
    subprocess.run(git + ["-C", str(repo), "commit", "-qm", "init"], check=True)
    for n in range(20):
        subprocess.run(["git", "-C", str(repo), "branch", f"iwo/other-{n}"], check=True)
    worktree = home / "worktrees" / "bench"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "iwo/bench", str(worktree)], check=True)
    for rel in sandbox.DEFAULT_HIDE:  # every credential place exists: the most binds
        path = user / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if "." in Path(rel).name.lstrip("."):
            path.write_text("secret\n")
        else:
            path.mkdir(exist_ok=True)
    (home / "iwo.sqlite").write_text("")
    env = dict(os.environ, HOME=str(user))
    (home / "runs" / "bench").mkdir(parents=True)
    return sandbox.Confinement(
        cwd=worktree, run_dir=home / "runs" / "bench", home=home, handoff_dir=home / "specs" / "bench" / "handoffs",
        state=(str(user / ".claude"), str(user / ".claude.json")), db_path=home / "iwo.sqlite",
        empty_file=sandbox.empty_file(home), env=env,
        branch=sandbox.prepare_branch(worktree, home / "runs" / "bench")), env


def one_run(argv: list[str], run_dir: Path, env: dict, cwd: Path) -> float:
    for name in ("exit", "stdout", "stderr", "pid.wrapper"):
        try:
            (run_dir / name).unlink()
        except FileNotFoundError:
            pass
    wrapped = reaper.wrapper_argv(argv, grace_s=1.0, max_output=reaper.DEFAULT_MAX_OUTPUT)
    start = time.perf_counter()
    proc = subprocess.Popen(wrapped, cwd=cwd, env=dict(env, IWO_RUN_DIR=str(run_dir)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proc.wait()
    took = time.perf_counter() - start
    code = (run_dir / "exit").read_text().strip()
    if code != "0":
        raise SystemExit(f"{argv[0]} exited {code}: {(run_dir / 'stderr').read_text()[-500:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    bwrap = shutil.which("bwrap")
    if bwrap is None or sandbox.probe(bwrap) is not None:
        print("bubblewrap is not installed or does not work here (apt-get install bubblewrap)")
        return 1
    with tempfile.TemporaryDirectory(prefix="iwo-bench-sandbox-") as tmp:
        confinement, env = setup(Path(tmp))
        confinement.handoff_dir.mkdir(parents=True)
        (confinement.run_dir / "prompt.md").write_text("hello\n")
        box = sandbox.Sandbox(bwrap)
        start = time.perf_counter()
        built = [box.wrap(["true"], confinement) for _ in range(100)]
        build_ms = (time.perf_counter() - start) / 100 * 1000
        print(f"bwrap options: {len(built[0]) - 2} arguments; building them: {build_ms:.2f} ms")
        agents = {"/bin/true": ["/bin/true"], "python3 -c pass": [sys.executable, "-I", "-S", "-c", "pass"]}
        for name, agent in agents.items():
            outside, inside = [], []
            for _ in range(3):  # warm-up
                one_run(agent, confinement.run_dir, env, confinement.cwd)
                one_run(box.wrap(agent, confinement), confinement.run_dir, env, confinement.cwd)
            for _ in range(args.runs):
                outside.append(one_run(agent, confinement.run_dir, env, confinement.cwd))
                inside.append(one_run(box.wrap(agent, confinement), confinement.run_dir, env, confinement.cwd))
            a, b = statistics.median(outside) * 1000, statistics.median(inside) * 1000
            print(f"{name:16s} outside {a:6.1f} ms   inside the sandbox {b:6.1f} ms   "
                  f"+{b - a:5.1f} ms ({b / a:.2f}x)   runs: {args.runs} each, medians")
    return 0


if __name__ == "__main__":
    sys.exit(main())
