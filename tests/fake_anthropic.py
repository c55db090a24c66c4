#!/usr/bin/env python3
"""A fake Anthropic Messages API on 127.0.0.1, for running the real Claude Code CLI offline.

Standard library only (``http.server.ThreadingHTTPServer``). Point the CLI at it with
``ANTHROPIC_BASE_URL=<fake.url>`` (see tests/real_claude.py for the whole environment).

In-process::

    fake = FakeAnthropic(script={"rules": [...]}).start()   # or: with FakeAnthropic() as fake:
    ... run `claude -p` with ANTHROPIC_BASE_URL=fake.url ...
    fake.requests          # every request, recorded (see "Request records")
    fake.script = {...}    # change the script at any time
    fake.stop()

As a script (so a test can kill the CLI and this server independently)::

    python tests/fake_anthropic.py --port 0 --script script.json --log requests.jsonl [--url-file F]

prints ``http://127.0.0.1:PORT`` on its first stdout line (and writes it to --url-file),
re-reads --script on every request (write it atomically: ``write_script()``), appends one JSON
line per request to --log, and stops on SIGTERM/SIGINT.

Endpoints
---------
``POST /v1/messages`` (any query string, e.g. ``?beta=true``): answered by the script, as a
stream of server-sent events when the body has ``"stream": true`` (what the CLI sends), else as
one JSON message. ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``. Anything else:
HTTP 404 in the Anthropic error format, recorded like every request.

SSE framing (as the real API)::

    event: message_start        data: {"type":"message_start","message":{..., "content":[], "usage":{...}}}
    event: ping                 data: {"type":"ping"}
    event: content_block_start  data: {"type":"content_block_start","index":i,"content_block":{...}}
    event: content_block_delta  data: {..."delta":{"type":"text_delta","text":...}}  or
                                      {..."delta":{"type":"input_json_delta","partial_json":...}}
    event: content_block_stop   data: {"type":"content_block_stop","index":i}
    event: message_delta        data: {"type":"message_delta","delta":{"stop_reason":...,"stop_sequence":null},"usage":{...}}
    event: message_stop         data: {"type":"message_stop"}

Script
------
``{"rules": [RULE, ...], "default": ACTION}``. For each request to /v1/messages the first rule
whose matchers all hold (and whose ``times`` is not used up) gives the action; if none does,
``default`` (itself an action; when absent: the text reply "OK"). Every key is optional.

Matchers of a RULE:
  ``role``     the first user message contains ``"You are the <role>"`` (iwo-lite's prompts)
  ``match``    the first user message contains this substring (all its text blocks, joined)
  ``turn``     int or list of ints: the number of assistant messages already in ``messages``
  ``min_turn`` int: turn >= min_turn
  ``model``    substring of the request's ``model``
  ``tools``    a tool name that must be in the request's ``tools`` (e.g. "StructuredOutput")
  ``times``    the rule answers at most this many requests (counted per rule ``id``, default:
               its index in the list; ``reset_counts()`` clears the counters)

Actions (the other keys of a RULE, or ``default``):
  ``text``        a text block (default "OK" when there is no ``tool_uses``)
  ``tool_uses``   list of ``{"name", "input", "id"?}`` blocks after the text (see ``tool_use()``)
  ``thinking``    a thinking block first (text)
  ``stop_reason`` default ``"tool_use"`` with tool uses, else ``"end_turn"``
  ``usage``       merged over ``{"input_tokens": 100, "output_tokens": 20,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}``
  ``error``       ``{"status": 529, "type"?: by status, "message"?: by status}``: that HTTP
                  status with body ``{"type":"error","error":{"type","message"},"request_id"}``
  ``stream_error`` same shape: a 200 stream that sends message_start, then an ``event: error``
                  (a non-streaming request gets that status instead)
  ``headers``     extra response headers (e.g. ``retry-after``, ``anthropic-ratelimit-unified-*``);
                  see ``usage_limit()``
  ``delay``       seconds to wait before answering
  ``hang``        ``"headers"`` (send nothing at all), ``"start"`` (200 + message_start, then
                  nothing), ``"text"`` (also part of a text block): the connection then stays open,
                  silent, until the client goes away or the server stops
  ``model``       the model named in the reply (default: the request's)

Session titles: without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 the CLI (2.1.197) first asks
the same model for a session title (no ``tools``; the first user message is the prompt wrapped in
``<session>...</session>`` plus "Write the title ..."). Such a request never reaches the rules: it
gets the text ``TITLE`` and is recorded with action "title".

Helpers build the usual rules: ``verdict_flow("planner", {"verdict": "done", ...},
steps=[write("a.txt", "x")])`` = the role does its steps one turn each, then calls
``StructuredOutput`` with the verdict, then (if the CLI asks again) says "Done.".

Request records
---------------
``{"n", "time", "method", "path", "headers", "body", "turn", "role", "rule", "action"}``:
``headers`` lower-cased, with ``x-api-key`` and ``authorization`` values replaced by
"<redacted>" (a presence check still works); ``body`` the parsed JSON (or null); ``turn`` and
``role`` as matched; ``rule`` the index of the rule that answered (null: the default, or not a
messages request); ``action`` a short name: text | tool_use | error | stream_error | hang |
not_found | count_tokens | title. Helpers: ``first_user_text(body)``, ``turn_of(body)``,
``tool_results(body)``, ``tool_names(body)``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STRUCTURED_OUTPUT = "StructuredOutput"

DEFAULT_USAGE = {"input_tokens": 100, "output_tokens": 20,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed your account's rate limit. Please try again later."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

REDACTED_HEADERS = ("x-api-key", "authorization")
TITLE = "Fake session title"


# -- building scripts --------------------------------------------------------------------------

def tool_use(name: str, input: dict | None = None, id: str | None = None) -> dict:  # noqa: A002
    block = {"name": name, "input": input or {}}
    if id:
        block["id"] = id
    return block


def write(file_path: str, content: str) -> dict:
    return tool_use("Write", {"file_path": file_path, "content": content})


def bash(command: str, description: str = "run a command") -> dict:
    return tool_use("Bash", {"command": command, "description": description})


def structured_output(value: dict) -> dict:
    return tool_use(STRUCTURED_OUTPUT, value)


def error(status: int, message: str | None = None, type: str | None = None,  # noqa: A002
          headers: dict | None = None) -> dict:
    action: dict[str, Any] = {"error": {"status": status}}
    if message:
        action["error"]["message"] = message
    if type:
        action["error"]["type"] = type
    if headers:
        action["headers"] = dict(headers)
    return action


def usage_limit(reset_epoch: int, claim: str = "five_hour") -> dict:
    """The 429 a subscription (OAuth) login gets when its usage limit is reached."""
    return error(429, "This request would exceed your account's rate limit. Please try again later.",
                 headers={"anthropic-ratelimit-unified-status": "rejected",
                          "anthropic-ratelimit-unified-reset": str(int(reset_epoch)),
                          "anthropic-ratelimit-unified-representative-claim": claim,
                          "anthropic-ratelimit-unified-5h-status": "rejected",
                          "anthropic-ratelimit-unified-5h-reset": str(int(reset_epoch)),
                          "anthropic-ratelimit-unified-5h-utilization": "1.0",
                          "retry-after": str(max(1, int(reset_epoch - time.time())))})


def verdict_flow(role: str | None, verdict: dict, steps: list[dict | list[dict]] | None = None,
                 usage: dict | None = None, match: str | None = None) -> list[dict]:
    """Rules for "the role does its steps, one turn each, then calls StructuredOutput with the
    verdict". A step is one tool_use block or a list of them (one turn). After the verdict call
    (if the CLI asks again) the model says "Done."."""
    steps = steps or []
    base: dict[str, Any] = {}
    if role:
        base["role"] = role
    if match:
        base["match"] = match
    if usage:
        base["usage"] = usage
    rules = []
    for index, step in enumerate(steps):
        blocks = step if isinstance(step, list) else [step]
        rules.append({**base, "turn": index, "tool_uses": blocks})
    rules.append({**base, "turn": len(steps), "tool_uses": [structured_output(verdict)]})
    rules.append({**base, "min_turn": len(steps) + 1, "text": "Done."})
    return rules


def write_script(path: Path | str, script: dict) -> None:
    """Write a script file atomically (the server re-reads it on every request)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(script))
    os.replace(tmp, path)


def read_log(path: Path | str) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written
    return out


# -- reading requests --------------------------------------------------------------------------

def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(block.get("text", "") for block in content
                         if isinstance(block, dict) and block.get("type") == "text")
    return ""


def first_user_text(body: dict | None) -> str:
    for message in (body or {}).get("messages") or []:
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def turn_of(body: dict | None) -> int:
    return sum(1 for m in (body or {}).get("messages") or [] if m.get("role") == "assistant")


def tool_results(body: dict | None) -> list[dict]:
    """Every tool_result block in the request's messages, in order."""
    found = []
    for message in (body or {}).get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            found.extend(b for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    return found


def tool_uses_in(body: dict | None) -> list[dict]:
    """Every tool_use block of the assistant messages in the request."""
    found = []
    for message in (body or {}).get("messages") or []:
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            found.extend(b for b in content if isinstance(b, dict) and b.get("type") == "tool_use")
    return found


def tool_names(body: dict | None) -> list[str]:
    return [tool.get("name") for tool in (body or {}).get("tools") or []]


def _role_of(text: str) -> str | None:
    marker = "You are the "
    at = text.find(marker)
    if at < 0:
        return None
    word = text[at + len(marker):].split(None, 1)
    return word[0].strip(".,:;") if word else None


def _is_title_request(body: dict, text: str) -> bool:
    """The session-title request the CLI makes before the first turn unless
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1: no tools, the prompt wrapped in <session>."""
    return not body.get("tools") and "<session>" in text and "title" in text


def _matches(rule: dict, body: dict, text: str, turn: int) -> bool:
    if "role" in rule and f"You are the {rule['role']}" not in text:
        return False
    if "match" in rule and rule["match"] not in text:
        return False
    if "turn" in rule:
        wanted = rule["turn"] if isinstance(rule["turn"], list) else [rule["turn"]]
        if turn not in wanted:
            return False
    if "min_turn" in rule and turn < rule["min_turn"]:
        return False
    if "model" in rule and rule["model"] not in str(body.get("model", "")):
        return False
    if "tools" in rule and rule["tools"] not in tool_names(body):
        return False
    return True


# -- the server --------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, owner: "FakeAnthropic"):
        super().__init__(address, handler)
        self.owner = owner

    def handle_error(self, request, client_address):  # a client that went away: not our error
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    # -- dispatch

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): ("<redacted>" if k.lower() in REDACTED_HEADERS else v)
                   for k, v in self.headers.items()}
        record: dict[str, Any] = {"method": self.command, "path": self.path, "headers": headers,
                                  "body": body, "turn": None, "role": None, "rule": None}
        if self.command == "POST" and path == "/v1/messages" and isinstance(body, dict):
            text = first_user_text(body)
            turn = turn_of(body)
            record.update(turn=turn, role=_role_of(text))
            if _is_title_request(body, text):
                index, action = None, {"text": TITLE, "usage": {"input_tokens": 50, "output_tokens": 5}}
                record["action"] = "title"
            else:
                index, action = owner._choose(body, text, turn)
                record["action"] = _action_name(action)
            record["rule"] = index
            owner._record(record)
            self._answer(body, action)
        elif self.command == "POST" and path == "/v1/messages/count_tokens":
            record["action"] = "count_tokens"
            owner._record(record)
            self._json(200, {"input_tokens": max(1, len(raw) // 4)})
        else:
            record["action"] = "not_found"
            owner._record(record)
            self._json(404, _error_body(404, "not_found_error", f"Not found: {self.command} {path}"))

    # -- answers

    def _answer(self, body: dict, action: dict) -> None:
        stop = self.server.owner._stopping
        if action.get("delay"):
            if stop.wait(float(action["delay"])):
                return self._drop()
        extra = {str(k): str(v) for k, v in (action.get("headers") or {}).items()}
        if "error" in action:
            status = int(action["error"].get("status", 500))
            kind, message = ERROR_TYPES.get(status, ("api_error", "Error"))
            err = _error_body(status, action["error"].get("type", kind), action["error"].get("message", message))
            return self._json(status, err, extra)
        hang = action.get("hang")
        if hang is True or hang == "headers":
            return self._hang()
        model = action.get("model") or body.get("model") or "claude-sonnet-4-5"
        message = _message(action, model)
        if not body.get("stream"):
            if "stream_error" in action:  # no stream to break: the same error as an HTTP status
                status = int(action["stream_error"].get("status", 529))
                kind, text = ERROR_TYPES.get(status, ("api_error", "Error"))
                return self._json(status, _error_body(status, action["stream_error"].get("type", kind),
                                                      action["stream_error"].get("message", text)), extra)
            return self._json(200, message, extra)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        start = dict(message, content=[], stop_reason=None, stop_sequence=None,
                     usage=dict(message["usage"], output_tokens=1))
        self._event("message_start", {"type": "message_start", "message": start})
        if hang == "start":
            return self._hang()
        self._event("ping", {"type": "ping"})
        if "stream_error" in action:
            status = int(action["stream_error"].get("status", 529))
            kind, text = ERROR_TYPES.get(status, ("api_error", "Error"))
            err = _error_body(status, action["stream_error"].get("type", kind),
                              action["stream_error"].get("message", text))
            self._event("error", {"type": "error", "error": err["error"]})
            return self._end_chunks()
        for index, block in enumerate(message["content"]):
            self._stream_block(index, block, hang == "text")
            if hang == "text":
                return self._hang()
        self._event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                      "usage": message["usage"]})
        self._event("message_stop", {"type": "message_stop"})
        self._end_chunks()

    def _stream_block(self, index: int, block: dict, partial: bool) -> None:
        kind = block["type"]
        if kind == "text":
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "text", "text": ""}})
            text = block["text"]
            pieces = [text[i:i + 40] for i in range(0, len(text), 40)] or [""]
            if partial:
                pieces = pieces[:1]
            for piece in pieces:
                self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "text_delta", "text": piece}})
            if partial:
                return
        elif kind == "thinking":
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "thinking", "thinking": "",
                                                                  "signature": ""}})
            self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "signature_delta", "signature": block["signature"]}})
        elif kind == "tool_use":
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "tool_use", "id": block["id"],
                                                                  "name": block["name"], "input": {}}})
            text = json.dumps(block["input"])
            # the real API starts with an empty partial_json, then sends the JSON in pieces
            for piece in [""] + [text[i:i + 25] for i in range(0, len(text), 25)]:
                self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "input_json_delta", "partial_json": piece}})
        self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _event(self, name: str, data: dict) -> None:
        payload = f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, obj: Any, extra: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        request_id = obj.get("request_id") if isinstance(obj, dict) else None
        self.send_header("request-id", request_id or "req_" + uuid.uuid4().hex[:24])
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _hang(self) -> None:
        """Keep the connection open and silent until the client leaves or the server stops."""
        stop = self.server.owner._stopping
        self.connection.settimeout(0.2)
        while not stop.is_set():
            try:
                if self.connection.recv(1, 0x2) == b"":  # MSG_PEEK: b"" = the client closed
                    break
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
            time.sleep(0.2)
        self._drop()

    def _drop(self) -> None:
        self.close_connection = True


def _action_name(action: dict) -> str:
    if "error" in action:
        return "error"
    if action.get("hang"):
        return "hang"
    if "stream_error" in action:
        return "stream_error"
    if action.get("tool_uses"):
        return "tool_use"
    return "text"


def _error_body(status: int, kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_" + uuid.uuid4().hex[:24]}


def _message(action: dict, model: str) -> dict:
    content: list[dict] = []
    if action.get("thinking"):
        content.append({"type": "thinking", "thinking": action["thinking"], "signature": "fake-signature"})
    tool_uses = action.get("tool_uses") or []
    text = action.get("text")
    if text is None and not tool_uses:
        text = "OK"
    if text:
        content.append({"type": "text", "text": text})
    for block in tool_uses:
        content.append({"type": "tool_use", "id": block.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                        "name": block["name"], "input": block.get("input") or {}})
    usage = dict(DEFAULT_USAGE, **(action.get("usage") or {}))
    return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": action.get("stop_reason") or ("tool_use" if tool_uses else "end_turn"),
            "stop_sequence": None, "usage": usage}


class FakeAnthropic:
    """The fake API. ``script`` may be set at any time; with ``script_path`` the script is
    re-read from that file on every request instead. ``log_path``: JSON lines, appended."""

    def __init__(self, script: dict | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 script_path: Path | str | None = None, log_path: Path | str | None = None):
        self.script = script if script is not None else {}
        self.host = host
        self.port = port
        self.script_path = Path(script_path) if script_path else None
        self.log_path = Path(log_path) if log_path else None
        self.requests: list[dict] = []
        self._counts: dict[Any, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = time.time()

    # -- life

    def start(self) -> "FakeAnthropic":
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- scripting

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def _current_script(self) -> dict:
        if self.script_path:
            try:
                self.script = json.loads(self.script_path.read_text())
            except (OSError, ValueError):
                pass  # keep the last good one
        return self.script or {}

    def _choose(self, body: dict, text: str, turn: int) -> tuple[int | None, dict]:
        with self._lock:
            script = self._current_script()
            for index, rule in enumerate(script.get("rules") or []):
                if not _matches(rule, body, text, turn):
                    continue
                key = rule.get("id", index)
                if "times" in rule and self._counts.get(key, 0) >= int(rule["times"]):
                    continue
                self._counts[key] = self._counts.get(key, 0) + 1
                return index, rule
            return None, script.get("default") or {"text": "OK"}

    # -- the record

    def _record(self, record: dict) -> None:
        with self._lock:
            record = {"n": len(self.requests) + 1, "time": time.time(), **record}
            self.requests.append(record)
            if self.log_path:
                with open(self.log_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")

    def messages_requests(self) -> list[dict]:
        return [r for r in list(self.requests) if r["path"].split("?")[0] == "/v1/messages"]

    def wait_requests(self, count: int, timeout: float = 30) -> list[dict]:
        end = time.time() + timeout
        while time.time() < end:
            if len(self.messages_requests()) >= count:
                return self.messages_requests()
            time.sleep(0.05)
        raise AssertionError(f"fake API: {len(self.messages_requests())} requests, not {count}, "
                             f"after {timeout}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--script", help="script JSON file, re-read on every request")
    parser.add_argument("--log", help="JSON-lines request log (appended)")
    parser.add_argument("--url-file", help="write the URL here once listening")
    args = parser.parse_args(argv)
    # the stop handlers first: a SIGTERM sent as soon as the URL is announced must end it with 0
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    fake = FakeAnthropic(host=args.host, port=args.port, script_path=args.script, log_path=args.log)
    fake.start()
    if args.url_file:
        tmp = args.url_file + ".tmp"
        Path(tmp).write_text(fake.url + "\n")
        os.replace(tmp, args.url_file)
    print(fake.url, flush=True)
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
