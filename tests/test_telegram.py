"""Gates over Telegram: the real python-telegram-bot inside the real daemon, against a local
fake Bot API server on 127.0.0.1 (tests/fake_bot_api.py). Never the real Telegram."""

from __future__ import annotations

import pytest

from conftest import DEFAULT_ROLE_COUNTS, wait_for
from fake_bot_api import FakeBotAPI
import fake_claude

CHAT, OTHER_CHAT, STRANGER_CHAT = 1001, 1002, 666
ALICE, BOB, MALLORY = 42, 43, 99


@pytest.fixture
def bot_api():
    api = FakeBotAPI().start()
    yield api
    api.stop()


def telegram_home(home, api, *, users=(ALICE, BOB), chats=(CHAT, OTHER_CHAT), approvals="", token=None):
    home.env["IWO_TELEGRAM_TOKEN"] = token or api.token
    home.configure(
        f"[telegram]\nallowed_chat_ids = {list(chats)}\nallowed_user_ids = {list(users)}\n"
        f'base_url = "{api.base_url}"\n', approvals=approvals)
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "Add the requests dependency?"},
                                          {"verdict": "approve"}]}})
    return home


def gate_messages(api, chat=None):
    return [m for m in api.sent_messages if "gate" in m["text"] and (chat is None or m["chat_id"] == chat)]


def button(message, label):
    for row in message["reply_markup"]["inline_keyboard"]:
        for key in row:
            if key["text"] == label:
                return key["callback_data"]
    raise AssertionError(f"no {label} button in {message}")


def assert_token_never_logged(home, api):
    for daemon in home.daemons:
        assert api.token not in daemon.log()
        assert api.token.split(":")[1] not in daemon.log()


def test_question_goes_to_every_allowed_chat_and_an_allowed_press_resumes(home, bot_api):
    telegram_home(home, bot_api)
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    bot_api.wait_for(lambda api: len(gate_messages(api)) == 2)
    message = gate_messages(bot_api, CHAT)[0]
    assert "Add the requests dependency?" in message["text"] and spec_id in message["text"]
    assert "reviewer" in message["text"] and "Deadline:" in message["text"]
    data = button(message, "Approve")
    assert len(data.encode()) <= 64 and spec_id not in data
    bot_api.push_callback(CHAT, ALICE, data)
    home.wait_state(spec_id, "done")
    gate = home.spec(spec_id)["gates"][0]
    assert (gate["answer"], gate["answered_by"], gate["answered_via"]) == ("approve", "@alice", "telegram")
    assert home.role_counts(spec_id) == DEFAULT_ROLE_COUNTS  # approve: on to the tester
    bot_api.wait_for(lambda api: sum("Answered: approve" in e["text"] for e in api.edited_messages) >= 2)
    assert any(c["text"] and "Approved" in c["text"] for c in bot_api.answered_callbacks)
    assert_token_never_logged(home, bot_api)


def test_strangers_forged_data_and_stale_buttons_never_resume(home, bot_api):
    telegram_home(home, bot_api)
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    bot_api.wait_for(lambda api: len(gate_messages(api)) == 2)
    message = gate_messages(bot_api, CHAT)[0]
    approve = button(message, "Approve")
    bot_api.push_callback(STRANGER_CHAT, ALICE, approve, message_id=message["message_id"])  # a chat not allowed
    bot_api.push_callback(CHAT, MALLORY, approve)                                           # a user not allowed
    bot_api.push_callback(CHAT, ALICE, "g999999:a")                                         # no such gate
    bot_api.push_callback(CHAT, ALICE, approve.replace(":a", ":x"))                         # forged answer
    bot_api.push_callback(CHAT, ALICE, "x" * 64)                                            # junk
    bot_api.push_text(STRANGER_CHAT, ALICE, "do it anyway", reply_to_message_id=None)
    wait_for(lambda: len(bot_api.answered_callbacks) >= 5, 20)
    assert home.state(spec_id) == "waiting"
    assert home.spec(spec_id)["gates"][0]["answer"] is None
    log = daemon.log()
    assert log.count("dropped an update") >= 3 and "ignored a button" in log
    home.cli("reject", spec_id, "-m", "no", check=True)
    home.wait_state(spec_id, "rejected")
    bot_api.push_callback(CHAT, ALICE, approve)  # stale: the gate was answered from the shell
    wait_for(lambda: any("already answered" in (c["text"] or "") for c in bot_api.answered_callbacks), 20)
    assert home.state(spec_id) == "rejected"
    bot_api.wait_for(lambda api: any("Answered: reject (no) — by" in e["text"] and "via cli" in e["text"]
                                     for e in api.edited_messages))
    assert_token_never_logged(home, bot_api)


def test_a_reply_to_the_question_is_revise_with_its_text(home, bot_api):
    telegram_home(home, bot_api)
    home.env["FAKE_CLAUDE_LOG_PROMPT"] = "1"
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    message = bot_api.wait_for(lambda api: gate_messages(api, OTHER_CHAT))[0]
    bot_api.push_text(OTHER_CHAT, BOB, "Use urllib instead of requests", reply_to_message_id=message["message_id"],
                      username="bob")
    home.wait_state(spec_id, "done")
    gate = home.spec(spec_id)["gates"][0]
    assert (gate["answer"], gate["note"], gate["answered_by"]) == ("revise", "Use urllib instead of requests", "@bob")
    builders = [line["prompt"] for line in fake_claude.read_log(home.log)
                if line["event"] == "start" and line["role"] == "builder"]
    assert len(builders) == 2 and "Use urllib instead of requests" in builders[1]
    bot_api.wait_for(lambda api: any("Sent back to the builder" in m["text"] for m in api.sent_messages))


def test_reminders_follow_remind_every(home, bot_api):
    telegram_home(home, bot_api, chats=(CHAT,), approvals='remind_every = "2s"')
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    bot_api.wait_for(lambda api: sum(m["text"].startswith("Reminder") for m in api.sent_messages) >= 2, timeout=20)
    reminder = [m for m in bot_api.sent_messages if m["text"].startswith("Reminder")][-1]
    bot_api.push_callback(CHAT, ALICE, button(reminder, "Approve"))  # a reminder's button works too
    home.wait_state(spec_id, "done")


@pytest.mark.parametrize("fail_mode, words", [("down", "cannot reach the Bot API"), ("unauthorized", "rejected the token")])
def test_telegram_down_or_token_wrong_the_daemon_works_on(home, bot_api, fail_mode, words):
    telegram_home(home, bot_api)
    bot_api.fail_mode = fail_mode
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    home.cli("approve", spec_id, check=True)
    home.wait_state(spec_id, "done")
    assert daemon.log().count(words) == 1
    assert_token_never_logged(home, bot_api)


def test_a_bad_token_is_never_printed(home, bot_api):
    secret = "987654:SECRET-never-print-me"
    telegram_home(home, bot_api, token=secret)
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    wait_for(lambda: "rejected the token" in daemon.log(), 20)
    daemon.stop()
    for text in (daemon.log(), home.cli("doctor").stdout, home.cli("status", spec_id).stdout):
        assert "SECRET-never-print-me" not in text


def test_answers_wake_the_gate_at_once_not_at_the_next_poll(home, bot_api):
    """With DBOS polling every 60 s, only the daemon's own wake-up can resume a spec promptly."""
    telegram_home(home, bot_api, chats=(CHAT,))
    home.env["IWO_NOTIFICATION_POLL_S"] = "60"
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": "A?"}],
                             "deployer": [{"verdict": "blocker", "question": "B?"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    home.cli("approve", spec_id, check=True)  # from the shell: a poke, then the wake-up
    wait_for(lambda: home.spec(spec_id)["role"] == "deployer" and home.state(spec_id) == "waiting", 20)
    message = bot_api.wait_for(lambda api: [m for m in api.sent_messages if "B?" in m["text"]])[0]
    bot_api.push_callback(CHAT, ALICE, button(message, "Approve"))  # from Telegram
    home.wait_state(spec_id, "done", timeout=20)
