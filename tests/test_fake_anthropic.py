"""The fake Anthropic Messages API itself (tests/fake_anthropic.py), without the real CLI:
SSE framing, tool_use input_json_delta, errors with headers, hangs, the script file and the
request log."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_anthropic as fa

TESTS = Path(__file__).resolve().parent


def post(url: str, body: dict | None, path: str = "/v1/messages?beta=true", headers: dict | None = None,
         timeout: float = 10, method: str = "POST"):
    host, port = url.rsplit("/", 1)[-1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"content-type": "application/json", "x-api-key": "sk-ant-secret",
                                                   **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response, raw


def events(raw: bytes) -> list[tuple[str, dict]]:
    """Parse an SSE body into (event name, data) pairs, checking the framing strictly."""
    out = []
    text = raw.decode()
    assert text.endswith("\n\n")
    for frame in text.split("\n\n")[:-1]:
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name
        out.append((name, data))
    return out


def request(text: str = "You are the planner. Plan.", assistant_turns: int = 0, stream: bool = True, **extra) -> dict:
    messages = [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                             {"type": "text", "text": text}]}]
    for index in range(assistant_turns):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{index}", "name": "Bash",
                                                           "input": {"command": "ls"}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{index}",
                                                      "content": f"result-{index}"}]})
    return {"model": "claude-opus-4-8", "max_tokens": 1000, "stream": stream, "messages": messages,
            "tools": [{"name": "Bash"}, {"name": fa.STRUCTURED_OUTPUT}], **extra}


@pytest.fixture
def fake():
    server = fa.FakeAnthropic().start()
    yield server
    server.stop()


def test_text_reply_is_framed_like_the_real_stream(fake):
    fake.script = {"default": {"text": "Hello there, " * 10, "usage": {"input_tokens": 7, "output_tokens": 3}}}
    response, raw = post(fake.url, request())
    assert response.status == 200
    assert response.getheader("content-type").startswith("text/event-stream")
    got = events(raw)
    names = [name for name, _ in got]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = got[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["model"] == "claude-opus-4-8"
    assert start["usage"]["input_tokens"] == 7 and start["stop_reason"] is None
    text = "".join(d["delta"]["text"] for n, d in got if n == "content_block_delta")
    assert text == "Hello there, " * 10
    assert all(d["delta"]["type"] == "text_delta" for n, d in got if n == "content_block_delta")
    delta = dict(got)["message_delta"]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3


def test_tool_use_streams_its_input_as_input_json_delta(fake):
    verdict = {"verdict": "done", "summary": "a plan with \"quotes\" and ünïcode " * 3}
    fake.script = {"rules": [{"role": "planner", "turn": 0, "text": "Writing.",
                              "tool_uses": [fa.write("/tmp/x.txt", "hi\n"), fa.structured_output(verdict)]}]}
    response, raw = post(fake.url, request())
    got = events(raw)
    starts = [d for n, d in got if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert starts[1]["content_block"]["name"] == "Write" and starts[1]["content_block"]["input"] == {}
    assert starts[2]["content_block"]["name"] == "StructuredOutput"
    assert starts[1]["content_block"]["id"].startswith("toolu_")
    for index, expected in ((1, {"file_path": "/tmp/x.txt", "content": "hi\n"}), (2, verdict)):
        pieces = [d["delta"] for n, d in got if n == "content_block_delta" and d["index"] == index]
        assert all(p["type"] == "input_json_delta" for p in pieces)
        assert pieces[0]["partial_json"] == "" and len(pieces) > 2
        assert json.loads("".join(p["partial_json"] for p in pieces)) == expected
    assert dict(got)["message_delta"]["delta"]["stop_reason"] == "tool_use"


def test_rules_match_role_turn_model_and_times_in_order(fake):
    fake.script = {
        "rules": [
            {"role": "reviewer", "text": "review"},
            {"role": "planner", "turn": 0, "times": 1, "text": "first"},
            {"role": "planner", "turn": [0, 1], "text": "again"},
            {"min_turn": 2, "model": "haiku", "text": "haiku late"},
        ],
        "default": {"text": "fallback"},
    }

    def answer(body):
        _, raw = post(fake.url, body)
        return "".join(d["delta"].get("text", "") for n, d in events(raw) if n == "content_block_delta")

    assert answer(request()) == "first"
    assert answer(request()) == "again"  # rule 1 used up
    assert answer(request(assistant_turns=1)) == "again"
    assert answer(request(assistant_turns=2)) == "fallback"
    assert answer(request(assistant_turns=2, model="claude-haiku-4-5")) == "haiku late"
    assert answer(request("You are the reviewer. Review.")) == "review"
    assert [r["rule"] for r in fake.requests] == [1, 2, 2, None, 3, 0]
    assert [r["turn"] for r in fake.requests] == [0, 0, 1, 2, 2, 0]
    assert fake.requests[-1]["role"] == "reviewer"
    fake.reset_counts()
    assert answer(request()) == "first"


def test_verdict_flow_helper():
    rules = fa.verdict_flow("builder", {"verdict": "done", "summary": "s"},
                            steps=[fa.write("a", "b"), [fa.bash("ls"), fa.bash("pwd")]], usage={"output_tokens": 9})
    assert [r.get("turn", r.get("min_turn")) for r in rules] == [0, 1, 2, 3]
    assert [len(r.get("tool_uses", [])) for r in rules] == [1, 2, 1, 0]
    assert rules[2]["tool_uses"][0] == {"name": "StructuredOutput", "input": {"verdict": "done", "summary": "s"}}
    assert all(r["role"] == "builder" and r["usage"] == {"output_tokens": 9} for r in rules)


@pytest.mark.parametrize("status,kind", [(401, "authentication_error"), (429, "rate_limit_error"),
                                         (500, "api_error"), (529, "overloaded_error")])
def test_errors_in_the_anthropic_format_with_headers(fake, status, kind):
    fake.script = {"default": fa.error(status, headers={"retry-after": "7", "x-extra": "1"})}
    response, raw = post(fake.url, request())
    assert response.status == status
    body = json.loads(raw)
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert body["request_id"].startswith("req_")
    assert response.getheader("retry-after") == "7" and response.getheader("x-extra") == "1"
    assert fake.requests[-1]["action"] == "error"


def test_usage_limit_headers(fake):
    reset = int(time.time()) + 3600
    fake.script = {"default": fa.usage_limit(reset)}
    response, _ = post(fake.url, request())
    assert response.status == 429
    assert response.getheader("anthropic-ratelimit-unified-status") == "rejected"
    assert response.getheader("anthropic-ratelimit-unified-reset") == str(reset)
    assert response.getheader("anthropic-ratelimit-unified-representative-claim") == "five_hour"


def test_stream_error_and_its_non_streaming_twin(fake):
    fake.script = {"default": {"stream_error": {"status": 529}}}
    response, raw = post(fake.url, request())
    assert response.status == 200
    got = events(raw)
    assert [n for n, _ in got] == ["message_start", "ping", "error"]
    assert got[-1][1]["error"]["type"] == "overloaded_error"
    response, raw = post(fake.url, request(stream=False))
    assert response.status == 529 and json.loads(raw)["error"]["type"] == "overloaded_error"


def test_non_streaming_request_gets_one_json_message(fake):
    fake.script = {"default": {"tool_uses": [fa.bash("ls")], "text": "t", "usage": {"output_tokens": 4}}}
    response, raw = post(fake.url, request(stream=False))
    message = json.loads(raw)
    assert response.status == 200 and message["type"] == "message" and message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][1]["input"] == {"command": "ls", "description": "run a command"}
    assert message["usage"]["output_tokens"] == 4 and message["usage"]["input_tokens"] == 100


def test_a_session_title_request_bypasses_the_rules(fake):
    fake.script = {"default": fa.error(529)}
    body = request("<session>\nYou are the planner. Plan.\n</session>\n\nWrite the title in the language ...")
    del body["tools"]
    response, raw = post(fake.url, body)
    assert response.status == 200
    assert "".join(d["delta"].get("text", "") for n, d in events(raw) if n == "content_block_delta") == fa.TITLE
    assert fake.requests[-1]["action"] == "title" and fake.requests[-1]["rule"] is None
    assert post(fake.url, request())[0].status == 529


def test_other_paths_are_404_and_logged(fake):
    response, raw = post(fake.url, None, path="/api/oauth/profile", method="GET")
    assert response.status == 404 and json.loads(raw)["error"]["type"] == "not_found_error"
    response, raw = post(fake.url, {"messages": []}, path="/v1/messages/count_tokens")
    assert response.status == 200 and json.loads(raw)["input_tokens"] >= 1
    assert [(r["method"], r["path"], r["action"]) for r in fake.requests] == [
        ("GET", "/api/oauth/profile", "not_found"), ("POST", "/v1/messages/count_tokens", "count_tokens")]


def test_request_record_hides_the_key_and_keeps_the_body(fake):
    post(fake.url, request(assistant_turns=2), headers={"authorization": "Bearer sk-ant-oat01-secret"})
    record = fake.requests[0]
    assert record["headers"]["x-api-key"] == "<redacted>" and record["headers"]["authorization"] == "<redacted>"
    assert "secret" not in json.dumps(record)
    assert record["path"] == "/v1/messages?beta=true" and record["method"] == "POST" and record["turn"] == 2
    assert fa.first_user_text(record["body"]).endswith("You are the planner. Plan.")
    assert [t["content"] for t in fa.tool_results(record["body"])] == ["result-0", "result-1"]
    assert [t["name"] for t in fa.tool_uses_in(record["body"])] == ["Bash", "Bash"]
    assert fa.tool_names(record["body"]) == ["Bash", "StructuredOutput"]
    assert record["time"] <= time.time()


def test_delay_and_hang_until_stop():
    server = fa.FakeAnthropic({"rules": [{"turn": 0, "delay": 0.5, "text": "late"}, {"turn": 1, "hang": "start"},
                                         {"turn": 2, "hang": "headers"}]}).start()
    try:
        began = time.time()
        response, _ = post(server.url, request())
        assert response.status == 200 and time.time() - began >= 0.5
        # "start": headers and message_start arrive, then silence
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        body = json.dumps(request(assistant_turns=1)).encode()
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        seen = b""
        while b"message_start" not in seen:
            seen += sock.recv(65536)
        assert seen.startswith(b"HTTP/1.1 200")
        sock.settimeout(1)
        with pytest.raises(socket.timeout):
            sock.recv(65536)
        # "headers": nothing at all
        with pytest.raises(socket.timeout):
            post(server.url, request(assistant_turns=2), timeout=1)
        assert [r["action"] for r in server.requests] == ["text", "hang", "hang"]
    finally:
        began = time.time()
        server.stop()
        assert time.time() - began < 5
    sock.settimeout(5)
    assert sock.recv(65536) == b""  # the server closed the hung connection on stop
    sock.close()


def test_as_a_script_with_a_script_file_and_a_log(tmp_path):
    script, log, url_file = tmp_path / "script.json", tmp_path / "requests.jsonl", tmp_path / "url"
    fa.write_script(script, {"default": fa.error(529)})
    proc = subprocess.Popen([sys.executable, str(TESTS / "fake_anthropic.py"), "--port", "0", "--script", str(script),
                             "--log", str(log), "--url-file", str(url_file)], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url_file.read_text().strip() == url
        assert post(url, request())[0].status == 529
        fa.write_script(script, {"default": {"text": "now fine"}})  # re-read on every request
        assert post(url, request())[0].status == 200
        records = fa.read_log(log)
        assert [r["action"] for r in records] == ["error", "text"] and [r["n"] for r in records] == [1, 2]
        assert records[0]["body"]["messages"][0]["role"] == "user"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
