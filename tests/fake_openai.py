#!/usr/bin/env python3
"""A fake OpenAI Responses API on 127.0.0.1, for running the real Codex CLI offline.

Standard library only (``http.server.ThreadingHTTPServer``). Point the CLI at it through a
custom provider in ``$CODEX_HOME/config.toml`` (see tests/real_codex.py for the whole setup):
``base_url = "<fake.url>/v1"``, ``wire_api = "responses"``.

In-process::

    fake = FakeOpenAI(script={"rules": [...]}).start()   # or: with FakeOpenAI() as fake:
    fake.requests          # every request, recorded (see "Request records")
    fake.script = {...}    # change the script at any time
    fake.stop()

As a script (so a test can kill the CLI and this server independently)::

    python tests/fake_openai.py --port 0 --script script.json --log requests.jsonl [--url-file F]

prints ``http://127.0.0.1:PORT`` on its first stdout line, re-reads --script on every request
(write it atomically: ``write_script()``), appends one JSON line per request to --log.

Endpoints
---------
``POST /v1/responses``: answered by the script as server-sent events (what codex asks for):

    response.created             {"response": {"id", "status": "in_progress", ...}}
    response.output_item.added   {"output_index", "item": {... "status": "in_progress"}}
    response.output_text.delta   {"item_id", "output_index", "content_index": 0, "delta"}   (messages)
    response.output_item.done    {"output_index", "item": message | function_call}
    response.completed           {"response": {"id", "status": "completed", "usage": {...}}}

then the stream closes (codex waits for the close after response.completed). Anything else:
HTTP 404, recorded like every request.

Script
------
``{"rules": [RULE, ...], "default": ACTION}``: the first rule whose matchers all hold (and whose
``times`` is not used up) answers; else ``default`` (when absent: the message "OK").

Matchers of a RULE:
  ``role``     the user messages of ``input`` contain ``"You are the <role>"`` (iwo-lite's prompts)
  ``match``    the user messages contain this substring
  ``turn``     int or list: the number of model outputs already in ``input`` (function calls and
               assistant messages)
  ``min_turn`` int: turn >= min_turn
  ``schema``   true: the request carries ``text.format`` json_schema (``--output-schema``)
  ``times``    at most this many requests (counted per rule ``id``, default its index)

Actions:
  ``text``       an assistant message with this text (default "OK" without ``calls``)
  ``calls``      function calls after the text: ``[{"name": "exec_command", "arguments": {...}}]``
                 (see ``shell()``)
  ``usage``      merged over ``{"input_tokens": 100, "cached_tokens": 0, "output_tokens": 20,
                 "reasoning_tokens": 0}``
  ``error``      ``{"status": 429, "message"?, "type"?, "code"?}``: that HTTP status with body
                 ``{"error": {"message", "type", "code", "param": null}}``
  ``failed``     a 200 stream that ends with ``response.failed`` carrying this error object
  ``headers``    extra response headers (e.g. ``retry-after``)
  ``delay``      seconds to wait before answering
  ``hang``       ``"headers"`` (send nothing at all) or ``"start"`` (200 + response.created, then
                 nothing): the connection stays open, silent, until the client goes or we stop

Helpers: ``shell("ls")``, ``verdict_flow(role, {"verdict": ...}, steps=[shell(...)])`` = the role
runs its shell steps one turn each, then answers with the verdict JSON as its final message.

Request records
---------------
``{"n", "time", "method", "path", "headers", "body", "turn", "role", "rule", "action"}`` with
``authorization`` redacted. Helpers: ``user_text(body)``, ``turn_of(body)``,
``call_outputs(body)`` (the function_call_output items codex sent back).
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

DEFAULT_USAGE = {"input_tokens": 100, "cached_tokens": 0, "output_tokens": 20, "reasoning_tokens": 0}
ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("invalid_request_error", "Incorrect API key provided: sk-fake. You can find your API key at "
          "https://platform.openai.com/account/api-keys."),
    403: ("permission_error", "You are not allowed to sample from this model"),
    404: ("invalid_request_error", "The model does not exist"),
    429: ("rate_limit_exceeded", "Rate limit reached for requests"),
    500: ("server_error", "The server had an error while processing your request."),
    503: ("server_error", "The engine is currently overloaded, please try again later"),
}
REDACTED_HEADERS = ("authorization", "x-api-key")


# -- building scripts --------------------------------------------------------------------------

def call(name: str, arguments: dict) -> dict:
    return {"name": name, "arguments": arguments}


def shell(cmd: str) -> dict:
    """Codex's shell tool (0.169): exec_command {"cmd": ...}."""
    return call("exec_command", {"cmd": cmd})


def error(status: int, message: str | None = None, type: str | None = None,  # noqa: A002
          code: str | None = None, headers: dict | None = None) -> dict:
    action: dict[str, Any] = {"error": {"status": status}}
    for key, value in (("message", message), ("type", type), ("code", code)):
        if value:
            action["error"][key] = value
    if headers:
        action["headers"] = dict(headers)
    return action


def usage_limit(resets_in_s: int = 3600) -> dict:
    """The 429 a ChatGPT plan gets when its usage limit is reached (codex reads error.type)."""
    action = error(429, "The usage limit has been reached", type="usage_limit_reached")
    action["error"]["resets_in_seconds"] = int(resets_in_s)
    action["error"]["resets_at"] = int(time.time() + resets_in_s)
    return action


def verdict_flow(role: str | None, verdict: dict, steps: list[dict | list[dict]] | None = None,
                 usage: dict | None = None, match: str | None = None) -> list[dict]:
    """The role runs its steps (one turn each), then its final message is the verdict JSON."""
    base: dict[str, Any] = {}
    if role:
        base["role"] = role
    if match:
        base["match"] = match
    if usage:
        base["usage"] = usage
    rules = []
    for index, step in enumerate(steps or []):
        rules.append({**base, "turn": index, "calls": step if isinstance(step, list) else [step]})
    rules.append({**base, "min_turn": len(steps or []), "text": json.dumps(verdict)})
    return rules


def write_script(path: Path | str, script: dict) -> None:
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
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# -- reading requests --------------------------------------------------------------------------

def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def user_text(body: dict | None) -> str:
    """Every user message of the request's input, joined."""
    return "\n".join(_texts(item.get("content")) for item in (body or {}).get("input") or []
                     if isinstance(item, dict) and item.get("type", "message") == "message"
                     and item.get("role") == "user")


def turn_of(body: dict | None) -> int:
    return sum(1 for item in (body or {}).get("input") or [] if isinstance(item, dict) and (
        item.get("type") == "function_call" or (item.get("type") == "message" and item.get("role") == "assistant")))


def call_outputs(body: dict | None) -> list[dict]:
    return [item for item in (body or {}).get("input") or []
            if isinstance(item, dict) and item.get("type") == "function_call_output"]


def _role_of(text: str) -> str | None:
    at = text.find("You are the ")
    if at < 0:
        return None
    word = text[at + len("You are the "):].split(None, 1)
    return word[0].strip(".,:;") if word else None


def _matches(rule: dict, body: dict, text: str, turn: int) -> bool:
    if "role" in rule and f"You are the {rule['role']}" not in text:
        return False
    if "match" in rule and rule["match"] not in text:
        return False
    if "turn" in rule and turn not in (rule["turn"] if isinstance(rule["turn"], list) else [rule["turn"]]):
        return False
    if "min_turn" in rule and turn < rule["min_turn"]:
        return False
    if rule.get("schema") and ((body.get("text") or {}).get("format") or {}).get("type") != "json_schema":
        return False
    return True


# -- the server --------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, owner: "FakeOpenAI"):
        super().__init__(address, handler)
        self.owner = owner

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
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

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("content-encoding") == "zstd":
            raw = b""  # not expected (codex compresses only for the OpenAI host)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): ("<redacted>" if k.lower() in REDACTED_HEADERS else v) for k, v in self.headers.items()}
        record: dict[str, Any] = {"method": self.command, "path": self.path, "headers": headers, "body": body,
                                  "turn": None, "role": None, "rule": None,
                                  "authorized": bool(self.headers.get("authorization"))}
        if self.command == "POST" and path.endswith("/responses") and isinstance(body, dict):
            text = user_text(body)
            turn = turn_of(body)
            index, action = owner._choose(body, text, turn)
            record.update(turn=turn, role=_role_of(text), rule=index, action=_action_name(action))
            owner._record(record)
            self._answer(action)
        else:
            record["action"] = "not_found"
            owner._record(record)
            self._json(404, {"error": {"message": f"Not found: {self.command} {path}", "type": "invalid_request_error",
                                       "code": None, "param": None}})

    def _answer(self, action: dict) -> None:
        stop = self.server.owner._stopping
        if action.get("delay") and stop.wait(float(action["delay"])):
            return self._drop()
        extra = {str(k): str(v) for k, v in (action.get("headers") or {}).items()}
        if "error" in action:
            status = int(action["error"].get("status", 500))
            kind, message = ERROR_TYPES.get(status, ("server_error", "Error"))
            err = {"message": action["error"].get("message", message), "type": action["error"].get("type", kind),
                   "code": action["error"].get("code"), "param": None}
            for key in ("resets_in_seconds", "resets_at", "plan_type"):
                if key in action["error"]:
                    err[key] = action["error"][key]
            return self._json(status, {"error": err}, extra)
        if action.get("hang") in (True, "headers"):
            return self._hang()
        response_id = "resp_" + uuid.uuid4().hex[:24]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        base = {"id": response_id, "object": "response", "created_at": int(time.time()), "model": "gpt-5.5"}
        self._event("response.created", {"type": "response.created", "response": dict(base, status="in_progress")})
        if action.get("hang") == "start":
            return self._hang()
        if "failed" in action:
            self._event("response.failed", {"type": "response.failed", "response": dict(
                base, status="failed", error=action["failed"])})
            return self._drop()
        index = 0
        calls = action.get("calls") or []
        text = action.get("text")
        if text is None and not calls:
            text = "OK"
        if text:
            item_id = "msg_" + uuid.uuid4().hex[:24]
            self._event("response.output_item.added", {"type": "response.output_item.added", "output_index": index,
                                                       "item": {"type": "message", "id": item_id, "role": "assistant",
                                                                "status": "in_progress", "content": []}})
            for start in range(0, len(text), 40):
                self._event("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item_id,
                                                           "output_index": index, "content_index": 0,
                                                           "delta": text[start:start + 40]})
            self._event("response.output_item.done", {"type": "response.output_item.done", "output_index": index,
                                                      "item": {"type": "message", "id": item_id, "role": "assistant",
                                                               "status": "completed",
                                                               "content": [{"type": "output_text", "text": text,
                                                                            "annotations": []}]}})
            index += 1
        for spec in calls:
            item = {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:24],
                    "call_id": spec.get("call_id") or "call_" + uuid.uuid4().hex[:24], "name": spec["name"],
                    "arguments": json.dumps(spec.get("arguments") or {}), "status": "completed"}
            self._event("response.output_item.added", {"type": "response.output_item.added", "output_index": index,
                                                       "item": dict(item, arguments="", status="in_progress")})
            self._event("response.output_item.done", {"type": "response.output_item.done", "output_index": index,
                                                      "item": item})
            index += 1
        usage = dict(DEFAULT_USAGE, **(action.get("usage") or {}))
        self._event("response.completed", {"type": "response.completed", "response": dict(
            base, status="completed", usage={
                "input_tokens": usage["input_tokens"], "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"]})})
        self._drop()

    def _event(self, name: str, data: dict) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, obj: Any, extra: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _hang(self) -> None:
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
    if "failed" in action:
        return "failed"
    return "call" if action.get("calls") else "text"


class FakeOpenAI:
    """The fake API. ``script`` may be set at any time; with ``script_path`` the script is re-read
    from that file on every request. ``log_path``: JSON lines, appended."""

    def __init__(self, script: dict | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 script_path: Path | str | None = None, log_path: Path | str | None = None):
        self.script = script if script is not None else {}
        self.host, self.port = host, port
        self.script_path = Path(script_path) if script_path else None
        self.log_path = Path(log_path) if log_path else None
        self.requests: list[dict] = []
        self._counts: dict[Any, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None

    def start(self) -> "FakeOpenAI":
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fake-openai",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def _choose(self, body: dict, text: str, turn: int) -> tuple[int | None, dict]:
        with self._lock:
            if self.script_path:
                try:
                    self.script = json.loads(self.script_path.read_text())
                except (OSError, ValueError):
                    pass
            script = self.script or {}
            for index, rule in enumerate(script.get("rules") or []):
                if not _matches(rule, body, text, turn):
                    continue
                key = rule.get("id", index)
                if "times" in rule and self._counts.get(key, 0) >= int(rule["times"]):
                    continue
                self._counts[key] = self._counts.get(key, 0) + 1
                return index, rule
            return None, script.get("default") or {"text": "OK"}

    def _record(self, record: dict) -> None:
        with self._lock:
            record = {"n": len(self.requests) + 1, "time": time.time(), **record}
            self.requests.append(record)
            if self.log_path:
                with open(self.log_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")

    def responses_requests(self) -> list[dict]:
        return [r for r in list(self.requests) if r["path"].split("?")[0].endswith("/responses")]

    def wait_requests(self, count: int, timeout: float = 30) -> list[dict]:
        end = time.time() + timeout
        while time.time() < end:
            if len(self.responses_requests()) >= count:
                return self.responses_requests()
            time.sleep(0.05)
        raise AssertionError(f"fake API: {len(self.responses_requests())} requests, not {count}, after {timeout}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake OpenAI Responses API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--script")
    parser.add_argument("--log")
    parser.add_argument("--url-file")
    args = parser.parse_args(argv)
    # the stop handlers first: a SIGTERM sent as soon as the URL is announced must end it with 0
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    fake = FakeOpenAI(host=args.host, port=args.port, script_path=args.script, log_path=args.log).start()
    if args.url_file:
        Path(args.url_file + ".tmp").write_text(fake.url + "\n")
        os.replace(args.url_file + ".tmp", args.url_file)
    print(fake.url, flush=True)
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
