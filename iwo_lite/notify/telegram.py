"""The Telegram notifier: the bot inside the daemon, gate questions out, button presses and replies in.

Owns: starting python-telegram-bot (polling) in the daemon's event loop and keeping the
daemon alive when Telegram is down or the token is wrong (one warning, retries quietly);
sending a gate's question to every allowed chat with Approve / Reject buttons and recording
the sent messages (iwo_messages, notifier "telegram", ref "<chat id>:<message id>") so presses
and replies map to their gate after a restart; turning a press into approve/reject and a
reply into revise through the daemon's one answer path (gates.Gates.answer); dropping (and
logging) updates from chats or users not allowed; editing the messages once a gate is
answered; and keeping the token out of every log line.

Sending is at-least-once: a crash between sending and recording may send a question twice.
Button data is `g<gate rowid>:a` or `g<gate rowid>:r` (well under Telegram's 64 bytes): it
names the gate, never carries the answer's text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from iwo_lite.config import Config
from iwo_lite.notify import AnswerFn
from iwo_lite.store import gates as gate_rows

log = logging.getLogger("iwo_lite.telegram")

CALLBACK = re.compile(r"g([0-9]{1,12}):([ar])")  # used with fullmatch: nothing before or after
BUTTON_ANSWERS = {"a": "approve", "r": "reject"}
RETRY_START_S = 30.0
NAME = "telegram"


class RedactToken(logging.Filter):
    """Replaces the token in every record (message, args and traceback) with ***."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "***"), ()
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info))
            if self.token in text:
                record.exc_info, record.exc_text = None, text.replace(self.token, "***")
        return True


def install_redaction(token: str) -> RedactToken:
    redactor = RedactToken(token)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return redactor


REMINDER_PREFIX = "Reminder — still waiting for an answer.\n\n"


def gate_text(gate: dict, kind: str = "question") -> str:
    prefix = REMINDER_PREFIX if kind == "reminder" else ""
    return (f"{prefix}iwo-lite — spec {gate['spec_id']}: {gate['title']}\n"
            f"The {gate['role']} asks (gate {gate['gate_id']}):\n\n{gate['question']}\n\n"
            f"Deadline: {gate['deadline']} (then: {gate['on_timeout']})\n"
            "Reply to this message to send the spec back to the builder with your text.")


def message_ref(chat_id: int, message_id: int) -> str:
    return f"{chat_id}:{message_id}"


class TelegramNotifier:
    name = NAME

    def __init__(self, config: Config, token: str, store, answer_gate: AnswerFn):
        self.config = config
        self.token = token
        self.store = store
        self.answer_gate = answer_gate
        self.app = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._warned = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="iwo-telegram")

    async def _run(self) -> None:
        from telegram.error import InvalidToken

        while True:
            try:
                await self._start_once()
                return
            except InvalidToken:
                log.warning("telegram: the Bot API rejected the token in $%s; the bot is off "
                            "(answer gates from the shell)", self.config.telegram.token_env)
                return
            except Exception as error:  # network down, server error: keep working, retry quietly
                if not self._warned:
                    log.warning("telegram: cannot reach the Bot API (%s); gates still take answers from "
                                "the shell; retrying every %ds", type(error).__name__, RETRY_START_S)
                    self._warned = True
                await self._discard_app()
                await asyncio.sleep(RETRY_START_S)

    async def _start_once(self) -> None:
        from telegram import Update
        from telegram.ext import (ApplicationBuilder, CallbackQueryHandler, MessageHandler, TypeHandler,
                                  filters)

        app = (ApplicationBuilder().token(self.token).base_url(self.config.telegram.base_url)
               .connect_timeout(10).read_timeout(15).write_timeout(15).get_updates_read_timeout(40).build())
        app.add_handler(TypeHandler(Update, self._gatekeeper), group=-1)
        app.add_handler(CallbackQueryHandler(self._on_press))
        app.add_handler(MessageHandler(filters.REPLY & filters.TEXT & ~filters.COMMAND, self._on_reply))
        self.app = app
        await app.initialize()
        await app.start()
        await app.updater.start_polling(poll_interval=0.0, timeout=30, drop_pending_updates=False,
                                        error_callback=self._polling_error)
        self.ready.set()
        log.info("telegram: bot polling, %d allowed chat(s)", len(self.config.telegram.allowed_chat_ids))

    def _polling_error(self, error: Exception) -> None:
        log.warning("telegram: polling error %s (retrying)", type(error).__name__)

    async def _discard_app(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            try:
                await app.bot.shutdown()
            except Exception:
                pass

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        app = self.app
        if app is None or not self.ready.is_set():
            await self._discard_app()
            return
        for closing in (app.updater.stop, app.stop, app.shutdown):
            try:
                await asyncio.wait_for(closing(), 10)
            except Exception as error:
                log.debug("telegram: while stopping: %s", type(error).__name__)
        self.app = None

    # -- outgoing ------------------------------------------------------------------------

    async def send_gate(self, gate: dict, kind: str) -> list[str]:
        """Send the gate's question (or a reminder) to every allowed chat; the refs ("chat:message") sent."""
        if not self.ready.is_set() or self.app is None:
            return []
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup

        buttons = InlineKeyboardMarkup([[
            InlineKeyboardButton("Approve", callback_data=f"g{gate['rowid']}:a"),
            InlineKeyboardButton("Reject", callback_data=f"g{gate['rowid']}:r"),
        ]])
        text = gate_text(gate, kind)
        sent: list[str] = []
        for chat_id in self.config.telegram.allowed_chat_ids:
            try:
                message = await self.app.bot.send_message(chat_id, text, reply_markup=buttons)
            except Exception as error:
                log.warning("telegram: could not send gate %s to chat %s: %s", gate["gate_id"], chat_id,
                            type(error).__name__)
                continue
            ref = message_ref(chat_id, message.message_id)
            await self.store.run(gate_rows.message_sent(NAME, ref, gate["gate_id"], kind))
            sent.append(ref)
        return sent

    async def mark_answered(self, gate: dict) -> None:
        if not self.ready.is_set() or self.app is None:
            return
        note = gate["note"] or ""
        suffix = (f"\n\nAnswered: {gate['answer']}" + (f" ({note})" if note else "")
                  + f" — by {gate['answered_by']} via {gate['answered_via']}")
        for ref, kind in await self.store.run(gate_rows.messages(NAME, gate["gate_id"])):
            chat_id, message_id = (int(part) for part in ref.split(":"))
            try:
                await self.app.bot.edit_message_text(gate_text(gate, kind) + suffix, chat_id=chat_id,
                                                     message_id=message_id)
            except Exception as error:  # "message is not modified", deleted messages: nothing to do
                log.debug("telegram: edit of %s/%s: %s", chat_id, message_id, type(error).__name__)

    # -- incoming ------------------------------------------------------------------------

    async def _gatekeeper(self, update, context) -> None:
        """Group -1: drop (and log) every update not from an allowed chat and user."""
        from telegram.ext import ApplicationHandlerStop

        chat = update.effective_chat
        user = update.effective_user
        allowed_chats = self.config.telegram.allowed_chat_ids
        allowed_users = self.config.telegram.allowed_user_ids
        if chat is not None and chat.id in allowed_chats and (
                not allowed_users or (user is not None and user.id in allowed_users)):
            return
        log.warning("telegram: dropped an update from chat %s, user %s (not allowed)",
                    chat.id if chat else None, user.id if user else None)
        if update.callback_query is not None:
            try:
                await update.callback_query.answer("Not allowed.")
            except Exception:
                pass
        raise ApplicationHandlerStop

    async def _on_press(self, update, context) -> None:
        query = update.callback_query
        match = CALLBACK.fullmatch(query.data or "")
        gate_id = await self.store.run(gate_rows.by_rowid(int(match.group(1)))) if match else None
        if gate_id is None:
            log.warning("telegram: ignored a button with unknown data from user %s", query.from_user.id)
            await _quietly(query.answer("Unknown or expired button."))
            return
        answer = BUTTON_ANSWERS[match.group(2)]
        refused = await self.answer_gate(gate_id, answer, "", _who(query.from_user), "telegram")
        await _quietly(query.answer(refused or f"{answer.capitalize()}d."))

    async def _on_reply(self, update, context) -> None:
        message = update.effective_message
        replied = message.reply_to_message
        ref = message_ref(message.chat_id, replied.message_id)
        gate_id = await self.store.run(gate_rows.gate_of_message(NAME, ref))
        if gate_id is None and replied.from_user is not None and replied.from_user.is_bot:
            await asyncio.sleep(1.0)  # a reply can overtake our record of the message it answers
            gate_id = await self.store.run(gate_rows.gate_of_message(NAME, ref))
        if gate_id is None:
            return
        refused = await self.answer_gate(gate_id, "revise", message.text, _who(message.from_user), "telegram")
        await _quietly(message.reply_text(refused or "Sent back to the builder with your note."))


def _who(user) -> str:
    if user is None:
        return "unknown"
    return f"@{user.username}" if user.username else f"user {user.id}"


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception as error:
        log.debug("telegram: %s", type(error).__name__)
