"""The dashboard in a real browser (Debian's Chromium through Playwright): a person follows a spec
from submit to done without reloading, answers its gate there, reads its diff and tool calls, and
cannot miss a dead daemon or a failed tool. Screenshots go to build/screenshots/ ($IWO_SCREENSHOTS)."""

from __future__ import annotations

import re

import pytest

from web_helpers import WebServer, agent_runs, browser, call, screenshot, wait_for, web_home  # noqa: F401

pytestmark = pytest.mark.xdist_group("browser")
SEEN_S = 5_000  # ms Playwright waits for something to appear (the page itself shows changes within ~0.3 s)


def test_a_person_follows_a_spec_from_submit_to_done_in_the_browser(tmp_path, browser):
    home, work = web_home(tmp_path)
    (home.root / "hold").write_text("")  # each role waits for go-<role>: the test sees it running
    web = WebServer(home)
    alerts: list[str] = []
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(web.url)
        assert page.url == web.base + "/"  # the token became a cookie and left the address bar
        page.wait_for_selector("text=No specs yet", timeout=SEEN_S)
        page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

        # submit from the page; the daemon is not running: the banner says so in red
        page.click("#open-submit")
        page.fill("#submit-text", "# Greet <img src=x onerror=alert(1)>\n\nMake greet() say hello.\n")
        page.fill("#submit-id", "greet")
        page.click("#submit-send")
        page.wait_for_url(re.compile(r"/spec/greet$"), timeout=SEEN_S)
        page.click("text=board")
        page.wait_for_selector("tr[data-id=greet] .badge.queued", timeout=SEEN_S)
        banner = page.locator("#banner")
        assert banner.is_visible() and "NOT RUNNING" in banner.inner_text() and "1 unfinished" in banner.inner_text()
        assert page.locator("#daemon.bad").is_visible()
        assert page.locator("tr[data-id=greet] td.title").inner_text() == "Greet <img src=x onerror=alert(1)>"
        screenshot(page, "board-daemon-not-running")

        # the daemon starts: the banner goes and the spec runs, with its current tool, without a reload
        home.start()
        page.wait_for_selector("tr[data-id=greet] .badge.running", timeout=15_000)
        page.wait_for_selector("#banner", state="hidden", timeout=SEEN_S)
        page.wait_for_selector("tr[data-id=greet] td.detail >> text=Bash", timeout=15_000)
        assert page.locator("tr[data-id=greet]").inner_text().count("planner") == 1
        screenshot(page, "board-running")
        (home.root / "go-planner").write_text("")

        # the planner's question: waiting, with its countdown; open the spec and answer there
        page.wait_for_selector("tr[data-id=greet] .badge.waiting", timeout=15_000)
        assert "Greet with <b>hello</b> or hi?" in page.locator("tr[data-id=greet] td.detail").inner_text()
        assert re.search(r"\d+[dh] \d+[hm] left", page.locator("tr[data-id=greet] td.detail").inner_text())
        page.click("tr[data-id=greet] a.spec-link")
        page.wait_for_selector("#approve", timeout=SEEN_S)
        assert "Greet with <b>hello</b> or hi?" in page.locator(".gate .question").inner_text()
        screenshot(page, "spec-waiting")
        page.fill("#answer-note", "hello, please")
        page.click("#approve")
        page.wait_for_selector(".facts .badge.running", timeout=15_000)

        # the builder runs: the page (not reloaded) shows it; its failed Write is marked
        page.wait_for_selector(".facts >> text=builder", timeout=15_000)
        (home.root / "go-builder").write_text("")
        page.wait_for_selector(".tag.bad >> text=1 FAILED: Write", timeout=15_000)
        assert "1 denied: Write(/etc/hosts)" in page.locator(".tag.warn").first.inner_text()
        for role in ("reviewer", "tester", "deployer", "docs"):
            (home.root / f"go-{role}").write_text("")
        page.wait_for_selector(".facts .badge.done", timeout=30_000)
        assert page.evaluate("window.__sameDocument") is True
        gates = page.locator("table.gates").inner_text()
        assert "approve: hello, please" in gates and "/ web" in gates
        screenshot(page, "spec-done-timeline")

        # the handoff, as Markdown with the agent's <script> as text
        page.locator("details.more-info").nth(1).locator("summary").click()
        page.wait_for_selector("details[open] .markdown", timeout=SEEN_S)
        handoff = page.locator("details[open] .markdown")
        assert "<script>alert(1)</script>" in handoff.inner_text()
        assert handoff.locator("script").count() == 0
        page.wait_for_selector("details[open] pre.prompt >> text=You are the builder", timeout=SEEN_S)

        # the tool calls of the builder: Bash ok, Write FAILED
        page.click("#tab-calls")
        page.select_option(".picker select", "2")
        page.wait_for_selector("tr.call.failed >> text=Write", timeout=SEEN_S)
        assert "has not been read yet" in page.locator("tr.call.failed").inner_text()
        assert "EACCES" in page.locator("tr.call.denied").inner_text()
        assert page.locator("tr.call.ok >> text=Bash").count() == 1
        screenshot(page, "spec-tool-calls")

        # the diff of the whole branch, coloured, with its file list
        page.click("#tab-diff")
        page.wait_for_selector("pre.diff .line.add >> text=+built", timeout=SEEN_S)
        assert "feature.txt" in page.locator("ul.files").inner_text()
        screenshot(page, "spec-diff")

        # costs: the spend of today, per role
        page.click("#nav-costs")
        page.wait_for_selector("svg.chart", timeout=SEEN_S)
        assert float(page.locator("svg.chart rect").last.get_attribute("height")) > 100  # today: all of it
        assert "builder" in page.locator("main").inner_text()
        screenshot(page, "costs")
        assert alerts == []  # no text from a spec or an agent ever ran as script
        assert agent_runs(home).count("builder") == 1
    finally:
        page.close()
        web.stop()
        home.cleanup()
