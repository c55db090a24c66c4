"""`status` over a database made by real runs: a crash and a replay, a gate, a failure."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from conftest import IwoHome, wait_for
import fake_claude

CONTRACT_FIELDS = {"id", "title", "state", "role", "step", "question", "deadline", "updated_at", "dispatches",
                   "cost_usd", "error"}


@pytest.fixture(scope="module")
def lived_home(tmp_path_factory):
    """Three specs: one finished after a kill -9 mid-dispatch, one waiting at a gate, one failed.

    Built once for the module; the last test (resume) changes it."""
    home = IwoHome(tmp_path_factory.mktemp("lived") / "home")
    try:
        yield _live(home)
    finally:
        home.cleanup()


def _live(home):
    home.scenario({"specs": {
        "crashy": {"roles": {"tester": [{"sleep": 1.5}]}},
        "gated": {"roles": {"reviewer": [{"verdict": "blocker", "question": "Which license?"}]}},
    }})
    blocked = home.root / "specs" / "broken" / "handoffs"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")  # the failure: the handoff folder cannot be made
    for spec_id in ("crashy", "gated", "broken"):
        home.submit(home.spec_file(f"{spec_id}.md", f"# Spec {spec_id}\nbody\n"), spec_id)
    daemon = home.start()
    wait_for(lambda: any(l["role"] == "tester" and l["spec"] == "crashy" for l in fake_claude.read_log(home.log)), 60)
    daemon.kill9()
    home.start()
    home.wait_state("crashy", "done")
    home.wait_state("gated", "waiting")
    home.wait_state("broken", "failed")
    return home


def test_json_lists_every_spec_with_the_contract_fields(lived_home):
    specs = {spec["id"]: spec for spec in lived_home.specs()}
    assert set(specs) == {"crashy", "gated", "broken"}
    for spec in specs.values():
        assert CONTRACT_FIELDS <= set(spec)
    crashy, gated, broken = specs["crashy"], specs["gated"], specs["broken"]
    assert (crashy["state"], crashy["role"], crashy["step"], crashy["dispatches"]) == ("done", "docs", 6, 6)
    assert crashy["cost_usd"] == pytest.approx(0.06) and crashy["question"] is None and crashy["error"] is None
    assert (gated["state"], gated["role"], gated["question"]) == ("waiting", "reviewer", "Which license?")
    assert gated["deadline"].endswith("Z") and gated["deadline"] > gated["updated_at"]
    assert broken["state"] == "failed" and "handoffs" in broken["error"] and broken["dispatches"] == 0
    assert crashy["title"] == "Spec crashy"


def test_trace_shows_replay_savings_reattach_gates_and_handoffs(lived_home):
    trace = lived_home.spec("crashy")
    assert [s["role"] for s in trace["steps"]] == ["planner", "builder", "reviewer", "tester", "deployer", "docs"]
    tester = trace["steps"][3]
    assert tester["attempts"][0]["reattached"] == 1 and tester["verdict"] == "pass"
    assert tester["handoff"].endswith("specs/crashy/handoffs/04-tester.md")
    assert trace["recoveries"] == 1
    assert trace["saved_usd"] == pytest.approx(0.04)  # three dispatches replayed + the re-attached tester
    gated = lived_home.spec("gated")
    assert gated["gates"][0]["question"] == "Which license?" and gated["gates"][0]["answer"] is None
    table = lived_home.cli("status", "crashy", check=True).stdout
    assert "re-attached after restart" in table and "saved by replay" in table
    assert "04-tester.md" in table
    # the agent kind that ran each dispatch, recorded with each attempt (the re-attached one too)
    assert [s["agent"] for s in trace["steps"]] == ["json"] * 6 and trace["agent"] == "json"
    assert {s["id"]: s["agent"] for s in lived_home.specs()} == {"crashy": "json", "gated": "json", "broken": None}
    assert all(a["agent"] == "json" for s in trace["steps"] for a in s["attempts"])
    assert " agent " in table.splitlines()[[i for i, line in enumerate(table.splitlines()) if "NN" in line][0]]


def test_table_marks_states_and_a_failed_spec_resumes_without_repeating_calls(lived_home):
    out = lived_home.cli("status", check=True).stdout
    for word in ("crashy", "gated", "broken", "done", "waiting", "failed", "Which license?"):
        assert word in out
    (lived_home.root / "specs" / "broken" / "handoffs").unlink()
    lived_home.cli("resume", "broken", check=True)
    lived_home.wait_state("broken", "done")
    assert lived_home.role_counts("broken") == {r: 1 for r in ("planner", "builder", "reviewer", "tester",
                                                                "deployer", "docs")}


def test_table_shows_50_most_recent_and_all_shows_every_spec(home):
    home.submit()  # creates the database
    rows = [(f"bulk-{i:03d}", f"Bulk {i}", "done", f"2026-01-01T00:00:{i % 60:02d}.{i:03d}Z") for i in range(60)]
    import sqlite3
    conn = sqlite3.connect(home.root / "iwo.sqlite")
    conn.executemany("INSERT INTO iwo_specs (id, title, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                     [(i, t, s, u, u) for i, t, s, u in rows])
    conn.commit()
    conn.close()
    default = home.cli("status", check=True).stdout
    assert "11 older spec(s) not shown" in default
    everything = home.cli("status", "--all", check=True).stdout
    assert "not shown" not in everything and "bulk-000" in everything
    assert len(json.loads(home.cli("status", "--json", check=True).stdout)) == 61


def test_watch_redraws_until_interrupted(home):
    home.submit()
    proc = subprocess.Popen([sys.executable, "-m", "iwo_lite", "status", "--watch"], env=home.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C reaches it even when this test runs as a background job (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    import time
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
    assert "iwo-lite specs" in out


def test_sql_is_read_only_and_unknown_specs_and_bad_queries_exit_2(home):
    spec_id = home.submit()
    out = home.cli("status", "--sql", "SELECT id, state FROM iwo_specs", "--json", check=True)
    assert json.loads(out.stdout) == [{"id": spec_id, "state": "queued"}]
    for args, words in ((("status", "nope"), "nope: no such spec"), (("status", "nope", "--json"), "no such spec"),
                        (("status", "--sql", "UPDATE iwo_specs SET state = 'done'"), "readonly"),
                        (("status", "--sql", "DELETE FROM iwo_specs"), "readonly"),
                        (("status", "--sql", "DROP TABLE iwo_specs"), "readonly"),
                        (("status", "--sql", "SELEC nonsense"), "syntax error"),
                        (("status", "--sql", "SELECT * FROM nowhere"), "no such table"),
                        (("status", spec_id, "--sql", "SELECT 1"), "drop the spec ID"),
                        (("status", "--watch", "--json"), "--json prints once"),
                        (("status", spec_id, "--all"), "--all is for the table")):
        out = home.cli(*args)
        assert out.returncode == 2 and words in out.stderr.replace("read-only", "readonly"), (args, out.stderr)
    assert home.query("SELECT state FROM iwo_specs") == [("queued",)]
