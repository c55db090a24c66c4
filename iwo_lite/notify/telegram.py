"""The Telegram notifier: the bot inside the daemon. Gate questions and spec events out; button
presses, replies, commands and spec documents in.

Owns: starting python-telegram-bot (polling) in the daemon's event loop and keeping the
daemon alive when Telegram is down or the token is wrong (one warning, retries quietly);
registering the bot's commands with Telegram (setMyCommands, once per start) so the phone
offers them; sending a gate's question to every allowed chat with Approve / Reject buttons and
recording the sent messages (iwo_messages, notifier "telegram", ref "<chat id>:<message id>")
so presses and replies map to their gate after a restart; turning a press into approve/reject
and a reply into revise through the daemon's one answer path (`actions.answer`); editing the
messages once a gate is answered; telling every allowed chat of a spec's events (done,
failed, rejected, paused; `telegram.notify` chooses which), recorded the same way with no
gate; the commands

    /status       the recent specs, a few short lines each (a phone, not a terminal)
    /spec ID      one spec: state, current role, progress, pause, cost, dispatches, gates
    /submit TEXT  submit TEXT as a spec (`actions.submit_text`; the reply names the id)
    /cancel ID    cancel a spec (`actions.cancel`)

and a text or markdown document (mime text/*, or a name ending .md/.txt/.markdown; at most
MAX_SPEC_BYTES, checked from `file_size` before downloading) submitted as a spec: any document
in a private chat, in a group only with a /submit caption. Everything incoming passes one
gatekeeper first, which drops (and logs) every update not from an allowed chat and user.
Every message sent is cut to Telegram's 4,096-character limit, saying so and pointing at
`iwo-lite status <id>` (a gate's question is cut, its deadline and instructions kept). The
token is kept out of every log line.

Sending is at-least-once: a crash between sending and recording may send a message twice; a
message no chat could take because Telegram was unreachable is tried again (NotSentNow), so a
chat that did get it while another did not may get it twice. A chat that refuses it for good
(blocked bot, unknown chat) is logged and skipped.
Button data is `g<gate rowid>:a` or `g<gate rowid>:r` (well under Telegram's 64 bytes): it
names the gate, never carries the answer's text. The texts (gate_text, status_text, spec_text,
event_text, fit) are texts.py's, pure, tested without a bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from iwo_lite.config import Config
from iwo_lite.errors import UserError, first_line
from iwo_lite.notify import Actions
from iwo_lite.store import gates as gate_rows
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.texts import (  # the phone's texts (texts.py); TELEGRAM_LIMIT, units: re-exported
    COMMANDS,
    STATUS_LIMIT,
    TELEGRAM_LIMIT,
    answered_suffix,
    event_text,
    fit,
    gate_text,
    help_text,
    spec_text,
    status_text,
    units,
)
from iwo_lite.text import MAX_SPEC_BYTES, clip, validate_spec_text

log = logging.getLogger("iwo_lite.telegram")

CALLBACK = re.compile(r"g([0-9]{1,12}):([ar])")  # used with fullmatch: nothing before or after
BUTTON_ANSWERS = {"a": "approve", "r": "reject"}
RETRY_START_S = 30.0

NAME = "telegram"
DEFAULT_NOTIFY = ("done", "failed", "rejected", "paused")  # telegram.notify when the config has none
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")


class NotSentNow(Exception):
    """No allowed chat could be reached just now (Telegram down, flood control): the daemon keeps
    the notification and tries again later. Raised only when nothing was sent."""


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


def file_base_url(base_url: str) -> str:
    """Where the Bot API serves files, from `telegram.base_url`: ".../bot" -> ".../file/bot"."""
    if "/bot{token}" in base_url:
        return base_url.replace("/bot{token}", "/file/bot{token}", 1)
    if base_url.endswith("/bot"):
        return base_url[: -len("/bot")] + "/file/bot"
    return base_url.rstrip("/") + "/file/bot"


# -- fitting Telegram's limit ------------------------------------------------------------------


# -- rendering (pure) ----------------------------------------------------------------------------


def is_text_document(file_name: str | None, mime_type: str | None) -> bool:
    """A document the bot takes as a spec: mime text/*, or a name ending .md, .markdown or .txt."""
    return (mime_type or "").lower().startswith("text/") or (file_name or "").lower().endswith(DOCUMENT_SUFFIXES)


def command_body(text: str) -> str:
    """The text after the command word ("/submit@bot  body..." -> "body..."), newlines kept."""
    parts = (text or "").split(None, 1)
    return parts[1].strip() if len(parts) > 1 else ""


def message_ref(chat_id: int, message_id: int) -> str:
    return f"{chat_id}:{message_id}"


class TelegramNotifier:
    name = NAME

    def __init__(self, config: Config, token: str, store, actions: Actions):
        self.config = config
        self.token = token
        self.store = store
        self.actions = actions
        self.app = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._warned = False
        self._off = False  # the token was rejected: the bot is off until the daemon restarts
        self.on_ready = None  # called once the bot polls (the courier: send what waited at once)

    def is_ready(self) -> bool:
        """Whether messages can be handed over now: the bot is polling, or it is off for good (a
        rejected token: sending then does nothing, and nothing should wait for it). False while it
        connects or Telegram is down (it retries every RETRY_START_S)."""
        return self._off or (self.ready.is_set() and self.app is not None)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._warned = self._off = False
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
                self._off = True
                await self._discard_app()
                return
            except Exception as error:  # network down, server error: keep working, retry quietly
                if not self._warned:
                    log.warning("telegram: cannot reach the Bot API (%s); gates still take answers from "
                                "the shell; retrying every %ds", type(error).__name__, RETRY_START_S)
                    self._warned = True
                await self._discard_app()
                await asyncio.sleep(RETRY_START_S)
                while not await self._reachable():  # a cheap probe first: building the bot costs ~90 ms of CPU
                    await asyncio.sleep(RETRY_START_S)

    async def _reachable(self) -> bool:
        """Whether the Bot API's host takes a TCP connection (the bot is rebuilt only then). Behind a
        proxy the host may be reachable only through it: no probe then."""
        from urllib.parse import urlsplit
        from urllib.request import getproxies

        if any(scheme != "no" for scheme in getproxies()):  # HTTPS_PROXY, ALL_PROXY, ... (any case)
            return True
        url = urlsplit(self.config.telegram.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), 10)
        except (OSError, asyncio.TimeoutError, ValueError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _start_once(self) -> None:
        from telegram import Update
        from telegram.ext import (ApplicationBuilder, CallbackQueryHandler, CommandHandler, MessageHandler,
                                  TypeHandler, filters)

        base_url = self.config.telegram.base_url
        app = (ApplicationBuilder().token(self.token).base_url(base_url).base_file_url(file_base_url(base_url))
               .connect_timeout(10).read_timeout(15).write_timeout(15).get_updates_read_timeout(40).build())
        new_messages = filters.UpdateType.MESSAGE  # not edits: an edited /submit or /cancel does nothing again
        app.add_handler(TypeHandler(Update, self._gatekeeper), group=-1)
        app.add_handler(CallbackQueryHandler(self._on_press))
        app.add_handler(MessageHandler(new_messages & filters.REPLY & filters.TEXT & ~filters.COMMAND, self._on_reply))
        app.add_handler(CommandHandler("status", self._on_status, filters=new_messages))
        app.add_handler(CommandHandler("spec", self._on_spec, filters=new_messages))
        app.add_handler(CommandHandler("submit", self._on_submit, filters=new_messages))
        app.add_handler(CommandHandler("cancel", self._on_cancel, filters=new_messages))
        app.add_handler(CommandHandler(("start", "help"), self._on_help, filters=new_messages))
        app.add_handler(MessageHandler(new_messages & filters.Document.ALL, self._on_document))
        app.add_handler(MessageHandler(new_messages & filters.COMMAND & filters.ChatType.PRIVATE, self._on_unknown))
        self.app = app
        await app.initialize()
        await self._register_commands(app)
        await app.start()
        await app.updater.start_polling(poll_interval=0.0, timeout=30, drop_pending_updates=False,
                                        error_callback=self._polling_error)
        self.ready.set()
        if self.on_ready is not None:
            self.on_ready()
        log.info("telegram: bot polling, %d allowed chat(s)", len(self.config.telegram.allowed_chat_ids))

    async def _register_commands(self, app) -> None:
        """setMyCommands: the phone offers /status, /spec, /submit, /cancel. A refusal is not fatal."""
        from telegram import BotCommand
        from telegram.error import BadRequest, EndPointNotFound, Forbidden

        try:
            await app.bot.set_my_commands([BotCommand(name, what) for name, what in COMMANDS])
        except (BadRequest, EndPointNotFound, Forbidden) as error:
            log.warning("telegram: could not register the bot's commands (%s); they still work when typed",
                        first_line(error))

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
        """Stop polling and close the bot; `start` may be called again afterwards."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        app = self.app
        was_ready = self.ready.is_set()
        self.ready.clear()
        if app is None or not was_ready:
            await self._discard_app()
            return
        for closing in (app.updater.stop, app.stop, app.shutdown):
            try:
                await asyncio.wait_for(closing(), 10)
            except Exception as error:
                log.debug("telegram: while stopping: %s", type(error).__name__)
        self.app = None

    # -- outgoing ------------------------------------------------------------------------

    async def _send_all(self, text: str, what: str, gate_id: str | None, kind: str, reply_markup=None) -> list[str]:
        """Send `text` to every allowed chat and record each message; the refs sent. Raises NotSentNow
        when no chat got it because Telegram could not be reached (the caller tries again later)."""
        from telegram.error import BadRequest, NetworkError, RetryAfter

        sent: list[str] = []
        unreachable = 0
        for chat_id in self.config.telegram.allowed_chat_ids:
            try:
                message = await self.app.bot.send_message(chat_id, text, reply_markup=reply_markup)
            except Exception as error:
                if isinstance(error, RetryAfter) or (isinstance(error, NetworkError)
                                                     and not isinstance(error, BadRequest)):
                    unreachable += 1
                log.warning("telegram: could not send %s to chat %s: %s", what, chat_id, type(error).__name__)
                continue
            ref = message_ref(chat_id, message.message_id)
            try:
                await self.store.run(gate_rows.message_sent(NAME, ref, gate_id, kind))
            except Exception as error:
                log.warning("telegram: sent %s to chat %s but could not record it: %s", what, chat_id,
                            type(error).__name__)
            sent.append(ref)
        if not sent and unreachable:
            raise NotSentNow(f"telegram: {what} reached no chat (Telegram unreachable)")
        return sent

    async def send_gate(self, gate: dict, kind: str) -> list[str]:
        """Send the gate's question (or a reminder) to every allowed chat; the refs ("chat:message") sent.
        NotSentNow when Telegram could not be reached."""
        if not self.ready.is_set() or self.app is None:
            return []
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup

        buttons = InlineKeyboardMarkup([[
            InlineKeyboardButton("Approve", callback_data=f"g{gate['rowid']}:a"),
            InlineKeyboardButton("Reject", callback_data=f"g{gate['rowid']}:r"),
        ]])
        return await self._send_all(gate_text(gate, kind), f"gate {gate['gate_id']}", gate["gate_id"], kind,
                                    reply_markup=buttons)

    async def send_event(self, event: dict) -> list[str]:
        """Tell every allowed chat of a spec's event, if telegram.notify names its kind; the refs sent.
        Raises NotSentNow only when Telegram could not be reached (else it never raises)."""
        kind = event.get("kind")
        try:
            if kind not in tuple(getattr(self.config.telegram, "notify", DEFAULT_NOTIFY)):
                return []
            if not self.ready.is_set() or self.app is None:
                log.info("telegram: not connected; the %s of spec %s was not sent", kind, event.get("spec_id"))
                return []
            text = fit(event_text(event), event.get("spec_id"))
            return await self._send_all(text, f"the {kind} of spec {event.get('spec_id')}", None, kind)
        except NotSentNow:
            raise
        except Exception as error:  # a notification must never break the loop that sends it
            log.warning("telegram: could not send the %s of spec %s: %s", kind, event.get("spec_id"),
                        type(error).__name__)
            return []

    async def mark_answered(self, gate: dict) -> None:
        if not self.ready.is_set() or self.app is None:
            return
        suffix = answered_suffix(gate)
        for ref, kind in await self.store.run(gate_rows.messages(NAME, gate["gate_id"])):
            chat_id, message_id = (int(part) for part in ref.split(":"))
            try:
                await self.app.bot.edit_message_text(gate_text(gate, kind, suffix), chat_id=chat_id,
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
        refused = await self.actions.answer(gate_id, answer, "", _who(query.from_user), "telegram")
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
        refused = await self.actions.answer(gate_id, "revise", message.text, _who(message.from_user), "telegram")
        await _reply(message, refused or "Sent back to the builder with your note.")

    async def _on_help(self, update, context) -> None:
        await _reply(update.effective_message, help_text())

    async def _on_unknown(self, update, context) -> None:
        command = (update.effective_message.text or "").split(None, 1)[0]
        await _reply(update.effective_message, f"Unknown command {clip(command, 40)}. /help lists the commands.")

    async def _on_status(self, update, context) -> None:
        specs, more = await self.store.run(spec_rows.listed(STATUS_LIMIT))
        await _reply(update.effective_message, status_text(specs, more))

    async def _on_spec(self, update, context) -> None:
        message = update.effective_message
        if len(context.args) != 1:
            await _reply(message, "Usage: /spec ID (/status lists the ids)")
            return
        spec_id = context.args[0]
        specs, _ = await self.store.run(spec_rows.listed(spec_id=spec_id))
        if not specs:
            await _reply(message, f"{clip(spec_id, 80)}: no such spec (/status lists the ids)")
            return
        steps = await self.store.run(run_rows.steps_of(spec_id))
        attempts = await self.store.run(run_rows.attempts_of(spec_id))
        gates = await self.store.run(gate_rows.of_spec(spec_id))
        await _reply(message, spec_text(specs[0], steps, attempts, gates), spec_id)

    async def _on_cancel(self, update, context) -> None:
        message = update.effective_message
        if len(context.args) != 1:
            await _reply(message, "Usage: /cancel ID (/status lists the ids)")
            return
        who = _who(message.from_user)
        try:
            result = await self.actions.cancel(context.args[0], who)
        except UserError as error:
            result = first_line(error)
        except Exception as error:
            log.warning("telegram: /cancel %s from %s failed: %s", context.args[0], who, type(error).__name__)
            result = f"Could not cancel {clip(context.args[0], 80)} ({type(error).__name__}); see the daemon's log."
        else:
            log.info("telegram: %s: /cancel %s: %s", who, context.args[0], result)
        await _reply(message, result)

    async def _on_submit(self, update, context) -> None:
        message = update.effective_message
        text = command_body(message.text)
        if not text:
            await _reply(message, "Usage: /submit followed by the spec's text (its first line is its title),"
                                  " or send the spec as a .md or .txt document.")
            return
        await self._submit(message, text, None)

    async def _on_document(self, update, context) -> None:
        message = update.effective_message
        document = message.document
        name = document.file_name or "document"
        in_group = message.chat.type != "private"
        if in_group and not (message.caption or "").lstrip().lower().startswith("/submit"):
            return  # in a group a file is a spec only when its caption says /submit
        if not is_text_document(document.file_name, document.mime_type):
            await _reply(message, f"{clip(name, 80)}: not a text or markdown file "
                                  f"({document.mime_type or 'unknown type'}); send a .md or .txt file, "
                                  "or /submit followed by the spec's text.")
            return
        if document.file_size is not None and document.file_size > MAX_SPEC_BYTES:
            await _reply(message, f"{clip(name, 80)}: spec is over the limit of {MAX_SPEC_BYTES} bytes "
                                  f"({document.file_size} bytes); nothing was downloaded.")
            return
        try:
            file = await context.bot.get_file(document.file_id)
            data = await file.download_as_bytearray()
        except Exception as error:
            log.warning("telegram: could not download document %s: %s", name, type(error).__name__)
            await _reply(message, f"{clip(name, 80)}: could not download it from Telegram "
                                  f"({type(error).__name__}); try again.")
            return
        try:
            text = validate_spec_text(bytes(data), clip(name, 80))
        except UserError as error:
            await _reply(message, first_line(error))
            return
        await self._submit(message, text, name)

    async def _submit(self, message, text: str, filename: str | None) -> None:
        who = _who(message.from_user)
        source = filename or "/submit"
        try:
            spec_id, created = await self.actions.submit_text(text, filename, who)
        except UserError as error:
            await _reply(message, first_line(error))
            return
        except Exception as error:
            log.warning("telegram: %s from %s failed: %s", source, who, type(error).__name__)
            await _reply(message, f"Could not submit ({type(error).__name__}); see the daemon's log.")
            return
        log.info("telegram: %s submitted %s (%s)", who, spec_id, "new" if created else "already there")
        if created:
            await _reply(message, f"Submitted {spec_id}. /spec {spec_id} shows how it goes.", spec_id)
        else:
            await _reply(message, f"{spec_id} already exists (the same text); nothing new started. "
                                  f"/spec {spec_id} shows it.", spec_id)


def _who(user) -> str:
    if user is None:
        return "unknown"
    return f"@{user.username}" if user.username else f"user {user.id}"


async def _reply(message, text: str, spec_id: str | None = None) -> None:
    """Reply in the message's chat, cut to Telegram's limit; a failure is logged, never raised."""
    await _quietly(message.reply_text(fit(text, spec_id)))


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception as error:
        log.debug("telegram: %s", type(error).__name__)
