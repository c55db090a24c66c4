"""A small local fake of the Telegram Bot API, for iwo-lite's tests.

Stdlib only (``http.server.ThreadingHTTPServer`` in a daemon thread). It speaks
enough of the Bot API for python-telegram-bot 22.x to initialise, long-poll
``getUpdates`` and send/edit messages and answer callback queries, and it records
everything the bot did. It never talks to the real Telegram and only listens on
the host given (127.0.0.1 by default).

Use::

    fake = FakeBotAPI().start()            # or: with FakeBotAPI() as fake: ...
    app = (ApplicationBuilder().token(fake.token).base_url(fake.base_url)
           .build())
    ...
    fake.push_text(chat_id=42, user_id=42, text="/status")
    msg = await asyncio.to_thread(
        fake.wait_for, lambda f: f.sent_messages and f.sent_messages[-1])
    fake.stop()

Constructor and attributes
--------------------------
``FakeBotAPI(token=DEFAULT_TOKEN, host="127.0.0.1", port=0, max_long_poll=2.0)``;
``start()`` returns self; ``stop()`` is idempotent, wakes pending long polls and
cuts open keep-alive connections, so a client still running afterwards gets
NetworkError instead of a zombie answer. Attributes: ``token``, ``port``,
``base_url``, ``bot_id`` (the token's numeric prefix), ``bot_user`` (the getMe
result: username ``iwo_test_bot``), ``max_long_poll``, ``fail_mode``.

URLs
----
``base_url`` is ``http://HOST:PORT/bot``; PTB appends the token and then
``/<method>``, so requests arrive as ``/bot<TOKEN>/<method>``. A path that is not
of that shape gets HTTP 404 ``{"ok": false, "error_code": 404, "description":
"Not Found"}``; a token other than the server's gets HTTP 401 ``Unauthorized``.
Method names are matched case-insensitively (as Telegram does).

Files are served as Telegram serves them: ``GET /file/bot<TOKEN>/<file_path>``
answers the raw bytes (``application/octet-stream``), an unknown path HTTP 404,
another token HTTP 401. ``file_base_url`` is ``http://HOST:PORT/file/bot``: build
the bot with ``.base_file_url(fake.file_base_url)`` (PTB's default points at
api.telegram.org), then ``await (await bot.get_file(id)).download_as_bytearray()``.

Request decoding
----------------
Parameters are read from the query string (GET or POST) and from the body:
``application/x-www-form-urlencoded`` (what PTB 22's HTTPXRequest sends for every
method without files: a POST form in which string parameters are raw and every
other value -- ints, bools, ``reply_markup``, ``reply_parameters`` -- is a JSON
string), ``multipart/form-data`` (what PTB sends when uploading files; file parts
become ``{"filename", "content_type", "size"}``) and ``application/json``. Form
values are decoded back to Python: a value is ``json.loads``-ed unless its key is
a known free-text field (``text``, ``caption``, ``parse_mode``,
``callback_query_id``, ...) or it does not parse as JSON (``"@channel"`` stays a
string). So ``chat_id`` is an ``int``, ``reply_markup`` a ``dict``, ``show_alert``
a ``bool``.

Methods
-------
getMe, deleteWebhook, getWebhookInfo, getUpdates, sendMessage, editMessageText,
editMessageReplyMarkup, answerCallbackQuery, deleteMessage, sendChatAction,
getFile, setMyCommands, getMyCommands, deleteMyCommands, close, logOut. Anything else:
HTTP 404 ``{"ok": false, "error_code": 404, "description": "Not Found: method
not found"}`` (PTB raises ``EndPointNotFound`` after ``initialize``).

getUpdates honours ``offset`` (updates with ``update_id < offset`` are confirmed
and dropped for good; a negative offset returns the last ``-offset`` updates),
``limit`` (1..100, default 100) and ``timeout``: it blocks until an update with
``update_id >= offset`` exists, for at most ``min(timeout, max_long_poll)``
seconds (``max_long_poll`` defaults to 2.0 s so that tests stay fast; PTB's
client-side read timeout is its ``read_timeout`` + ``timeout``, so a shorter
server-side wait is always safe). A pending long poll returns at once when an
update is pushed, when ``fail_mode`` is set (it then fails the same way) and when
the server stops; it also gives up as soon as the client closes the connection
(PTB cancels the in-flight getUpdates on ``updater.stop()``).

sendMessage validates like Telegram for the common mistakes: empty text -> 400
``Bad Request: message text is empty``; more than 4096 UTF-16 units -> 400
``Bad Request: message is too long``; an inline button ``callback_data`` longer
than 64 bytes -> 400 ``Bad Request: BUTTON_DATA_INVALID``. Text is stored and
echoed verbatim (``parse_mode`` is recorded, not applied). Only an
*inline* keyboard is echoed in the returned Message (Telegram never echoes
ReplyKeyboardMarkup/ForceReply/ReplyKeyboardRemove, and PTB's
``Message.reply_markup`` is an InlineKeyboardMarkup). ``reply_parameters``
(PTB 22 turns ``reply_to_message_id=`` into ``reply_parameters``) or the old
``reply_to_message_id`` make the returned Message carry ``reply_to_message``
when that message is known.

getFile needs a ``file_id`` pushed with ``push_document``, else 400 ``Bad
Request: invalid file_id``; a file over 20 MB (its ``file_size``) gets 400 ``Bad
Request: file is too big``, as bots cannot download those. Its result is
``{"file_id", "file_unique_id", "file_size", "file_path": "documents/file_N<ext>"}``.

setMyCommands stores the list (``commands``); getMyCommands returns it.

editMessageText / editMessageReplyMarkup need a known (chat_id, message_id),
else 400 ``Bad Request: message to edit not found``; with ``inline_message_id``
they return ``true``. answerCallbackQuery needs a ``callback_query_id`` that was
pushed, else 400 ``Bad Request: query is too old and response timeout expired or
query ID is invalid``.

Chats: ``chat_id > 0`` is ``private``; ``chat_id <= -1000000000000`` (the
``-100...`` form) is ``supergroup``; any other negative id is ``group``.

Recording (all properties return snapshot copies; safe from any thread)
-----------------------------------------------------------------------
``requests``            ``[(method, params), ...]`` for every call that reached
                        ``/bot<token>/<method>`` (also failed ones), in order;
                        ``method`` as the client spelt it.
``sent_messages``       one dict per *successful* sendMessage: the decoded params
                        plus ``message_id``, ``date``, and always the keys
                        ``chat_id``, ``text``, ``reply_markup`` (dict or None),
                        ``parse_mode``, ``reply_to_message_id``.
``edited_messages``     one dict per successful editMessageText /
                        editMessageReplyMarkup: decoded params plus ``method``,
                        and always ``chat_id``, ``message_id``, ``text`` (the
                        message's text after the edit), ``reply_markup``,
                        ``parse_mode``, ``inline_message_id``.
``answered_callbacks``  one dict per successful answerCallbackQuery: decoded
                        params, always ``callback_query_id``, ``text``,
                        ``show_alert`` (bool), ``url``, ``cache_time``.
``commands``            the bot's commands as the last setMyCommands left them:
                        ``[{"command", "description"}, ...]``.
``downloads``           the ``file_path`` of every file downloaded, in order.
``pending_updates``     updates not yet confirmed by an ``offset``.
``methods_called()``    just the method names of ``requests``.
``dump()``              the text ``wait_for`` puts in its AssertionError.

``wait_for(predicate, timeout=10.0)`` re-evaluates ``predicate(fake)`` whenever
something is recorded (and every 50 ms) and returns its first truthy value, or
raises ``AssertionError`` with a dump of the recent requests, messages and
pending updates. It blocks the calling thread: from inside the event loop that
runs PTB use ``await asyncio.to_thread(fake.wait_for, pred)``.

Pushing updates (thread-safe; a pending long poll returns promptly)
-------------------------------------------------------------------
``push_text(chat_id, user_id, text, reply_to_message_id=None, username="alice")``
    A ``message`` update. A leading ``/command`` gets a ``bot_command`` entity
    (PTB's CommandHandler requires one). ``reply_to_message_id`` must name a
    known message (one the bot sent, or one pushed); that message is embedded as
    ``reply_to_message``. Unknown id -> ``ValueError``.
``push_callback(chat_id, user_id, data, message_id=None, username="alice")``
    A ``callback_query`` on a message the bot sent (default: the last message
    the bot sent to ``chat_id``; none -> ``ValueError``). The message is embedded
    in its current (edited) state. An id the server never sent is embedded as an
    InaccessibleMessage (``date: 0``), as Telegram does for old messages.
    The callback query id is a unique numeric string (see ``pending_updates``);
    the function returns the update_id.
``push_document(chat_id, user_id, file_name, content, mime_type="text/markdown",
username="alice", caption=None, file_size=None)``
    A ``message`` update with a ``document`` ``{file_id, file_unique_id,
    file_name, mime_type, file_size}`` whose bytes (``content``) ``getFile`` and
    the file URL then serve. ``file_size`` defaults to ``len(content)``; give a
    bigger one to play a big file without sending its bytes. ``caption`` (a
    leading ``/command`` gets a ``bot_command`` caption entity). ``file_name`` or
    ``mime_type`` None leaves the key out, as Telegram does. Returns the update_id.
``push_raw(update)``
    Any update dict; ``update_id`` is assigned when missing.

Failure injection
-----------------
``fail_mode`` (settable at any time, from any thread):
    ``None``            normal.
    ``"unauthorized"``  every method -> HTTP 401 ``{"ok": false, "error_code":
                        401, "description": "Unauthorized"}`` (PTB: InvalidToken).
    ``"down"``          every request -> HTTP 502 with an HTML body, like the
                        nginx in front of api.telegram.org (PTB: NetworkError).
    ``"close"``         the connection is closed without any response (PTB:
                        NetworkError from httpx.RemoteProtocolError).

The server logs nothing (per-request logging and handler tracebacks are
silenced) and never prints the token; ``repr()`` omits it.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["FakeBotAPI", "DEFAULT_TOKEN"]

DEFAULT_TOKEN = "123456:TEST-TOKEN"
BOT_USERNAME = "iwo_test_bot"
BOT_FIRST_NAME = "IWO Test Bot"
FAIL_MODES = (None, "unauthorized", "down", "close")

# Form fields whose values are free text: never JSON-decoded.
_STRING_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_query_id",
        "inline_message_id",
        "url",
        "query_id",
        "description",
        "short_description",
        "name",
        "title",
        "language_code",
        "action",
        "emoji",
        "message_effect_id",
        "business_connection_id",
        "secret_token",
        "ip_address",
        "custom_emoji_id",
        "data",
        "file_id",
    }
)

_PATH_RE = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[A-Za-z0-9_]+)/?$")
_FILE_PATH_RE = re.compile(r"^/file/bot(?P<token>[^/]*)/(?P<path>.+)$")
_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?")

_LONG_POLL_SLICE = 0.05
_MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def _decode_value(key: str, value: Any) -> Any:
    """Decode one form value (always a str) back to what the client meant."""
    if not isinstance(value, str) or key in _STRING_FIELDS:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    # '"abc"' is a JSON string: keep what was sent.
    return value if isinstance(decoded, str) else decoded


class _Reply(Exception):
    """Raised inside a method to answer with an error (status, description)."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: "FakeBotAPI"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, so a stopped fake is really gone."""
        with self.sockets_lock:
            socks = list(self.open_sockets)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Silence the default traceback print (e.g. BrokenPipe when PTB cancels
        # a long poll): the fake must not write to stderr.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API (httpx pools)
    server_version = "nginx"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end eventually
    server: _Server

    # -- silence -----------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # -- entry points ------------------------------------------------------
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        if fake._stopping:
            self.close_connection = True
            return
        try:
            body = self._read_body()
        except Exception:
            self._send_json(400, {"ok": False, "error_code": 400, "description": "Bad Request"})
            return
        split = urlsplit(self.path)
        file_match = _FILE_PATH_RE.match(split.path)
        if file_match:
            if self._fail(fake.fail_mode):
                return
            if unquote(file_match.group("token")) != fake.token:  # PTB sends ':' as %3A here
                self._send_json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            content = fake._download(unquote(file_match.group("path")))
            if content is None:
                self._send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            else:
                self._send_raw(200, content, "application/octet-stream")
            return
        m = _PATH_RE.match(split.path)
        if not m:
            if not self._fail(fake.fail_mode):
                self._send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        method = m.group("method")
        try:
            params = self._parse_params(split.query, body)
        except Exception:
            fake._record_request(method, {})
            if not self._fail(fake.fail_mode):
                self._send_json(
                    400,
                    {"ok": False, "error_code": 400,
                     "description": "Bad Request: can't parse request"},
                )
            return
        fake._record_request(method, params)
        if self._fail(fake.fail_mode):
            return
        if m.group("token") != fake.token:
            self._send_json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        try:
            result = fake._dispatch(method, params, self._client_gone)
        except _Reply as r:
            self._send_json(
                r.status, {"ok": False, "error_code": r.status, "description": r.description}
            )
            return
        except _Abort:
            self.close_connection = True
            return
        except _FailNow as e:
            self._fail(e.args[0])
            return
        self._send_json(200, {"ok": True, "result": result})

    # -- failure modes -----------------------------------------------------
    def _fail(self, mode: str | None) -> bool:
        if mode is None:
            return False
        if mode == "unauthorized":
            self._send_json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        elif mode == "down":
            body = (
                b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                b"</body>\r\n</html>\r\n"
            )
            self._send_raw(502, body, "text/html")
        else:  # "close" (and anything unknown): drop the connection
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return True

    # -- I/O helpers -------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _parse_params(self, query: str, body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            params[k] = _decode_value(k, v)
        ctype = self.headers.get("Content-Type", "")
        main = ctype.split(";")[0].strip().lower()
        if not body:
            return params
        if main == "application/json":
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("JSON body must be an object")
            for k, v in data.items():
                # Some clients JSON-encode nested objects (reply_markup) as strings.
                params[k] = _decode_value(k, v)
        elif main == "multipart/form-data":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
            )
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not name:
                    continue
                payload = part.get_payload(decode=True) or b""
                filename = part.get_filename()
                if filename is not None:
                    params[name] = {
                        "filename": filename,
                        "content_type": part.get_content_type(),
                        "size": len(payload),
                    }
                else:
                    params[name] = _decode_value(name, payload.decode("utf-8"))
        else:  # application/x-www-form-urlencoded (PTB's default) or unknown
            for k, v in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
                params[k] = _decode_value(k, v)
        return params

    def _client_gone(self) -> bool:
        """True when the client has closed its end (PTB cancelled the request)."""
        try:
            poller = select.poll()  # no FD_SETSIZE limit, unlike select.select
            poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
            events = poller.poll(0)
            if not events:
                return False
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                return True
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _send_json(self, status: int, obj: Any) -> None:
        self._send_raw(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _send_raw(self, status: int, body: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class _Abort(Exception):
    """The client went away during a long poll: write nothing."""


class _FailNow(Exception):
    """fail_mode was set during a long poll: answer with that failure."""


class FakeBotAPI:
    """A fake Telegram Bot API server; see the module docstring."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        max_long_poll: float = 2.0,
    ) -> None:
        self.token = token
        self.host = host
        self._port = port
        self.max_long_poll = max_long_poll
        bot_id_part = token.split(":", 1)[0]
        self.bot_id = int(bot_id_part) if bot_id_part.isdigit() else 123456
        self.bot_user: dict[str, Any] = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": BOT_FIRST_NAME,
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self._cond = threading.Condition(threading.RLock())
        self._fail_mode: str | None = None
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        self._requests: list[tuple[str, dict[str, Any]]] = []
        self._sent: list[dict[str, Any]] = []
        self._edited: list[dict[str, Any]] = []
        self._answered: list[dict[str, Any]] = []
        self._updates: list[dict[str, Any]] = []  # unconfirmed, in update_id order
        self._messages: dict[tuple[Any, int], dict[str, Any]] = {}  # (chat_id, id) -> Message
        self._callback_ids: set[str] = set()
        self._users: dict[int, dict[str, Any]] = {}
        self._next_update_id = 1
        self._message_ids = itertools.count(1)
        self._commands: list[Any] = []
        self._files: dict[str, dict[str, Any]] = {}  # file_id -> {file_unique_id, file_path, size, content}
        self._file_ids = itertools.count(1)
        self._downloads: list[str] = []

    # ------------------------------------------------------------------ life
    def start(self) -> "FakeBotAPI":
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), _Handler)
        server.fake = self
        self._server = server
        self._stopping = False
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeBotAPI",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "FakeBotAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:  # never show the token
        state = f"port={self.port}" if self._server else "stopped"
        return f"<FakeBotAPI {state} fail_mode={self._fail_mode!r}>"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeBotAPI is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    @property
    def file_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/file/bot"

    # ------------------------------------------------------------ fail mode
    @property
    def fail_mode(self) -> str | None:
        return self._fail_mode

    @fail_mode.setter
    def fail_mode(self, mode: str | None) -> None:
        if mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}, not {mode!r}")
        with self._cond:
            self._fail_mode = mode
            self._cond.notify_all()

    # ------------------------------------------------------------ recording
    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        with self._cond:
            return list(self._requests)

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._sent)

    @property
    def edited_messages(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._edited)

    @property
    def answered_callbacks(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._answered)

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._updates)

    @property
    def commands(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(c) if isinstance(c, dict) else c for c in self._commands]

    @property
    def downloads(self) -> list[str]:
        with self._cond:
            return list(self._downloads)

    def methods_called(self) -> list[str]:
        """Just the method names of ``requests``, in order."""
        with self._cond:
            return [m for m, _ in self._requests]

    def wait_for(self, predicate: Callable[["FakeBotAPI"], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, _LONG_POLL_SLICE))
            raise AssertionError(f"wait_for timed out after {timeout}s\n" + self.dump())

    def dump(self, last: int = 30) -> str:
        """A human-readable summary of what happened (no token)."""
        with self._cond:
            reqs = self._requests[-last:]
            lines = [
                repr(self),
                f"requests ({len(self._requests)} total, last {len(reqs)}):",
            ]
            lines += [f"  {m} {json.dumps(p, default=str)[:300]}" for m, p in reqs]
            lines.append(f"sent_messages ({len(self._sent)}):")
            lines += [f"  {json.dumps(s, default=str)[:300]}" for s in self._sent[-last:]]
            lines.append(f"edited_messages ({len(self._edited)}):")
            lines += [f"  {json.dumps(s, default=str)[:300]}" for s in self._edited[-last:]]
            lines.append(f"answered_callbacks ({len(self._answered)}):")
            lines += [f"  {json.dumps(s, default=str)[:300]}" for s in self._answered[-last:]]
            lines.append(f"pending_updates ({len(self._updates)}):")
            lines += [f"  {json.dumps(u, default=str)[:300]}" for u in self._updates[-last:]]
            return "\n".join(lines)

    def _record_request(self, method: str, params: dict[str, Any]) -> None:
        with self._cond:
            self._requests.append((method, params))
            self._cond.notify_all()

    # -------------------------------------------------------------- pushing
    def _user(self, user_id: int, username: str) -> dict[str, Any]:
        user = {
            "id": user_id,
            "is_bot": False,
            "first_name": username.capitalize() if username else "User",
            "language_code": "en",
        }
        if username:
            user["username"] = username
        self._users[user_id] = user
        return user

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        if isinstance(chat_id, int) and chat_id > 0:
            chat: dict[str, Any] = {"id": chat_id, "type": "private"}
            user = self._users.get(chat_id)
            chat["first_name"] = user["first_name"] if user else "User"
            if user and "username" in user:
                chat["username"] = user["username"]
            return chat
        if isinstance(chat_id, int) and chat_id <= -1_000_000_000_000:
            return {"id": chat_id, "type": "supergroup", "title": "Test Supergroup"}
        if isinstance(chat_id, int):
            return {"id": chat_id, "type": "group", "title": "Test Group"}
        # "@channelusername"
        return {"id": -1001000000000, "type": "channel", "title": str(chat_id)}

    def _enqueue(self, update: dict[str, Any]) -> int:
        # caller holds the lock
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        uid = int(update["update_id"])
        self._next_update_id = max(self._next_update_id, uid + 1)
        self._updates.append(update)
        self._updates.sort(key=lambda u: u["update_id"])
        self._cond.notify_all()
        return uid

    @staticmethod
    def _strip_reply(msg: dict[str, Any]) -> dict[str, Any]:
        # Telegram does not nest reply_to_message inside a reply_to_message.
        return {k: v for k, v in msg.items() if k != "reply_to_message"}

    def push_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        reply_to_message_id: int | None = None,
        username: str = "alice",
    ) -> int:
        with self._cond:
            user = self._user(user_id, username)
            message: dict[str, Any] = {
                "message_id": next(self._message_ids),
                "from": user,
                "chat": self._chat(chat_id),
                "date": int(time.time()),
                "text": text,
            }
            cmd = _COMMAND_RE.match(text)
            if cmd:
                message["entities"] = [
                    {"type": "bot_command", "offset": 0, "length": _utf16_len(cmd.group(0))}
                ]
            if reply_to_message_id is not None:
                original = self._messages.get((chat_id, reply_to_message_id))
                if original is None:
                    raise ValueError(
                        f"push_text: no known message {reply_to_message_id} in chat {chat_id}"
                    )
                message["reply_to_message"] = self._strip_reply(original)
            self._messages[(chat_id, message["message_id"])] = message
            return self._enqueue({"message": message})

    def push_callback(
        self,
        chat_id: int,
        user_id: int,
        data: str,
        message_id: int | None = None,
        username: str = "alice",
    ) -> int:
        with self._cond:
            user = self._user(user_id, username)
            if message_id is None:
                mine = [s for s in self._sent if s["chat_id"] == chat_id]
                if not mine:
                    raise ValueError(f"push_callback: the bot sent nothing to chat {chat_id}")
                message_id = mine[-1]["message_id"]
            msg = self._messages.get((chat_id, message_id))
            if msg is None:
                # Telegram's InaccessibleMessage (e.g. older than 48 h).
                msg = {"chat": self._chat(chat_id), "message_id": message_id, "date": 0}
            uid = self._next_update_id
            cq_id = f"{self.bot_id}{uid:06d}"
            self._callback_ids.add(cq_id)
            return self._enqueue(
                {
                    "update_id": uid,
                    "callback_query": {
                        "id": cq_id,
                        "from": user,
                        "chat_instance": str(7_000_000_000_000_000_000 + chat_id),
                        "data": data,
                        "message": self._strip_reply(msg) if msg.get("date") else msg,
                    },
                }
            )

    def push_document(
        self,
        chat_id: int,
        user_id: int,
        file_name: str | None,
        content: bytes,
        mime_type: str | None = "text/markdown",
        username: str = "alice",
        caption: str | None = None,
        file_size: int | None = None,
    ) -> int:
        with self._cond:
            user = self._user(user_id, username)
            number = next(self._file_ids)
            file_id = f"BQACAgIAAxkBAAI{number:06d}"
            unique_id = f"AgAD{number:06d}"
            suffix = ""
            if file_name and "." in file_name:
                suffix = "." + re.sub(r"[^A-Za-z0-9]", "", file_name.rsplit(".", 1)[1])[:10]
            size = len(content) if file_size is None else int(file_size)
            self._files[file_id] = {
                "file_unique_id": unique_id,
                "file_path": f"documents/file_{number}{suffix}",
                "file_size": size,
                "content": bytes(content),
            }
            document: dict[str, Any] = {"file_id": file_id, "file_unique_id": unique_id, "file_size": size}
            if file_name is not None:
                document["file_name"] = file_name
            if mime_type is not None:
                document["mime_type"] = mime_type
            message: dict[str, Any] = {
                "message_id": next(self._message_ids),
                "from": user,
                "chat": self._chat(chat_id),
                "date": int(time.time()),
                "document": document,
            }
            if caption is not None:
                message["caption"] = caption
                cmd = _COMMAND_RE.match(caption)
                if cmd:
                    message["caption_entities"] = [
                        {"type": "bot_command", "offset": 0, "length": _utf16_len(cmd.group(0))}
                    ]
            self._messages[(chat_id, message["message_id"])] = message
            return self._enqueue({"message": message})

    def _download(self, file_path: str) -> bytes | None:
        with self._cond:
            for info in self._files.values():
                if info["file_path"] == file_path:
                    self._downloads.append(file_path)
                    self._cond.notify_all()
                    return info["content"]
            return None

    def push_raw(self, update: dict[str, Any]) -> int:
        with self._cond:
            update = dict(update)
            cq = update.get("callback_query")
            if isinstance(cq, dict) and "id" in cq:
                self._callback_ids.add(str(cq["id"]))
            return self._enqueue(update)

    # ------------------------------------------------------------- methods
    def _dispatch(
        self, method: str, params: dict[str, Any], client_gone: Callable[[], bool]
    ) -> Any:
        name = method.lower()
        if name == "getupdates":
            return self._get_updates(params, client_gone)
        handler = _METHODS.get(name)
        if handler is None:
            raise _Reply(404, "Not Found: method not found")
        with self._cond:
            result = handler(self, params)
            self._cond.notify_all()
            return result

    def _get_updates(self, params: dict[str, Any], client_gone: Callable[[], bool]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        limit = max(1, min(100, limit))
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + max(0.0, min(timeout, self.max_long_poll))
        with self._cond:
            if offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while True:
                if self._fail_mode is not None:
                    raise _FailNow(self._fail_mode)
                if offset < 0:
                    ready = self._updates[offset:]
                else:
                    ready = [u for u in self._updates if u["update_id"] >= offset]
                if ready or self._stopping:
                    return json.loads(json.dumps(ready[:limit]))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(min(remaining, _LONG_POLL_SLICE))
                if client_gone():
                    raise _Abort()

    def _m_get_me(self, params: dict[str, Any]) -> Any:
        return dict(self.bot_user)

    def _m_true(self, params: dict[str, Any]) -> Any:
        return True

    def _m_get_webhook_info(self, params: dict[str, Any]) -> Any:
        return {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    def _m_delete_webhook(self, params: dict[str, Any]) -> Any:
        if params.get("drop_pending_updates"):
            self._updates = []
        return True

    def _m_get_file(self, params: dict[str, Any]) -> Any:
        info = self._files.get(str(params.get("file_id") or ""))
        if info is None:
            raise _Reply(400, "Bad Request: invalid file_id")
        if info["file_size"] > _MAX_DOWNLOAD_BYTES:
            raise _Reply(400, "Bad Request: file is too big")
        return {
            "file_id": str(params["file_id"]),
            "file_unique_id": info["file_unique_id"],
            "file_size": info["file_size"],
            "file_path": info["file_path"],
        }

    def _m_set_my_commands(self, params: dict[str, Any]) -> Any:
        self._commands = list(params.get("commands") or [])
        return True

    def _m_get_my_commands(self, params: dict[str, Any]) -> Any:
        return list(self._commands)

    def _m_delete_my_commands(self, params: dict[str, Any]) -> Any:
        self._commands = []
        return True

    @staticmethod
    def _check_markup(markup: Any) -> None:
        if not isinstance(markup, dict):
            return
        for row in markup.get("inline_keyboard") or []:
            for button in row:
                data = button.get("callback_data") if isinstance(button, dict) else None
                if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                    raise _Reply(400, "Bad Request: BUTTON_DATA_INVALID")

    @staticmethod
    def _echo_markup(msg: dict[str, Any], markup: Any) -> None:
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            msg["reply_markup"] = markup
        else:
            msg.pop("reply_markup", None)

    def _m_send_message(self, params: dict[str, Any]) -> Any:
        if "chat_id" not in params:
            raise _Reply(400, "Bad Request: chat_id is empty")
        chat_id = params["chat_id"]
        text = params.get("text")
        if text is None or not str(text).strip():
            raise _Reply(400, "Bad Request: message text is empty")
        text = str(text)
        if _utf16_len(text) > 4096:
            raise _Reply(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        self._check_markup(markup)
        reply_to = params.get("reply_to_message_id")
        rp = params.get("reply_parameters")
        if isinstance(rp, dict) and rp.get("message_id") is not None:
            reply_to = rp["message_id"]
        message_id = next(self._message_ids)
        date = int(time.time())
        msg: dict[str, Any] = {
            "message_id": message_id,
            "from": dict(self.bot_user),
            "chat": self._chat(chat_id),
            "date": date,
            "text": text,
        }
        if reply_to is not None:
            original = self._messages.get((chat_id, int(reply_to)))
            if original is not None:
                msg["reply_to_message"] = self._strip_reply(original)
            elif not (isinstance(rp, dict) and rp.get("allow_sending_without_reply")):
                raise _Reply(400, "Bad Request: message to be replied not found")
        self._echo_markup(msg, markup)
        self._messages[(chat_id, message_id)] = msg
        record = dict(params)
        record.update(
            message_id=message_id,
            date=date,
            chat_id=chat_id,
            text=text,
            reply_markup=markup if isinstance(markup, dict) else None,
            parse_mode=params.get("parse_mode"),
            reply_to_message_id=int(reply_to) if reply_to is not None else None,
        )
        self._sent.append(record)
        return json.loads(json.dumps(msg))

    def _edit(self, params: dict[str, Any], method: str, new_text: str | None) -> Any:
        markup = params.get("reply_markup")
        self._check_markup(markup)
        inline_id = params.get("inline_message_id")
        base = dict(params)
        base.update(
            method=method, inline_message_id=inline_id, parse_mode=params.get("parse_mode")
        )
        base["reply_markup"] = markup if isinstance(markup, dict) else None
        if inline_id is not None:
            base.update(chat_id=None, message_id=None, text=new_text)
            self._edited.append(base)
            return True
        chat_id = params.get("chat_id")
        message_id = params.get("message_id")
        key = (chat_id, int(message_id)) if message_id is not None else None
        msg = self._messages.get(key) if key else None
        if msg is None:
            raise _Reply(400, "Bad Request: message to edit not found")
        if msg.get("from", {}).get("id") != self.bot_id:
            raise _Reply(400, "Bad Request: message can't be edited")
        if new_text is not None:
            if not new_text.strip():
                raise _Reply(400, "Bad Request: message text is empty")
            if _utf16_len(new_text) > 4096:
                raise _Reply(400, "Bad Request: MESSAGE_TOO_LONG")
            msg["text"] = new_text
        self._echo_markup(msg, markup)
        msg["edit_date"] = int(time.time())
        base.update(chat_id=chat_id, message_id=int(message_id), text=msg["text"])
        self._edited.append(base)
        return json.loads(json.dumps(msg))

    def _m_edit_message_text(self, params: dict[str, Any]) -> Any:
        text = params.get("text")
        if text is None:
            raise _Reply(400, "Bad Request: text is empty")
        return self._edit(params, "editMessageText", str(text))

    def _m_edit_message_reply_markup(self, params: dict[str, Any]) -> Any:
        return self._edit(params, "editMessageReplyMarkup", None)

    def _m_answer_callback_query(self, params: dict[str, Any]) -> Any:
        cq_id = params.get("callback_query_id")
        if cq_id is None or str(cq_id) not in self._callback_ids:
            raise _Reply(
                400,
                "Bad Request: query is too old and response timeout expired"
                " or query ID is invalid",
            )
        record = dict(params)
        record.update(
            callback_query_id=str(cq_id),
            text=params.get("text"),
            show_alert=bool(params.get("show_alert") or False),
            url=params.get("url"),
            cache_time=params.get("cache_time"),
        )
        self._answered.append(record)
        return True

    def _m_delete_message(self, params: dict[str, Any]) -> Any:
        key = (params.get("chat_id"), int(params.get("message_id") or 0))
        if self._messages.pop(key, None) is None:
            raise _Reply(400, "Bad Request: message to delete not found")
        return True


_METHODS: dict[str, Callable[[FakeBotAPI, dict[str, Any]], Any]] = {
    "getme": FakeBotAPI._m_get_me,
    "deletewebhook": FakeBotAPI._m_delete_webhook,
    "getwebhookinfo": FakeBotAPI._m_get_webhook_info,
    "sendmessage": FakeBotAPI._m_send_message,
    "editmessagetext": FakeBotAPI._m_edit_message_text,
    "editmessagereplymarkup": FakeBotAPI._m_edit_message_reply_markup,
    "answercallbackquery": FakeBotAPI._m_answer_callback_query,
    "deletemessage": FakeBotAPI._m_delete_message,
    "sendchataction": FakeBotAPI._m_true,
    "getfile": FakeBotAPI._m_get_file,
    "setmycommands": FakeBotAPI._m_set_my_commands,
    "getmycommands": FakeBotAPI._m_get_my_commands,
    "deletemycommands": FakeBotAPI._m_delete_my_commands,
    "close": FakeBotAPI._m_true,
    "logout": FakeBotAPI._m_true,
}
