"""The dashboard in a real browser (Debian's Chromium through Playwright): a person follows a spec
from submit to done without reloading, answers its gate there, reads its diff and tool calls, and
cannot miss a dead daemon or a failed tool. Screenshots go to build/screenshots/ ($IWO_SCREENSHOTS)."""

from __future__ import annotations

import functools
import http.server
import re
import threading

import pytest
from playwright.sync_api import expect

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


def test_the_browser_s_security_cases(tmp_path, browser):
    """Without the token: nothing but a note. Another origin's page (another port of this machine —
    the same site, so the cookie goes along): its form POST and its fetch change nothing. A spec
    uploaded as a file through the page is submitted."""
    home, _ = web_home(tmp_path)
    web, other = WebServer(home), None
    alerts: list[str] = []
    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(web.base + "/")
        assert "open the URL `iwo-lite web` printed" in page.inner_text("body")
        assert page.goto(web.base + "/api/specs").status == 401
        page.goto(web.url)  # the cookie, now
        page.wait_for_selector("text=No specs yet", timeout=SEEN_S)
        # upload a spec file through the page
        spec = tmp_path / "upload-me.md"
        spec.write_text("# Uploaded <script>alert(2)</script>\nbody\n")
        page.click("#open-submit")
        page.set_input_files("#submit-file", str(spec))
        # not wait_for_function: its polling evals the predicate in the page, which the page's CSP
        # (script-src 'self') refuses whenever the first check comes too early
        expect(page.locator("#submit-text")).to_have_value(re.compile("Uploaded"), timeout=SEEN_S)
        page.click("#submit-send")
        page.wait_for_url(re.compile(r"/spec/upload-me-"), timeout=SEEN_S)
        page.wait_for_selector(".crumbs", timeout=SEEN_S)
        assert page.locator("h1").inner_text() == "Uploaded <script>alert(2)</script>"
        before = call(web.base, "/api/specs", token=web.token)[2]

        # another origin: a page on another port of this machine (the same site: the cookie goes along)
        target = web.base + "/api/specs"
        pages = tmp_path / "evil"
        pages.mkdir()
        (pages / "form.html").write_text(
            '<form method="POST" enctype="text/plain" action="%s"><input name=\'{"text": "# evil\\n", "x": "\' '
            'value=\'"}\'></form><script>document.forms[0].submit()</script>' % target)
        (pages / "blank.html").write_text("<p>nothing here</p>")
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(pages))
        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        evil_base = f"http://127.0.0.1:{other.server_address[1]}"
        evil = context.new_page()
        evil.goto(evil_base + "/form.html")
        evil.wait_for_url(target, timeout=SEEN_S)  # the form went to the dashboard...
        assert "another origin" in evil.inner_text("body")  # ...and was refused
        evil.goto(evil_base + "/blank.html")
        outcome = evil.evaluate("""async (target) => {
            try {
                const r = await fetch(target, {method: 'POST', credentials: 'include',
                    headers: {'Content-Type': 'application/json'}, body: JSON.stringify({text: '# evil\\n'})});
                return 'answered ' + r.status;
            } catch (error) { return 'blocked'; }
        }""", target)
        assert outcome == "blocked"  # no CORS: the browser refuses the preflight
        evil.evaluate("""async (target) => {
            try {
                await fetch(target, {method: 'POST', mode: 'no-cors', credentials: 'include',
                    headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({text: '# evil\\n'})});
            } catch (error) {}
        }""", target)
        assert call(web.base, "/api/specs", token=web.token)[2] == before  # nothing was submitted
        assert alerts == []
    finally:
        page.close()
        context.close()
        web.stop()
        if other is not None:
            other.shutdown()
        home.cleanup()
