"""The cost of the terminal-safe filter on rich's output (output.console's render): a 10,000-row
FastTable (status's table, every spec) printed by the filtered console vs a plain rich Console of the
same width, in the same process; best of --runs.

    python bench/output_filter.py [--rows 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import time

from rich.console import Console

from iwo_lite import output
from iwo_lite.tables import FastTable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = [[f"spec-{i:05d}-abcdef", "running", "builder", "3", "0.1234", "12m ago",
             f"Title of the spec number {i} with some words"] for i in range(args.rows)]
    table = FastTable("specs", ("id", "state", "role", "step", "cost", "updated", "title"), rows, stretchy=(6,))
    consoles = {"plain rich Console (baseline)": Console(width=output.PIPE_WIDTH),
                "output.console() (filtered)": output.console()}
    results = {name: float("inf") for name in consoles}
    for _ in range(args.runs + 1):  # interleaved, the first round a warm-up
        for name, console in consoles.items():
            console.file = io.StringIO()
            start = time.perf_counter()
            console.print(table)
            if _:
                results[name] = min(results[name], time.perf_counter() - start)
    base = results["plain rich Console (baseline)"]
    for name, seconds in results.items():
        print(f"  {name:32s} {seconds * 1000:7.1f} ms   x{seconds / base:5.2f}")


if __name__ == "__main__":
    main()
