"""What a spec's worktree and its per-dispatch commit cost, on a generated repository.

The repository: ~5,000 small text files (a few directories deep, one commit). Measured with
iwo_lite.workspace, each against plain git doing the bare job in the same run:

- a spec's worktree: `ensure_worktree` (state checks, then `git worktree add -b`) vs
  `git worktree add -q -b x PATH BASE`
- a dispatch that changed a few files: `commit_dispatch` (search for an earlier run's commit,
  status, add, commit, head) vs `git add -A` + `git commit -q -m MSG`
- a dispatch that changed nothing: `commit_dispatch` (search, status, head; no commit) vs
  `git status --porcelain`

Every plain-git command is started from Python with subprocess, as ours are, so the ratio is
what the checks and idempotency cost, not the process start. The worktree's figure is mostly
writing 5,000 files, so on a machine busy with disk I/O its ratio is noisy: the difference
in ms (also printed) is the steadier figure.

    python bench/worktree.py [--files 5000] [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from iwo_lite import workspace as ws

IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
WORDS = ("spec", "agent", "handoff", "review", "build", "test", "deploy", "docs", "queue", "step",
         "workflow", "commit", "branch", "worktree", "merge", "retry", "gate", "answer", "budget")


def git(cwd, *args: str) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def generate(root: Path, files: int, rng: random.Random) -> str:
    """A repository of `files` small source-like files under a/b/c directories; returns HEAD."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    per_dir = 25
    for index in range(files):
        d = index // per_dir
        folder = root / f"pkg{d % 10}" / f"mod{(d // 10) % 20}" / f"part{d // 200}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"# file {index}: {' '.join(rng.choices(WORDS, k=6))}"]
        for n in range(rng.randint(10, 60)):
            lines.append(f"def {rng.choice(WORDS)}_{n}(x):\n    return x + {rng.randint(0, 999)}  # {rng.choice(WORDS)}")
        (folder / f"file{index}.py").write_text("\n".join(lines) + "\n")
    (root / "README.md").write_text("# generated\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "generated")
    return git(root, "rev-parse", "HEAD").strip()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def touch_some(worktree: Path, run: int, rng: random.Random) -> None:
    """A dispatch's worth of changes: three files edited, one added."""
    tracked = sorted(worktree.glob("pkg*/mod1/part*/file*.py"))
    for path in rng.sample(tracked, 3):
        with path.open("a") as f:
            f.write(f"# edited in run {run}\n")
    (worktree / f"new_{run}.py").write_text(f"VALUE = {run}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="iwo-bench-worktree-"))
    try:
        repo = tmp / "repo"
        t0 = time.perf_counter()
        base = generate(repo, args.files, rng)
        print(f"repository: {args.files} files, one commit ({time.perf_counter() - t0:.1f} s to generate),"
              f" git {ws.git_version()}")
        ws.describe_repo(str(repo))  # warm: the repository's paths are cached per process
        results: dict[str, list[float]] = {k: [] for k in (
            "ensure", "plain add", "commit", "plain commit", "nochange", "plain status")}

        # a spec's worktree, alternating ours and plain git; each run a fresh spec
        for run in range(args.runs):
            ours, plain = tmp / "wt" / f"ours{run}", tmp / "wt" / f"plain{run}"
            results["ensure"].append(timed(lambda: ws.ensure_worktree(str(repo), str(ours), f"iwo/o{run}", base)))
            results["plain add"].append(timed(lambda: git(repo, "worktree", "add", "-q", "-b", f"p{run}", str(plain), base)))

        # a dispatch's commit: in the worktrees just made, one dispatch number per run
        ours_wt, plain_wt = tmp / "wt" / "ours0", tmp / "wt" / "plain0"
        since = base
        for run in range(args.runs):
            touch_some(ours_wt, run, rng)
            touch_some(plain_wt, run, rng)
            message = ws.dispatch_message(run + 1, "builder", "bench change")
            tag = ws.dispatch_tag("o0", run + 1)
            out = {}
            results["commit"].append(timed(lambda: out.update(ws.commit_dispatch(
                str(ours_wt), message, None, tag, since=since, branch="iwo/o0"))))
            assert out["commit"] and out["file_count"] == 4, out
            since = out["head"]
            results["plain commit"].append(timed(lambda: (git(plain_wt, "add", "-A"),
                                                          git(plain_wt, "commit", "-q", "-m", message))))
            tag = ws.dispatch_tag("o0", run + 100)
            results["nochange"].append(timed(lambda: out.update(ws.commit_dispatch(
                str(ours_wt), message, None, tag, since=since, branch="iwo/o0"))))
            assert out["commit"] is None, out
            results["plain status"].append(timed(lambda: git(plain_wt, "status", "--porcelain")))

        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"median of {args.runs} runs")
        rows = (("a spec's worktree", "ensure", "plain add", "git worktree add -b"),
                ("a dispatch changing 4 files", "commit", "plain commit", "git add -A + git commit"),
                ("a dispatch changing nothing", "nochange", "plain status", "git status --porcelain"))
        for label, mine, baseline, name in rows:
            print(f"  {label:30s} {med[mine] * 1000:7.1f} ms   plain {name:26s} {med[baseline] * 1000:7.1f} ms"
                  f"   x{med[mine] / med[baseline]:4.2f}  ({(med[mine] - med[baseline]) * 1000:+.1f} ms)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
