"""The cost of the reaper wrapper (iwo_lite/runs/reaper.py) against today's `/bin/sh` wrapper.

1. Per-run wall time of an instant agent (`/bin/true`) started the daemon's way (a child in a
   session of its own, with a run directory, waited for) through (a) the `/bin/sh` wrapper
   (copied from iwo_lite/dispatch.py) and (b) the reaper — with its default output cap (stdout
   through a pipe it copies) and with `--max-output 0` (stdout straight to the file) — as a
   ratio against (a); the runs are interleaved so that drift hits all alike.
2. The interpreter floor: `python -I -S -c pass` against `python -c pass`.
3. A 200 MB output (`head -c`): wall time and CPU time of the whole run (wrapper + agent),
   straight to the file (sh; reaper --max-output 0) against through the reaper's pipe (a cap
   above the size: everything copied; the default 20 MiB cap: the rest read and dropped).
4. With --mechanisms (Linux): the alternatives measured the same way where this machine allows
   them — a pid namespace (`unshare -p -f --kill-child`, needs root or user namespaces) and a
   cgroup v2 per run (mkdir, move, cgroup.kill, rmdir; needs a writable cgroup2 directory) —
   and what survives each kind of kill of a fake agent's tree (tests/test_reaper.py's
   FAKE_AGENT: a child in its own session and one in its own process group, both ignoring
   SIGTERM, and an orphan in its own session).

    python bench/reaper.py [--runs 200] [--mb 200] [--mechanisms]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAPER = ROOT / "iwo_lite" / "runs" / "reaper.py"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# today's wrapper, copied from iwo_lite/dispatch.py (WRAPPER)
SH_WRAPPER = (
    'agent_umask=$(umask); umask 077\n'
    'echo $$ > "$IWO_RUN_DIR/pid.wrapper"\n'
    ': > "$IWO_RUN_DIR/stdout"; : > "$IWO_RUN_DIR/stderr"\n'
    '(umask "$agent_umask"; exec "$@") < "$IWO_RUN_DIR/prompt.md" > "$IWO_RUN_DIR/stdout" 2> "$IWO_RUN_DIR/stderr"\n'
    'code=$?\n'
    'echo $code > "$IWO_RUN_DIR/exit.tmp" && mv -f "$IWO_RUN_DIR/exit.tmp" "$IWO_RUN_DIR/exit"\n'
)
UNIFIED = Path("/sys/fs/cgroup/unified")  # the cgroup2 tree of a hybrid (v1 + v2) machine, like this one
CGROUP2 = UNIFIED if (UNIFIED / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
CG_WRAPPER = ('d="$IWO_CGROUP/iwo.$$"; mkdir "$d" && echo $$ > "$d/cgroup.procs" || exit 125\n'
              + SH_WRAPPER +
              'echo $$ > "$IWO_CGROUP/cgroup.procs"; rmdir "$d"\n')


def sh(agent: list[str]) -> list[str]:
    return ["/bin/sh", "-c", SH_WRAPPER, "iwo-run", *agent]


def reaper(agent: list[str], *options: str, by_path: bool = False) -> list[str]:
    """The reaper as the daemon starts it (reaper.wrapper_argv: -c import, its cached .pyc), or by path."""
    if by_path:
        return [sys.executable, "-I", "-S", str(REAPER), *options, "--", *agent]
    from iwo_lite.runs import reaper as module

    head = module.wrapper_argv([], python=sys.executable)
    return head[:head.index("--grace")] + list(options) + ["--", *agent]


def one_run(argv: list[str], run_dir: Path, env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the wrapper and everything it waited for) of one run."""
    exit_file = run_dir / "exit"
    exit_file.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=run_dir, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = exit_file.read_text().strip() if exit_file.exists() else "missing"
    if text != "0":
        raise SystemExit(f"{argv[:4]}...: exit {text!r}; stderr: {(run_dir / 'stderr').read_text()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime


def run_dir_in(scratch: Path, name: str) -> tuple[Path, dict]:
    path = scratch / name
    path.mkdir(mode=0o700)
    (path / "prompt.md").write_text("prompt\n")
    return path, dict(os.environ, IWO_RUN_DIR=str(path), IWO_CGROUP=str(CGROUP2))


def startup(scratch: Path, runs: int, extra: dict[str, list[str]]) -> None:
    kinds = {"sh wrapper": sh(["/bin/true"]),
             "reaper (default cap: stdout via pipe)": reaper(["/bin/true"]),
             "reaper --max-output 0 (direct)": reaper(["/bin/true"], "--max-output", "0"),
             "reaper by path (compiled at each start)": reaper(["/bin/true"], by_path=True),
             **extra}
    dirs = {name: run_dir_in(scratch, f"start{i}") for i, name in enumerate(kinds)}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for name, argv in kinds.items():  # warm-up
        one_run(argv, *dirs[name])
    for _ in range(runs):
        for name, argv in kinds.items():
            times[name].append(one_run(argv, *dirs[name])[0])
    base = statistics.median(times["sh wrapper"])
    print(f"\n1. instant agent (/bin/true), {runs} runs each, interleaved: median (mean) wall per run")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"   {name:42s} {median * 1000:7.2f} ms ({statistics.fmean(values) * 1000:6.2f})"
              f"   x{median / base:5.2f}   +{(median - base) * 1000:5.2f} ms")


def floor(runs: int) -> None:
    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, check=True)
        return time.perf_counter() - start

    rows = {"python3 -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "/bin/sh -c true": ["/bin/sh", "-c", "true"]}
    times = {name: [] for name in rows}
    for _ in range(runs):
        for name, argv in rows.items():
            times[name].append(timed(argv))
    print(f"\n2. interpreter floor ({sys.executable}), {runs} runs: median")
    for name, values in times.items():
        print(f"   {name:42s} {statistics.median(values) * 1000:7.2f} ms")


def big_output(scratch: Path, megabytes: int, repeat: int = 3) -> None:
    size = megabytes * 10**6
    agent = ["head", "-c", str(size), "/dev/zero"]
    kinds = {"sh wrapper (direct to file)": (sh(agent), size),
             "reaper --max-output 0 (direct to file)": (reaper(agent, "--max-output", "0"), size),
             f"reaper, cap {size + 1} (all copied)": (reaper(agent, "--max-output", str(size + 1)), size),
             "reaper, default cap 20 MiB (rest dropped)": (reaper(agent), 20 * 2**20)}
    print(f"\n3. {megabytes} MB on stdout (head -c): best of {repeat}, wall and CPU (wrapper + agent)")
    base = None
    for i, (name, (argv, kept)) in enumerate(kinds.items()):
        run_dir, env = run_dir_in(scratch, f"big{i}")
        results = [one_run(argv, run_dir, env) for _ in range(repeat)]
        wall = min(r[0] for r in results)
        cpu = min(r[1] for r in results)
        got = (run_dir / "stdout").stat().st_size
        cut = (run_dir / "stdout.cut").read_text().strip() if (run_dir / "stdout.cut").exists() else "-"
        assert got == kept, (name, got, kept)
        base = base or wall
        print(f"   {name:42s} wall {wall:6.3f} s (x{wall / base:4.2f})  CPU {cpu:6.3f} s"
              f"   kept {got / 1e6:6.1f} MB, stdout.cut {cut}")
        shutil.rmtree(run_dir)


# ------------------------------------------------------------------------------ 4. the alternatives

def can(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def cgroup_writable() -> bool:
    probe = CGROUP2 / f"iwo-probe.{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return (CGROUP2 / "cgroup.procs").exists()
    except OSError:
        return False


def alternatives() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    if not sys.platform.startswith("linux"):
        return rows
    if can(["unshare", "-p", "-f", "--kill-child", "true"]):
        rows["sh wrapper in a pid namespace (unshare)"] = ["unshare", "-p", "-f", "--kill-child", *sh(["/bin/true"])]
    elif can(["unshare", "-U", "-r", "-p", "-f", "--kill-child", "true"]):
        rows["sh wrapper in user+pid namespaces"] = ["unshare", "-U", "-r", "-p", "-f", "--kill-child",
                                                     *sh(["/bin/true"])]
    if cgroup_writable():
        rows["sh wrapper in a cgroup v2 of its own"] = ["/bin/sh", "-c", CG_WRAPPER, "iwo-run", "/bin/true"]
    return rows


def survivors(scratch: Path) -> None:
    """What is left of the fake agent's tree after each kind of kill, per mechanism."""
    from test_reaper import FAKE_AGENT

    from iwo_lite.runs import reaper as reaper_module

    agent_py = scratch / "agent.py"
    agent_py.write_text(FAKE_AGENT)
    agent = [sys.executable, "-I", "-S", str(agent_py), "tree"]
    cases = [("sh wrapper; SIGTERM, SIGKILL to its group", sh(agent), "group", None),
             ("reaper; SIGTERM to it (grace 0.3 s)", reaper(agent, "--grace", "0.3"), "term", None),
             ("reaper; SIGKILL to it", reaper(agent), "kill", None),
             ("reaper; SIGKILL to it, then kill_tree(pid)", reaper(agent), "kill", "tree"),
             ("reaper; SIGKILL to it, then kill_tree(pid, run_dir=)", reaper(agent), "kill", "tag")]
    if can(["unshare", "-p", "-f", "--kill-child", "true"]):
        cases.append(("pid namespace; SIGKILL to unshare", ["unshare", "-p", "-f", "--kill-child", *sh(agent)],
                      "kill", None))
    if cgroup_writable():
        cases.append(("cgroup v2; cgroup.kill", ["/bin/sh", "-c", CG_WRAPPER, "iwo-run", *agent], "cgroup", None))
    print("\n4b. what survives a kill of the fake tree (agent + own-session child + own-group child + orphan)")
    for i, (name, argv, how, after) in enumerate(cases):
        run_dir, env = run_dir_in(scratch, f"kill{i}")
        out = scratch / f"out{i}"
        out.mkdir()
        env["FAKE_OUT"] = str(out)
        proc = subprocess.Popen(argv, env=env, cwd=run_dir, start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while not (out / "pids.json").exists() and time.monotonic() < end:
            time.sleep(0.01)
        pids = json.loads((out / "pids.json").read_text())
        if argv[0] == "unshare":  # the agent saw its namespace's pids: map them to ours
            host = {}
            for pid in reaper_module.descendants(proc.pid):
                status = Path(f"/proc/{pid}/status").read_text()
                ns = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
                host[int(ns[-1])] = pid
            pids = {name_: host[pid] for name_, pid in pids.items()}
        starts = {name_: reaper_module.start_time(pid) for name_, pid in pids.items()}
        if how == "group":
            os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGKILL)
        elif how == "term":
            os.kill(proc.pid, signal.SIGTERM)
        elif how == "kill":
            os.kill(proc.pid, signal.SIGKILL)
        elif how == "cgroup":
            group = CGROUP2 / f"iwo.{proc.pid}"
            (group / "cgroup.kill").write_text("1")
        proc.wait()
        if after == "tree":
            reaper_module.kill_tree(proc.pid, 0.3)
        elif after == "tag":
            reaper_module.kill_tree(proc.pid, 0.3, run_dir=str(run_dir))
        time.sleep(0.5)
        left = [n for n, pid in pids.items() if reaper_module.start_time(pid) == starts[n]
                and (reaper_module.process_table_row(pid) or "Z")[3] != "Z"]
        print(f"   {name:52s} survivors: {', '.join(left) or 'none'}")
        for n in left:
            os.kill(pids[n], signal.SIGKILL)
        if how == "cgroup":
            (CGROUP2 / f"iwo.{proc.pid}").rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--mechanisms", action="store_true", help="also pid namespace / cgroup where possible")
    args = parser.parse_args()
    print(f"bench/reaper.py  python {sys.version.split()[0]}  {sys.platform}  cpus {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="iwo-bench-reaper-") as tmp:
        scratch = Path(tmp)
        startup(scratch, args.runs, alternatives() if args.mechanisms else {})
        floor(max(20, args.runs // 4))
        big_output(scratch, args.mb)
        if args.mechanisms:
            survivors(scratch)


if __name__ == "__main__":
    main()
