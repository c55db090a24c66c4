"""Tests for tests/fake_bot_api.py, driven by the real python-telegram-bot 22.

PTB runs the way the daemon will run it: inside one asyncio loop,
``async with app: await app.start(); await app.updater.start_polling(...)``.
Nothing here talks to anything but 127.0.0.1.

Note: ``FakeBotAPI.wait_for`` blocks its thread, so from inside the event loop
call it through ``asyncio.to_thread`` (as these tests do), never directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, AsyncIterator

import httpx
import pytest
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, EndPointNotFound, InvalidToken, NetworkError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

try:
    from tests.fake_bot_api import DEFAULT_TOKEN, FakeBotAPI
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from fake_bot_api import DEFAULT_TOKEN, FakeBotAPI

pytestmark = pytest.mark.timeout(60)

TOKEN = DEFAULT_TOKEN
CHAT = 4242
USER = 4242
GROUP = -100123


@pytest.fixture
def fake() -> Any:
    with FakeBotAPI(token=TOKEN) as f:
        yield f


def build_app(fake: FakeBotAPI, token: str = TOKEN) -> Application:
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(fake.base_url)
        .connect_timeout(2)
        .read_timeout(3)
        .get_updates_connect_timeout(2)
        .get_updates_read_timeout(3)
        .build()
    )


@contextlib.asynccontextmanager
async def running(app: Application) -> AsyncIterator[Application]:
    """Start *app* polling like the daemon does; stop it on exit."""
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0.0, timeout=1)
        try:
            yield app
        finally:
            if app.updater.running:
                await app.updater.stop()
            await app.stop()


async def until(predicate: Any, timeout: float = 5.0) -> Any:
    """Await until predicate() is truthy (polling the event loop, not blocking it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def initialize_fails(app: Application, exc: type[BaseException]) -> None:
    """app.initialize() must raise *exc*. PTB quirk: a failed initialize leaves the
    bot's httpx clients open (Application.shutdown() is a no-op when not
    initialized, also under ``async with app``), so close them via the bot."""
    try:
        with pytest.raises(exc):
            await app.initialize()
    finally:
        await app.bot.shutdown()


def run(coro: Any, timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d) for t, d in pairs]])


# --------------------------------------------------------------------- PTB


def test_text_and_command_reach_handlers(fake: FakeBotAPI, capfd: Any) -> None:
    texts: list[tuple[int, int, str]] = []
    commands: list[list[str]] = []

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.effective_message
        texts.append((m.chat_id, update.effective_user.id, m.text))

    async def on_status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        commands.append(list(context.args))
        await update.effective_message.reply_text("all good", parse_mode="HTML")

    async def main() -> None:
        app = build_app(fake)
        app.add_handler(CommandHandler("status", on_status))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
        async with running(app):
            assert app.bot.username == "iwo_test_bot"
            fake.push_text(CHAT, USER, "hello there")
            fake.push_text(GROUP, USER, "/status@iwo_test_bot now", username="bob")
            await until(lambda: texts and commands)
            sent = await asyncio.to_thread(fake.wait_for, lambda f: f.sent_messages)
        assert texts == [(CHAT, USER, "hello there")]
        assert commands == [["now"]]
        assert sent[0]["chat_id"] == GROUP
        assert sent[0]["text"] == "all good"
        assert sent[0]["parse_mode"] == "HTML"
        assert sent[0]["reply_markup"] is None

    run(main())
    methods = fake.methods_called()
    assert methods[:3] == ["getMe", "deleteWebhook", "getUpdates"]
    # Everything was confirmed by an offset (the updater's last get_updates).
    assert fake.pending_updates == []
    out, err = capfd.readouterr()
    assert err == "" and out == ""  # the server logs nothing per request


def test_inline_keyboard_and_callback(fake: FakeBotAPI) -> None:
    seen: list[tuple[str, int, int]] = []

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        q = update.callback_query
        seen.append((q.data, q.message.message_id, q.from_user.id))
        await q.answer("noted", show_alert=True)
        await q.edit_message_text(f"chose {q.data}")

    async def main() -> None:
        app = build_app(fake)
        app.add_handler(CallbackQueryHandler(on_button))
        async with running(app):
            msg = await app.bot.send_message(
                CHAT, "approve?", reply_markup=keyboard(("Yes", "yes:7"), ("No", "no:7"))
            )
            # The returned Message carries the keyboard, as Telegram's does.
            assert msg.reply_markup.inline_keyboard[0][0].callback_data == "yes:7"
            rec = fake.sent_messages[-1]
            assert rec["message_id"] == msg.message_id
            assert rec["chat_id"] == CHAT
            assert rec["reply_markup"] == {
                "inline_keyboard": [
                    [
                        {"text": "Yes", "callback_data": "yes:7"},
                        {"text": "No", "callback_data": "no:7"},
                    ]
                ]
            }
            fake.push_callback(CHAT, USER, "yes:7", message_id=msg.message_id)
            await asyncio.to_thread(fake.wait_for, lambda f: f.edited_messages)
            assert seen == [("yes:7", msg.message_id, USER)]
            # Without message_id: the last message the bot sent to the chat.
            fake.push_callback(CHAT, USER, "no:7")
            await until(lambda: len(fake.edited_messages) == 2)

        answered = fake.answered_callbacks
        assert [a["text"] for a in answered] == ["noted", "noted"]
        assert answered[0]["show_alert"] is True
        assert answered[0]["callback_query_id"] != answered[1]["callback_query_id"]
        edited = fake.edited_messages
        assert edited[0]["message_id"] == msg.message_id
        assert edited[0]["text"] == "chose yes:7"
        assert edited[0]["reply_markup"] is None  # keyboard removed by the edit
        # The second callback saw the message in its edited state.
        assert seen[1][0] == "no:7"

    run(main())


def test_reply_to_bot_message(fake: FakeBotAPI) -> None:
    got: list[Any] = []

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got.append(update.message)

    async def main() -> None:
        app = build_app(fake)
        app.add_handler(MessageHandler(filters.REPLY & filters.TEXT, on_text))
        async with running(app):
            question = await app.bot.send_message(CHAT, "Why did it fail?")
            fake.push_text(CHAT, USER, "because X", reply_to_message_id=question.message_id)
            await until(lambda: got)
            # The bot answering with reply_to_message_id (PTB sends reply_parameters).
            answer = await got[0].reply_text("thanks", do_quote=True)
            assert answer.reply_to_message.message_id == got[0].message_id
        reply = got[0].reply_to_message
        assert reply.message_id == question.message_id
        assert reply.from_user.is_bot and reply.text == "Why did it fail?"
        assert fake.sent_messages[-1]["reply_to_message_id"] == got[0].message_id

    run(main())
    with pytest.raises(ValueError):
        fake.push_text(CHAT, USER, "reply to nothing", reply_to_message_id=999_999)


def test_wrong_token_is_rejected_at_initialize(fake: FakeBotAPI) -> None:
    async def main() -> None:
        await initialize_fails(build_app(fake, token="999:WRONG"), InvalidToken)
        fake.fail_mode = "unauthorized"
        await initialize_fails(build_app(fake), InvalidToken)
        fake.fail_mode = None
        async with build_app(fake) as app:  # the right token works
            with pytest.raises(EndPointNotFound):
                await app.bot.do_api_request("sendHologram")

    run(main())
    assert [m for m, _ in fake.requests] == ["getMe", "getMe", "getMe", "sendHologram"]


def test_down_does_not_hang_and_recovers(fake: FakeBotAPI) -> None:
    got: list[str] = []

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        got.append(update.message.text)

    async def main() -> None:
        fake.fail_mode = "down"
        t0 = time.monotonic()
        await initialize_fails(build_app(fake), NetworkError)
        fake.fail_mode = "close"
        await initialize_fails(build_app(fake), NetworkError)
        assert time.monotonic() - t0 < 3
        fake.fail_mode = None

        app = build_app(fake)
        app.add_handler(MessageHandler(filters.TEXT, on_text))
        async with running(app):
            await until(lambda: "getUpdates" in fake.methods_called())
            fake.fail_mode = "down"  # also fails the long poll in flight at once
            t0 = time.monotonic()
            with pytest.raises(NetworkError):
                await app.bot.send_message(CHAT, "lost")
            assert time.monotonic() - t0 < 3
            await asyncio.sleep(0.3)
            fake.fail_mode = None
            fake.push_text(CHAT, USER, "after the outage")
            await until(lambda: got, timeout=6)  # PTB backs off 1 s after an error
        assert got == ["after the outage"]

    run(main())
    assert fake.sent_messages == []


def test_stopped_server_is_gone(fake: FakeBotAPI) -> None:
    async def main() -> None:
        async with running(build_app(fake)) as app:
            await app.bot.send_message(CHAT, "before")  # leaves a keep-alive connection
            fake.stop()
            t0 = time.monotonic()
            with pytest.raises(NetworkError):
                await app.bot.send_message(CHAT, "after")
            assert time.monotonic() - t0 < 3

    run(main())
    assert [m["text"] for m in fake.sent_messages] == ["before"]


def test_unauthorized_while_polling_kills_the_poller(fake: FakeBotAPI) -> None:
    """PTB 22.8 quirk the daemon must handle: an InvalidToken during polling ends
    the polling task for good (no retry), ``updater.running`` stays True, and
    the error is re-raised by ``updater.stop()``."""

    async def main() -> None:
        app = build_app(fake)
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0.0, timeout=1)
            await until(lambda: "getUpdates" in fake.methods_called())
            fake.fail_mode = "unauthorized"
            await asyncio.sleep(0.5)
            n = len(fake.requests)
            await asyncio.sleep(1.2)
            assert len(fake.requests) == n  # nobody polls any more
            assert app.updater.running
            fake.fail_mode = None
            with pytest.raises(InvalidToken):
                await app.updater.stop()
            await app.stop()

    run(main())


# ------------------------------------------------------------ raw HTTP (no PTB)


def call(fake: FakeBotAPI, method: str, token: str = TOKEN, **kw: Any) -> tuple[int, Any]:
    req = urllib.request.Request(f"{fake.base_url.removesuffix('/bot')}/bot{token}/{method}", **kw)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_raw_http_shapes(fake: FakeBotAPI) -> None:
    assert call(fake, "getMe")[1]["result"]["is_bot"] is True
    assert call(fake, "GETME")[0] == 200  # method names are case-insensitive
    assert call(fake, "getMe", token="1:nope") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert call(fake, "sendSticker") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )
    # GET with a query string, POST with a JSON body.
    code, body = call(fake, f"sendMessage?chat_id={GROUP}&text=42")
    assert code == 200 and body["result"]["chat"]["type"] == "group"
    code, body = call(fake, "sendMessage?chat_id=-1001234567890&text=42")
    assert code == 200 and body["result"]["chat"]["type"] == "supergroup"
    assert fake.sent_messages[-1]["text"] == "42"  # free text is never JSON-decoded
    data = json.dumps({"chat_id": 7, "text": "hi", "reply_markup": {"inline_keyboard": []}})
    code, body = call(
        fake, "sendMessage", data=data.encode(), headers={"Content-Type": "application/json"}
    )
    assert code == 200
    assert body["result"]["chat"] == {"id": 7, "type": "private", "first_name": "User"}
    assert fake.sent_messages[-1]["reply_markup"] == {"inline_keyboard": []}
    # multipart/form-data, what PTB sends when a file is attached.
    r = httpx.post(
        f"{fake.base_url}{TOKEN}/sendMessage",
        data={"chat_id": "7", "text": "with file", "disable_notification": "true"},
        files={"document": ("log.txt", b"abc", "text/plain")},
    )
    assert r.status_code == 200 and r.json()["result"]["text"] == "with file"
    rec = fake.sent_messages[-1]
    assert rec["document"] == {"filename": "log.txt", "content_type": "text/plain", "size": 3}
    assert rec["disable_notification"] is True and rec["chat_id"] == 7
    assert call(fake, "sendMessage?chat_id=7&text=")[0] == 400
    assert call(fake, "answerCallbackQuery?callback_query_id=nope")[0] == 400
    assert call(fake, "editMessageText?chat_id=7&message_id=999&text=x")[0] == 400
    assert ("sendSticker", {}) in fake.requests


def test_long_poll_offset_and_prompt_wakeup(fake: FakeBotAPI) -> None:
    t0 = time.monotonic()
    assert call(fake, "getUpdates?timeout=0.3")[1]["result"] == []
    assert 0.25 < time.monotonic() - t0 < 1.5
    first = fake.push_text(CHAT, USER, "one")
    second = fake.push_text(CHAT, USER, "two")
    got = call(fake, "getUpdates?offset=0&timeout=5")[1]["result"]
    assert [u["update_id"] for u in got] == [first, second]
    assert got[0]["message"]["text"] == "one"
    assert call(fake, "getUpdates?limit=1")[1]["result"][0]["update_id"] == first
    # offset confirms: `first` is gone for good.
    got = call(fake, f"getUpdates?offset={second}")[1]["result"]
    assert [u["update_id"] for u in got] == [second]
    assert [u["update_id"] for u in fake.pending_updates] == [second]

    # A pending long poll returns as soon as an update is pushed.
    result: list[Any] = []
    th = threading.Thread(
        target=lambda: result.append(call(fake, f"getUpdates?offset={second + 1}&timeout=10"))
    )
    t0 = time.monotonic()
    th.start()
    fake.wait_for(lambda f: f.requests[-1][1].get("offset") == second + 1)
    third = fake.push_raw(
        {"message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}}
    )
    th.join(5)
    assert result and result[0][1]["result"][0]["update_id"] == third
    assert time.monotonic() - t0 < 1.5  # not the 2 s server cap, not the 10 s asked

    with pytest.raises(AssertionError, match="wait_for timed out"):
        fake.wait_for(lambda f: False, timeout=0.1)
    assert TOKEN not in repr(fake) and TOKEN not in fake.dump()


# ------------------------------------------------- documents, commands, limits


def build_file_app(fake: FakeBotAPI) -> Application:
    return (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(fake.base_url)
        .base_file_url(fake.file_base_url)
        .connect_timeout(2)
        .read_timeout(3)
        .get_updates_connect_timeout(2)
        .get_updates_read_timeout(3)
        .build()
    )


def test_document_update_get_file_and_download(fake: FakeBotAPI) -> None:
    got: list[tuple[str | None, str | None, int | None, bytes, str | None]] = []
    content = "# Spec\nÜnïcode body\n".encode()

    async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        doc = update.message.document
        data = await (await context.bot.get_file(doc.file_id)).download_as_bytearray()
        got.append((doc.file_name, doc.mime_type, doc.file_size, bytes(data), update.message.caption))

    async def main() -> None:
        app = build_file_app(fake)
        app.add_handler(MessageHandler(filters.Document.ALL, on_document))
        async with running(app):
            fake.push_document(CHAT, USER, "spec.md", content, caption="/submit please")
            await until(lambda: got)
            with pytest.raises(BadRequest, match="(?i)invalid file_id"):
                await app.bot.get_file("no-such-file")
        name, mime, size, data, caption = got[0]
        assert (name, mime, size, caption) == ("spec.md", "text/markdown", len(content), "/submit please")
        assert data == content

    run(main())
    assert fake.methods_called().count("getFile") == 2
    assert fake.downloads == ["documents/file_1.md"]


def test_document_shapes_big_files_and_raw_download(fake: FakeBotAPI) -> None:
    fake.push_document(CHAT, USER, None, b"\x89PNG", mime_type=None, file_size=25 * 1024 * 1024)
    fake.push_document(CHAT, USER, "a.txt", b"hello", mime_type="text/plain", caption="/submit")
    first, second = (u["message"] for u in fake.pending_updates)
    assert "file_name" not in first["document"] and "mime_type" not in first["document"]
    assert first["document"]["file_size"] == 25 * 1024 * 1024
    assert second["caption_entities"] == [{"type": "bot_command", "offset": 0, "length": 7}]
    code, body = call(fake, f"getFile?file_id={first['document']['file_id']}")
    assert (code, body["description"]) == (400, "Bad Request: file is too big")
    code, body = call(fake, f"getFile?file_id={second['document']['file_id']}")
    assert code == 200 and body["result"]["file_path"] == "documents/file_2.txt"
    root = fake.base_url.removesuffix("/bot")
    with urllib.request.urlopen(f"{root}/file/bot{TOKEN}/documents/file_2.txt", timeout=5) as r:
        assert r.read() == b"hello"
    for path, status in ((f"/file/bot{TOKEN}/documents/nope", 404), ("/file/bot1:wrong/documents/file_2.txt", 401)):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(root + path, timeout=5)
        assert error.value.code == status
    assert fake.downloads == ["documents/file_2.txt"]


def test_set_my_commands_is_recorded(fake: FakeBotAPI) -> None:
    async def main() -> None:
        async with build_app(fake) as app:
            await app.bot.set_my_commands([BotCommand("status", "Recent specs"), BotCommand("spec", "One spec")])
            assert [c.command for c in await app.bot.get_my_commands()] == ["status", "spec"]

    run(main())
    assert fake.commands == [{"command": "status", "description": "Recent specs"},
                             {"command": "spec", "description": "One spec"}]


def test_send_message_enforces_the_4096_limit(fake: FakeBotAPI) -> None:
    async def main() -> None:
        async with build_app(fake) as app:
            await app.bot.send_message(CHAT, "x" * 4096)
            with pytest.raises(BadRequest, match="(?i)message is too long"):
                await app.bot.send_message(CHAT, "x" * 4097)
            with pytest.raises(BadRequest, match="(?i)message is too long"):
                await app.bot.send_message(CHAT, "\U0001f600" * 2049)  # UTF-16 units, as Telegram counts

    run(main())
    assert [len(m["text"]) for m in fake.sent_messages] == [4096]
