"""The dashboard's figures (issue 20), in a real browser (Debian's Chromium through Playwright).

- the board of N specs (10,000: 9,900 done, 100 waiting) ready in the browser: from navigation to
  the rows drawn; baseline in the same run: the same page on an empty home;
- a state change shown in an open page: from the moment `iwo-lite submit` returns to its row in
  the open board; baseline: that submit command's own time;
- the web process's CPU while a page is open and nothing changes (% of one core over 30 s);
  baseline: the same process with no page open;
- the zipapp's size (dist/iwo-lite.pyz, built when missing).

    python bench/web.py [--specs 10000] [--runs 5] [--idle 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import BenchHome, cpu_seconds
from status_speed import populate

ROOT = Path(__file__).resolve().parent.parent


class Web:
    def __init__(self, home: BenchHome):
        self.proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", "web", "--port", "0"], env=home.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def board_ready(browser, url: str, rows: str, runs: int) -> float:
    """Median seconds from navigation to the board's rows drawn (`rows`: a selector that must appear)."""
    samples = []
    for _ in range(runs + 1):
        page = browser.new_page()
        page.goto(url)  # sets the cookie, lands on /
        page.wait_for_selector(rows, timeout=60_000)
        start = time.perf_counter()
        page.reload()
        page.wait_for_selector(rows, timeout=60_000)
        samples.append(time.perf_counter() - start)
        page.close()
    return statistics.median(samples[1:])


def change_shown(browser, url: str, home: BenchHome, runs: int) -> tuple[float, float]:
    """(median seconds from `submit` returning to the new row in an open board, median submit time)."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("table.specs, p.empty", timeout=60_000)
    shown, commands = [], []
    for index in range(runs):
        spec_id = f"live-{index}-{time.time_ns()}"
        path = home.root / f"{spec_id}.md"
        path.write_text(f"# live {index}\nbody\n")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iwo_lite", "submit", str(path), "--id", spec_id], env=home.env,
                       check=True, capture_output=True)
        returned = time.perf_counter()
        page.wait_for_selector(f"tr[data-id='{spec_id}']", timeout=10_000)
        shown.append(time.perf_counter() - returned)
        commands.append(returned - start)
    page.close()
    return statistics.median(shown), statistics.median(commands)


def idle_cpu(web: Web, seconds: float) -> float:
    before, start = cpu_seconds(web.proc.pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(web.proc.pid) - before) / (time.monotonic() - start) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    empty, full = BenchHome("web-empty"), BenchHome("web-full")
    empty.submit("seed")
    populate(full, args.specs - 100, 100)
    webs = {"empty": Web(empty), "full": Web(full)}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            base = board_ready(browser, webs["empty"].url, "tr[data-id='seed']", args.runs)
            board = board_ready(browser, webs["full"].url, "#group-waiting tbody tr", args.runs)
            print(f"board ready in the browser, median of {args.runs}:")
            print(f"  1 spec (baseline)      {base * 1000:7.0f} ms")
            print(f"  {args.specs} specs          {board * 1000:7.0f} ms   x{board / base:4.1f} of the baseline")
            shown, command = change_shown(browser, webs["full"].url, full, args.runs)
            print(f"a submit shown in an open board of {args.specs} specs, median of {args.runs}:")
            print(f"  iwo-lite submit itself {command * 1000:7.0f} ms (baseline)")
            print(f"  then on the page       {shown * 1000:7.0f} ms   x{shown / command:4.1f} of the baseline")
            quiet = idle_cpu(webs["full"], args.idle)
            page = browser.new_page()
            page.goto(webs["full"].url)
            page.wait_for_selector("#group-waiting tbody tr", timeout=60_000)
            time.sleep(2)
            watched = idle_cpu(webs["full"], args.idle)
            print(f"the web process's CPU over {args.idle:.0f} s, nothing changing:")
            print(f"  no page open (baseline) {quiet:6.3f} % of a core")
            print(f"  a board page open       {watched:6.3f} % of a core")
            page.close()
            browser.close()
    finally:
        for web in webs.values():
            web.stop()
    zipapp = ROOT / "dist" / "iwo-lite.pyz"
    if not zipapp.exists():
        subprocess.run(["bash", str(ROOT / "build" / "shiv.sh")], check=True, capture_output=True)
    print(f"zipapp {zipapp.stat().st_size / 2**20:.1f} MiB (the limit: 20 MiB)")


if __name__ == "__main__":
    main()
