"""Start-up of the zipapp, timed as whole processes: warm `--help`, warm `status` on an empty
home, and the first run (extraction into a fresh SHIV_ROOT), with `python -c pass` as the
baseline in the same run. Also prints the .pyz's size. Goals: warm status <= 150 ms, <= 20 MiB.

Runs the .pyz with the interpreter the venv was made from (no iwo-lite installed there), from
a temporary directory, with PYTHONDONTWRITEBYTECODE unset (rows marked "(dwb=1)" set it).

    python bench/startup.py [--pyz dist/iwo-lite.pyz] [--build] [--runs 20] [--first-runs 3]
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
PYTHON = getattr(sys, "_base_executable", None) or sys.executable
GOAL_STATUS_S = 0.150
GOAL_SIZE = 20 * 2**20


def run_once(argv: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    return time.perf_counter() - start


def warm(argv: list[str], env: dict, cwd: Path, runs: int) -> float:
    run_once(argv, env, cwd)  # extraction (if any) and the page cache
    return statistics.median(run_once(argv, env, cwd) for _ in range(runs))


def first_runs(argv: list[str], env: dict, cwd: Path, runs: int, scratch: Path) -> float:
    samples = []
    for index in range(runs):
        root = scratch / f"shiv-first-{index}"
        samples.append(run_once(argv, dict(env, SHIV_ROOT=str(root)), cwd))
        shutil.rmtree(root)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "iwo-lite.pyz")
    parser.add_argument("--build", action="store_true", help="run build/shiv.sh first (also when the .pyz is missing)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--first-runs", type=int, default=3)
    args = parser.parse_args()
    pyz = args.pyz.resolve()
    if args.build or not pyz.exists():
        subprocess.run(["bash", str(ROOT / "build" / "shiv.sh"), str(pyz)], check=True)

    scratch = Path(tempfile.mkdtemp(prefix="iwo-bench-startup-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IWO_", "SHIV_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPATH", None)
        env.update(SHIV_ROOT=str(scratch / "shiv"), IWO_HOME=str(scratch / "empty-home"), COLUMNS="120")
        dwb = dict(env, PYTHONDONTWRITEBYTECODE="1")
        zipapp = [PYTHON, str(pyz)]
        rows = {
            "python -c pass (baseline)": warm([PYTHON, "-c", "pass"], env, scratch, args.runs),
            "zipapp --help, warm": warm(zipapp + ["--help"], env, scratch, args.runs),
            "zipapp status (empty home), warm": warm(zipapp + ["status"], env, scratch, args.runs),
            "zipapp status (empty home), warm (dwb=1)": warm(zipapp + ["status"], dwb, scratch, args.runs),
            "zipapp status, first run (fresh SHIV_ROOT)": first_runs(zipapp + ["status"], env, scratch,
                                                                     args.first_runs, scratch),
        }
        if (ROOT / ".venv" / "bin" / "iwo-lite").exists():
            rows["checkout venv: iwo-lite status, warm (reference)"] = warm(
                [str(ROOT / ".venv" / "bin" / "iwo-lite"), "status"], env, scratch, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    base = rows["python -c pass (baseline)"]
    size = pyz.stat().st_size
    print(f"{pyz} under {PYTHON}; median of {args.runs} warm runs, {args.first_runs} first runs")
    for name, seconds in rows.items():
        print(f"  {name:52s} {seconds * 1000:8.1f} ms   x{seconds / base:6.1f} of python -c pass")
    status = rows["zipapp status (empty home), warm"]
    print(f"  size: {size} bytes ({size / 2**20:.1f} MiB)")
    print(f"goals: warm status {status * 1000:.0f} ms <= {GOAL_STATUS_S * 1000:.0f} ms: "
          f"{'met' if status <= GOAL_STATUS_S else 'NOT met'}; size {size / 2**20:.1f} MiB <= 20 MiB: "
          f"{'met' if size <= GOAL_SIZE else 'NOT met'}")


if __name__ == "__main__":
    main()
