"""From the phone: a spec's events (done, failed, rejected, paused) told to every allowed chat once,
across kill -9 and across workers; the `notifier` lease; "saved by replay" with several workers.

The real daemon and python-telegram-bot against the local fake Bot API (tests/fake_bot_api.py),
the fake `claude`; the Postgres tests run two or three workers on one database (as in
tests/test_postgres.py), only the workers given the token in their environment run the bot.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from conftest import IwoHome, wait_for
from fake_bot_api import FakeBotAPI

CHAT, OTHER_CHAT = 1001, 1002
WORKER_TIMEOUT = 'worker_timeout = "3s"\n'
ALICE = 42
ALL_PASS = {"default": {"cost": 0.01}}


class HeldBotAPI(FakeBotAPI):
    """The fake Bot API whose sendMessage can be held: the request is read, then waits for
    `release` before Telegram takes the message (so a daemon can be killed in between)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.held = threading.Event()  # a sendMessage is waiting
        self.release = threading.Event()

    def _dispatch(self, method, params, client_gone):
        if method.lower() == "sendmessage" and self.hold.is_set():
            self.held.set()
            self.release.wait(60)
        return super()._dispatch(method, params, client_gone)


@pytest.fixture
def bot_api():
    api = FakeBotAPI().start()
    yield api
    api.stop()


def telegram_config(home: IwoHome, api: FakeBotAPI, *, chats=(CHAT, OTHER_CHAT), notify: str = "", token=True,
                    top: str = "", **configure) -> IwoHome:
    """[telegram] for `api`; the token in the daemon's environment only with `token`; `top`: top-level keys."""
    if token:
        home.env["IWO_TELEGRAM_TOKEN"] = api.token
    home.configure(f"[telegram]\nallowed_chat_ids = {list(chats)}\nbase_url = \"{api.base_url}\"\n{notify}\n",
                   **configure)
    if top:
        config = home.root / "config.toml"
        config.write_text(top + config.read_text())
    return home


def events(api: FakeBotAPI, spec_id: str, kind: str | None = None, chat: int | None = None) -> list[dict]:
    """The bot's event messages about `spec_id` (not gate questions: those carry buttons)."""
    found = []
    for message in api.sent_messages:
        lines = message["text"].splitlines()
        if (message["reply_markup"] is None and len(lines) > 1 and lines[0].startswith("iwo-lite — ")
                and lines[1] == f"spec {spec_id}" and (chat is None or message["chat_id"] == chat)
                and (kind is None or lines[0].startswith(f"iwo-lite — {kind}"))):
            found.append(message)
    return found


def outbox_row(home: IwoHome, key: str) -> tuple | None:
    rows = home.query("SELECT sent_at, outcome FROM iwo_outbox WHERE key = ?", (key,))
    return rows[0] if rows else None


def polling(api: FakeBotAPI, since: int = 0) -> bool:
    return "getUpdates" in api.methods_called()[since:]


def git_workdir(home: IwoHome) -> None:
    """The workdir as a git repository with one commit: each spec works on its branch iwo/<id>."""
    work = home.root / "work"
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", *ident, "-C", str(work), "commit", "-q", "--allow-empty", "-m", "base"], check=True)


# -- each event once, and telegram.notify -------------------------------------------------------


def test_each_event_is_told_once_to_every_chat(home, bot_api):
    git_workdir(home)
    telegram_config(home, bot_api, retries=0)
    home.scenario({"default": {"cost": 0.01}, "specs": {
        "nope": {"roles": {"reviewer": [{"verdict": "blocker", "question": "Ship it?"}]}},
        "busy": {"roles": {"reviewer": [{"mode": "is_error"}]}},  # API 529 overloaded: a pause
    }})
    blocked = home.root / "specs" / "broken" / "handoffs"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")  # the failure: the handoff folder cannot be made
    for spec_id, title in (("fine", "Fine work"), ("nope", "Nope"), ("broken", "Broken"), ("busy", "Busy")):
        home.submit(home.spec_file(f"{spec_id}.md", f"# {title}\nbody\n"), spec_id)
    home.start()
    home.wait_state("fine", "done")
    home.wait_state("broken", "failed")
    home.wait_state("nope", "waiting")
    home.cli("reject", "nope", "-m", "not now", check=True)
    home.wait_state("nope", "rejected")
    wait_for(lambda: home.spec("busy")["paused_until"], 60)
    for chat in (CHAT, OTHER_CHAT):
        bot_api.wait_for(lambda api: all(events(api, spec_id, kind, chat) for spec_id, kind in (
            ("fine", "done"), ("nope", "rejected"), ("broken", "failed"), ("busy", "paused"))), 30)
    # sent: every outbox row of these events is marked, so nothing more is coming for them
    wait_for(lambda: all((outbox_row(home, key) or (None,))[0] for key in (
        "spec:fine:done", "spec:nope:rejected", "spec:broken:failed", "spec:busy:paused:03:1")), 20)
    for chat in (CHAT, OTHER_CHAT):
        (done,) = events(bot_api, "fine", chat=chat)  # one message per event and chat
        assert done["text"].splitlines() == ["iwo-lite — done: Fine work", "spec fine", "6 dispatch(es) · $0.0600",
                                             "branch: iwo/fine"]
        (rejected,) = events(bot_api, "nope", chat=chat)
        assert rejected["text"].splitlines()[0] == "iwo-lite — rejected: Nope"
        assert "3 dispatch(es) · $0.0300" in rejected["text"] and "branch: iwo/nope" in rejected["text"]
        (failed,) = events(bot_api, "broken", chat=chat)
        assert failed["text"].startswith("iwo-lite — failed: Broken\nspec broken\nerror: ")
        assert "handoffs" in failed["text"] and "0 dispatch(es) · $0.00" in failed["text"]
        (paused,) = events(bot_api, "busy", chat=chat)
        lines = paused["text"].splitlines()
        assert lines[0] == "iwo-lite — paused (overloaded): Busy" and lines[2].startswith("resumes at 20")
        assert "state running · 3 dispatch(es)" in paused["text"]
    # recorded like gate messages, with no gate: 4 events x 2 chats (+ the gate question of "nope")
    rows = home.query("SELECT kind, COUNT(*) FROM iwo_messages WHERE notifier = 'telegram' AND gate_id IS NULL"
                      " GROUP BY kind ORDER BY kind")
    assert rows == [("done", 2), ("failed", 2), ("paused", 2), ("rejected", 2)]


def test_telegram_notify_chooses_the_events(home, bot_api):
    telegram_config(home, bot_api, notify='notify = ["done"]', chats=(CHAT,))
    home.scenario({"default": {"cost": 0.01}, "specs": {"nope": {"roles": {"reviewer": [{"verdict": "blocker"}]}}}})
    for spec_id in ("fine", "nope"):
        home.submit(home.spec_file(f"{spec_id}.md", f"# {spec_id}\nbody\n"), spec_id)
    home.start()
    home.wait_state("nope", "waiting")
    bot_api.wait_for(lambda api: [m for m in api.sent_messages if m["reply_markup"]])  # gates are always asked
    home.cli("reject", "nope", check=True)
    home.wait_state("fine", "done")
    home.wait_state("nope", "rejected")
    bot_api.wait_for(lambda api: events(api, "fine", "done"))
    wait_for(lambda: (outbox_row(home, "spec:nope:rejected") or (None,))[0], 20)
    assert outbox_row(home, "spec:nope:rejected")[1] == "nothing to send"  # not in telegram.notify
    assert events(bot_api, "nope") == [] and len(events(bot_api, "fine")) == 1


# -- exactly once across kill -9 --------------------------------------------------------------------


def test_kill9_right_after_done_sends_the_event_once(home, bot_api):
    """Killed as soon as the spec is done: whether the event was sent (and marked) before the kill
    or not, after the restart the chat has it once; twice only if the kill fell between Telegram
    taking it and the outbox marking it."""
    telegram_config(home, bot_api, chats=(CHAT,))
    home.scenario(ALL_PASS)
    daemon = home.start()
    bot_api.wait_for(lambda api: polling(api), 30)
    spec_id = home.submit()
    wait_for(lambda: home.state(spec_id) == "done", 60, interval=0.01)
    daemon.kill9()
    time.sleep(0.5)  # a request already on the wire is taken (or not) by now
    before = len(events(bot_api, spec_id))
    marked = (outbox_row(home, f"spec:{spec_id}:done") or (None,))[0] is not None
    assert before <= 1 and (before == 1 or not marked)  # marked only after Telegram took it
    home.start()
    wait_for(lambda: (outbox_row(home, f"spec:{spec_id}:done") or (None,))[0], 30)
    assert len(events(bot_api, spec_id)) == before + (0 if marked else 1)
    assert 1 <= len(events(bot_api, spec_id)) <= 2


def test_an_event_not_yet_sent_at_kill9_is_sent_once_after_the_restart(home, bot_api):
    """Telegram down while the spec ends: the event waits in the outbox through kill -9, then goes out
    once; a clean restart after that sends nothing again."""
    telegram_config(home, bot_api, chats=(CHAT,))
    home.scenario(ALL_PASS)
    bot_api.fail_mode = "down"
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "done")
    # the row says done a moment before the same step adds the event to the outbox
    assert wait_for(lambda: outbox_row(home, f"spec:{spec_id}:done"), 10)[0] is None  # recorded durably, not sent
    daemon.kill9()
    bot_api.fail_mode = None
    daemon = home.start()
    told = bot_api.wait_for(lambda api: events(api, spec_id), 30)
    wait_for(lambda: outbox_row(home, f"spec:{spec_id}:done")[0], 10)
    assert len(told) == 1 and told[0]["text"].startswith("iwo-lite — done: Add a greeting")
    assert daemon.stop() == 0
    home.start()
    other = home.submit(home.spec_file("other.md", "# Other\nbody\n"))
    bot_api.wait_for(lambda api: events(api, other), 60)  # the courier has been round since the restart
    assert len(events(bot_api, spec_id)) == 1


def test_a_crash_between_sending_and_marking_sends_it_twice_not_more(home):
    """The one case the outbox cannot tell apart: Telegram took the message, the daemon died before
    marking the row. The event is sent again after the restart — twice in all, never more."""
    api = HeldBotAPI().start()
    try:
        telegram_config(home, api, chats=(CHAT,))
        home.scenario(ALL_PASS)
        api.hold.set()
        spec_id = home.submit()
        daemon = home.start()
        home.wait_state(spec_id, "done")
        assert api.held.wait(30)  # the courier is sending the done event
        daemon.kill9()
        api.hold.clear()
        api.release.set()  # Telegram takes the message of the dead daemon
        api.wait_for(lambda a: len(events(a, spec_id)) == 1)
        assert outbox_row(home, f"spec:{spec_id}:done")[0] is None
        home.start()
        wait_for(lambda: outbox_row(home, f"spec:{spec_id}:done")[0], 30)
        assert len(events(api, spec_id)) == 2
    finally:
        api.release.set()
        api.stop()


def test_telegram_down_after_the_bot_started_keeps_the_event_until_it_is_back(home, bot_api):
    telegram_config(home, bot_api, chats=(CHAT,))
    home.scenario(ALL_PASS)
    daemon = home.start()
    bot_api.wait_for(lambda api: polling(api), 30)
    bot_api.fail_mode = "down"
    spec_id = home.submit()
    home.wait_state(spec_id, "done")
    wait_for(lambda: "could not send spec:" in daemon.log(), 20)  # tried, and kept
    assert wait_for(lambda: outbox_row(home, f"spec:{spec_id}:done"), 10)[0] is None
    bot_api.fail_mode = None
    bot_api.wait_for(lambda api: events(api, spec_id), 30)
    wait_for(lambda: outbox_row(home, f"spec:{spec_id}:done")[0], 10)
    assert len(events(bot_api, spec_id)) == 1


def backdate_outbox(home: IwoHome, key_like: str, hours: float) -> None:
    """Make the unsent outbox rows matching `key_like` look `hours` old (the daemon is down)."""
    import sqlite3
    from iwo_lite.times import iso_utc

    conn = sqlite3.connect(home.root / "iwo.sqlite")
    try:
        conn.execute("UPDATE iwo_outbox SET created_at = ? WHERE key LIKE ? AND sent_at IS NULL",
                     (iso_utc(time.time() - hours * 3600), key_like))
        conn.commit()
    finally:
        conn.close()


def test_an_event_left_unsent_for_hours_is_still_told_once_the_bot_is_back(home, bot_api):
    """The laptop slept with Telegram unreachable: the done event is hours old when the daemon comes
    back, and a notifier had already delivered before, so it is told (not skipped as history)."""
    telegram_config(home, bot_api, chats=(CHAT,))
    home.scenario(ALL_PASS)
    daemon = home.start()
    first = home.submit(home.spec_file("first.md", "# First\nbody\n"))
    bot_api.wait_for(lambda api: events(api, first), 60)
    bot_api.fail_mode = "down"
    late = home.submit(home.spec_file("late.md", "# Late\nbody\n"))
    home.wait_state(late, "done")
    daemon.kill9()
    backdate_outbox(home, f"spec:{late}:%", 5)
    bot_api.fail_mode = None
    home.start()
    told = bot_api.wait_for(lambda api: events(api, late), 30)
    assert len(told) == 1
    wait_for(lambda: outbox_row(home, f"spec:{late}:done")[0], 10)
    assert outbox_row(home, f"spec:{late}:done")[1] != "skipped (too old)"


def test_a_bot_turned_on_later_skips_old_history_but_asks_open_gates(home, bot_api):
    """No bot ever ran: when one is turned on, events over an hour old are not sent late, but the
    question of a gate still open is (it still wants an answer)."""
    home.scenario({"roles": {"planner": [{"verdict": "blocker", "question": "Go on?"}]},
                   "specs": {"old": {"roles": {"planner": [{}]}}}})
    daemon = home.start()
    old = home.submit(home.spec_file("old.md", "# Old\nbody\n"), "old")
    open_gate = home.submit(home.spec_file("ask.md", "# Ask\nbody\n"), "ask")
    home.wait_state(old, "done")
    home.wait_state(open_gate, "waiting")
    daemon.stop()
    backdate_outbox(home, "%", 3)
    telegram_config(home, bot_api, chats=(CHAT,))
    home.start()
    question = bot_api.wait_for(lambda api: [m for m in api.sent_messages if "Go on?" in m["text"]], 30)
    assert len(question) == 1 and question[0]["reply_markup"] is not None
    wait_for(lambda: outbox_row(home, f"spec:{old}:done")[0], 10)
    assert outbox_row(home, f"spec:{old}:done")[1] == "skipped (too old)"
    assert events(bot_api, old) == []


# -- several workers on Postgres ---------------------------------------------------------------------


@pytest.fixture
def workers(tmp_path, postgres_url):
    """make(...): a worker home on one Postgres database (worker_timeout 3s); all share one fake-agent log."""
    made: list[IwoHome] = []

    def make(top: str = WORKER_TIMEOUT, **configure) -> IwoHome:
        like = made[0] if made else None
        worker = IwoHome(tmp_path / f"worker-{len(made) + 1}", database_url=postgres_url,
                         executor_id=f"worker-{len(made) + 1}", like=like)
        worker.configure(**configure)
        config = worker.root / "config.toml"
        config.write_text(top + config.read_text())
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.cleanup()


def started_rows(home: IwoHome, executor: str) -> int:
    return home.query("SELECT COUNT(*) FROM iwo_daemon_starts WHERE executor_id = ?", (executor,))[0][0]


def restart(home: IwoHome, executor: str, *, kill: bool = True) -> None:
    """Kill -9 (or stop) the worker's daemon and start it again; returns once it has started."""
    before = started_rows(home, executor)
    daemon = home.daemons[-1]
    daemon.kill9() if kill else daemon.stop()
    home.start()
    wait_for(lambda: started_rows(home, executor) > before, 60)


def lease_holder(home: IwoHome) -> str | None:
    rows = home.query("SELECT holder FROM iwo_leases WHERE name = 'notifier'")
    return rows[0][0] if rows else None


def test_the_bot_on_another_worker_tells_of_gates_and_events_and_a_standby_takes_over(workers):
    api = FakeBotAPI().start()
    try:
        first = telegram_config(workers(), api, chats=(CHAT,), token=False, top=WORKER_TIMEOUT)  # no token: no bot here
        first.scenario({"default": {"cost": 0.01}, "specs": {
            "asks": {"roles": {"reviewer": [{"verdict": "blocker", "question": "Use requests?"},
                                            {"verdict": "approve"}]}},
            "later": {"roles": {"deployer": [{"verdict": "blocker", "question": "Deploy now?"}]}}}})
        for spec_id in ("asks", "later"):
            first.submit(first.spec_file(f"{spec_id}.md", f"# {spec_id.title()}\nbody\n"), spec_id)
        first.start()
        wait_for(lambda: first.query("SELECT COUNT(*) FROM iwo_specs WHERE launched_by = 'worker-1'") == [(2,)], 60)
        bot = telegram_config(workers(), api, chats=(CHAT,), top=WORKER_TIMEOUT)  # worker 2: the token, so the bot
        bot_daemon = bot.start()
        question = api.wait_for(lambda a: [m for m in a.sent_messages if "Use requests?" in m["text"]], 60)[0]
        assert lease_holder(first) == "worker-2" and "asks" in question["text"]
        data = next(key["callback_data"] for row in question["reply_markup"]["inline_keyboard"] for key in row
                    if key["text"] == "Approve")
        api.push_callback(CHAT, ALICE, data)
        first.wait_state("asks", "done", timeout=60)
        gate = first.spec("asks")["gates"][0]
        assert (gate["answer"], gate["answered_via"]) == ("approve", "telegram")
        # the spec went on where it was, on worker 1: every agent run and the workflow are worker 1's
        assert first.query("SELECT DISTINCT executor_id FROM iwo_attempts WHERE spec_id = 'asks'") == [("worker-1",)]
        assert first.query("SELECT executor_id FROM workflow_status WHERE workflow_uuid = 'asks'") == [("worker-1",)]
        done = api.wait_for(lambda a: events(a, "asks", "done"), 30)
        assert len(done) == 1 and "6 dispatch(es)" in done[0]["text"]  # worker 1's event, told by worker 2
        assert not any("notifiers on" in d.log() for d in first.daemons)
        api.wait_for(lambda a: [m for m in a.sent_messages if "Deploy now?" in m["text"]], 60)

        # the lease: a standby with the token waits; kill -9 the bot's worker and the standby takes over
        standby = telegram_config(workers(), api, chats=(CHAT,), top=WORKER_TIMEOUT)
        standby.start()
        wait_for(lambda: started_rows(first, "worker-3") == 1, 60)
        time.sleep(1.5)  # it has tried the lease: it is not free
        assert lease_holder(first) == "worker-2" and not any("notifiers on" in d.log() for d in standby.daemons)
        bot_daemon.kill9()
        killed = time.time()
        first.cli("reject", "later", "-m", "not today", check=True)  # an event after the bot died
        first.wait_state("later", "rejected")
        wait_for(lambda: lease_holder(first) == "worker-3", 10)
        took = time.time() - killed
        # within worker_timeout (3s) of the holder's death; 1s more for this host's scheduling
        assert took <= 3.0 + 1.0, f"the standby took the lease {took:.1f}s after the kill (worker_timeout 3s)"
        told = api.wait_for(lambda a: events(a, "later", "rejected"), 20)  # what was left, sent by worker 3
        assert len(told) == 1
        api.wait_for(lambda a: any("Deploy now?" in e["text"] and "Answered: reject" in e["text"]
                                   for e in a.edited_messages), 20)  # worker 2's question, marked by worker 3
        assert len(events(api, "asks", "done")) == 1  # nothing sent twice by the new holder
    finally:
        api.stop()


def test_saved_by_replay_counts_restarts_of_the_holder_and_takeovers_only(workers):
    first = workers()
    first.scenario({"default": {"cost": 0.01}, "roles": {"reviewer": [{"verdict": "blocker", "question": "Go?"}]}})
    spec_id = first.submit()
    first.start()
    first.wait_state(spec_id, "waiting")

    def replay() -> tuple[int, float]:
        spec = first.spec(spec_id)
        return spec["recoveries"], round(spec["saved_usd"], 6)

    assert replay() == (0, 0.0)
    second = workers()
    second.start()
    wait_for(lambda: started_rows(first, "worker-2") == 1, 60)
    assert replay() == (0, 0.0)  # another worker's start recovers nothing of worker 1's
    restart(second, "worker-2")
    restart(second, "worker-2", kill=False)
    assert replay() == (0, 0.0)
    restart(first, "worker-1")  # the holder restarted: it replayed planner, builder, reviewer
    first.wait_state(spec_id, "waiting")
    assert replay() == (1, 0.03)
    first.daemons[-1].kill9()  # the holder dies: worker 2 takes the spec over
    wait_for(lambda: first.query("SELECT recovered_by FROM iwo_workers WHERE executor_id = 'worker-1'")
             == [("worker-2",)], 30)
    assert replay() == (2, 0.06)
    wait_for(lambda: first.query("SELECT executor_id FROM workflow_status WHERE workflow_uuid = ?", (spec_id,))
             == [("worker-2",)], 30)
    restart(first, "worker-1")  # worker 1 back (it registers again): the takeover still counts, its start not
    assert replay() == (2, 0.06)
    first.daemons[-1].stop()  # (or worker 1 would take worker 2's specs over while worker 2 restarts)
    restart(second, "worker-2")  # worker 2 holds it now: its restart counts
    assert replay() == (3, 0.09)
    first.cli("approve", spec_id, check=True)
    first.wait_state(spec_id, "done", timeout=60)
    restart(second, "worker-2")  # a finished spec is not recovered
    assert replay() == (3, 0.09)
    assert first.query("SELECT DISTINCT executor_id FROM iwo_attempts WHERE spec_id = ? AND step > 3",
                       (spec_id,)) == [("worker-2",)]
