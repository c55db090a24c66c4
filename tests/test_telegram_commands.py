"""From the phone: commands, documents, events and long messages over Telegram, with the real
daemon and python-telegram-bot against the local fake Bot API (tests/fake_bot_api.py).

The helpers are tests/test_telegram.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import wait_for
from fake_bot_api import FakeBotAPI
from iwo_lite.intake import derive_id, text_spec_id
from test_telegram import (ALICE, CHAT, MALLORY, OTHER_CHAT, STRANGER_CHAT, assert_token_never_logged, button,
                           gate_messages, telegram_home)

ALL_PASS = {"roles": {}}  # every role passes at once
SPEC_TEXT = "# Say hello\nMake greet() say hello.\n"


@pytest.fixture
def bot_api():
    api = FakeBotAPI().start()
    yield api
    api.stop()


def replies(api, chat=CHAT, containing: str = "") -> list[dict]:
    """The bot's messages to `chat` that are not gate questions (answers to commands, events)."""
    return [m for m in api.sent_messages if m["chat_id"] == chat and not m.get("reply_markup")
            and containing in m["text"]]


def ask(api, text: str, containing: str = "", chat: int = CHAT, user: int = ALICE, timeout: float = 20) -> dict:
    """Send `text` as `user` and return the bot's first new reply (containing `containing`)."""
    before = len(replies(api, chat))
    api.push_text(chat, user, text)
    found = api.wait_for(lambda a: [m for m in replies(a, chat)[before:] if containing in m["text"]], timeout)
    return found[0]


def send_document(api, name, content: bytes, containing: str = "", **kwargs) -> dict:
    before = len(replies(api))
    api.push_document(CHAT, ALICE, name, content, **kwargs)
    return api.wait_for(lambda a: [m for m in replies(a)[before:] if containing in m["text"]], 20)[0]


def started(home, api, scenario=ALL_PASS, **kwargs):
    telegram_home(home, api, **kwargs)
    home.scenario(scenario)
    daemon = home.start()
    api.wait_for(lambda a: "getUpdates" in a.methods_called(), 30)  # the bot is polling
    return daemon


def test_the_bot_registers_its_commands(home, bot_api):
    started(home, bot_api)
    commands = bot_api.wait_for(lambda api: api.commands)
    assert [c["command"] for c in commands] == ["status", "spec", "submit", "cancel"]
    assert all(0 < len(c["description"]) <= 256 for c in commands)
    assert "/status" in ask(bot_api, "/help")["text"]


def test_status_and_spec_answered_for_a_phone(home, bot_api):
    telegram_home(home, bot_api)
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    bot_api.wait_for(lambda api: len(gate_messages(api)) == 2)
    status = ask(bot_api, "/status", containing=spec_id)["text"]
    assert "waiting · reviewer 03" in status and "Add a greeting" in status
    assert "asks: Add the requests dependency?" in status
    assert max(len(line) for line in status.splitlines()) <= 100
    detail = ask(bot_api, f"/spec {spec_id}", containing="state:")["text"]
    assert detail.splitlines()[0] == spec_id
    assert "state: waiting — reviewer, dispatch 03" in detail
    assert "03 reviewer — blocker" in detail and "02 builder — done" in detail
    assert f"{spec_id}#03 reviewer (blocker) — waiting" in detail
    assert "cost: $" in detail and "over 3 dispatch(es)" in detail
    assert "no such spec" in ask(bot_api, "/spec nope-123", containing="nope")["text"]
    assert "Usage: /spec ID" in ask(bot_api, "/spec", containing="Usage")["text"]
    assert "Unknown command" in ask(bot_api, "/frobnicate", containing="Unknown")["text"]
    assert replies(bot_api, OTHER_CHAT) == []  # answers go to the chat that asked, only
    assert_token_never_logged(home, bot_api)


def test_submit_text_creates_a_spec_once(home, bot_api):
    started(home, bot_api)
    spec_id = text_spec_id(SPEC_TEXT.strip())
    reply = ask(bot_api, "/submit " + SPEC_TEXT, containing=spec_id)["text"]
    assert reply.startswith(f"Submitted {spec_id}")
    home.wait_state(spec_id, "done")
    assert home.spec(spec_id)["title"] == "Say hello"
    again = ask(bot_api, "/submit\n" + SPEC_TEXT, containing=spec_id)["text"]  # the same text again
    assert "already exists" in again and "nothing new started" in again
    assert len(home.specs()) == 1 and home.invocations("planner", spec_id) == 1


def test_submit_without_text_says_how(home, bot_api):
    started(home, bot_api)
    assert "Usage: /submit followed by the spec's text" in ask(bot_api, "/submit   ", containing="Usage")["text"]
    assert home.specs() == []


def test_a_markdown_document_is_submitted(home, bot_api):
    started(home, bot_api)
    content = "# Add a farewell\nMake bye() say goodbye.\n"
    spec_id = derive_id(Path("farewell.md"), content)
    reply = send_document(bot_api, "farewell.md", content.encode(), containing=spec_id)["text"]
    assert reply.startswith(f"Submitted {spec_id}")
    home.wait_state(spec_id, "done")
    assert home.spec(spec_id)["title"] == "Add a farewell"
    assert (home.root / "specs" / spec_id / "spec.md").read_text() == content


def test_bad_documents_get_a_clear_reply_and_start_nothing(home, bot_api):
    started(home, bot_api)
    binary = send_document(bot_api, "spec.md", b"# Title\n\x00\x01\x02", containing="spec.md")["text"]
    assert binary == "spec.md: looks binary (contains NUL bytes); a spec is a text file"
    latin = send_document(bot_api, "latin.txt", "caf\xe9".encode("latin-1"), mime_type="text/plain",
                          containing="latin.txt")["text"]
    assert "not UTF-8 text" in latin
    huge = send_document(bot_api, "huge.md", b"# big\n", file_size=2 * 1024 * 1024, containing="huge.md")["text"]
    assert "over the limit of 1048576 bytes" in huge and "nothing was downloaded" in huge
    image = send_document(bot_api, "photo.png", b"\x89PNG\r\n", mime_type="image/png", containing="photo.png")["text"]
    assert "not a text or markdown file" in image
    empty = send_document(bot_api, "empty.md", b"  \n", containing="empty.md")["text"]
    assert "spec is empty" in empty
    assert all(len(m["text"].splitlines()) == 1 for m in replies(bot_api))  # one line each
    assert len(bot_api.downloads) == 3  # neither the big file nor the image was downloaded
    assert home.specs() == []


def test_cancel_from_the_phone(home, bot_api):
    telegram_home(home, bot_api)
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    reply = ask(bot_api, f"/cancel {spec_id}", containing=spec_id)["text"]
    assert reply.startswith(f"cancelled {spec_id}")
    home.wait_state(spec_id, "cancelled")
    assert "no such spec" in ask(bot_api, "/cancel nope-1", containing="nope-1")["text"]
    assert "already cancelled" in ask(bot_api, f"/cancel {spec_id}", containing="already")["text"]


def test_strangers_commands_and_documents_are_ignored_and_logged(home, bot_api):
    telegram_home(home, bot_api)
    spec_id = home.submit()
    daemon = home.start()
    home.wait_state(spec_id, "waiting")
    bot_api.wait_for(lambda api: len(gate_messages(api)) == 2)
    bot_api.push_text(STRANGER_CHAT, ALICE, f"/cancel {spec_id}")       # a chat not allowed
    bot_api.push_text(STRANGER_CHAT, ALICE, "/submit # Evil\nrm -rf /")
    bot_api.push_document(STRANGER_CHAT, ALICE, "evil.md", b"# Evil\n")
    bot_api.push_text(CHAT, MALLORY, f"/cancel {spec_id}", username="mallory")  # a user not allowed
    bot_api.push_text(CHAT, MALLORY, "/status", username="mallory")
    bot_api.push_document(CHAT, MALLORY, "evil.md", b"# Evil\n", username="mallory")
    ask(bot_api, "/status", containing=spec_id)  # updates are handled in order: the others are done
    assert [m for m in bot_api.sent_messages if m["chat_id"] == STRANGER_CHAT] == []
    assert len(replies(bot_api)) == 1  # the allowed /status only
    assert "getFile" not in bot_api.methods_called() and bot_api.downloads == []
    assert home.state(spec_id) == "waiting" and [s["id"] for s in home.specs()] == [spec_id]
    wait_for(lambda: daemon.log().count("dropped an update") >= 6, 10)
    assert_token_never_logged(home, bot_api)


def test_a_5000_character_question_reaches_the_chat_cut_to_fit(home, bot_api):
    telegram_home(home, bot_api, chats=(CHAT,))
    question = "Which of these should I keep? " + "option " * 710  # about 5,000 characters
    assert len(question) >= 5000
    home.scenario({"roles": {"reviewer": [{"verdict": "blocker", "question": question}, {"verdict": "approve"}]}})
    spec_id = home.submit()
    home.start()
    home.wait_state(spec_id, "waiting")
    message = bot_api.wait_for(lambda api: gate_messages(api, CHAT))[0]
    assert len(message["text"]) <= 4096
    assert message["text"].startswith(f"iwo-lite — spec {spec_id}")
    assert "Which of these should I keep?" in message["text"]
    assert f"the whole text: iwo-lite status {spec_id}" in message["text"]
    assert "Deadline:" in message["text"]  # the end of the message survives the cut
    assert "bad request" not in "\n".join(d.log().lower() for d in home.daemons)
    bot_api.push_callback(CHAT, ALICE, button(message, "Approve"))  # its buttons work
    home.wait_state(spec_id, "done")
    edited = bot_api.wait_for(lambda api: [e for e in api.edited_messages if "Answered: approve" in e["text"]])
    assert len(edited[0]["text"]) <= 4096


def test_the_chats_are_told_when_a_spec_is_done(home, bot_api):
    started(home, bot_api)
    spec_id = home.submit()
    home.wait_state(spec_id, "done")
    for chat in (CHAT, OTHER_CHAT):
        told = bot_api.wait_for(lambda api: replies(api, chat, f"spec {spec_id}"), 20)
        assert len(told) == 1 and told[0]["text"].startswith("iwo-lite — done: Add a greeting")
        assert "6 dispatch(es)" in told[0]["text"]
    rows = wait_for(lambda: len(query := home.query("SELECT kind, gate_id FROM iwo_messages"
                                                    " WHERE notifier = 'telegram'")) >= 2 and query, 10)
    assert sorted(rows) == [("done", None), ("done", None)]  # recorded like gate messages, with no gate
