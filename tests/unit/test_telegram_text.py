"""What the Telegram bot says, and the ids of specs sent as text: pure functions, no bot, no daemon.

Also `TelegramNotifier.send_event` against a stub bot and store (which kinds are sent, what is
recorded, a chat that fails), since the daemon side that emits events is wired elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from types import SimpleNamespace

import pytest

from iwo_lite import intake, text
from iwo_lite.errors import UserError
from iwo_lite.intake import check_id, text_spec_id
from iwo_lite.notify import telegram
from iwo_lite.notify.telegram import (DEFAULT_NOTIFY, TELEGRAM_LIMIT, command_body, event_text, file_base_url, fit,
                                      gate_text, is_text_document, spec_text, status_text, units)
from iwo_lite.store import Write
from iwo_lite.text import MAX_SPEC_BYTES, validate_spec_text
from iwo_lite.times import iso_utc

NOW = 1_800_000_000.0


def at(offset_s: float) -> str:
    return iso_utc(NOW + offset_s)


def spec_row(**fields) -> dict:
    row = {"id": "add-greeting-1a2b3c4d", "title": "Add a greeting", "state": "running", "role": "builder",
           "step": 2, "question": None, "deadline": None, "updated_at": at(-300), "dispatches": 2,
           "cost_usd": 0.02, "error": None, "created_at": at(-600), "parent_id": None}
    row.update(fields)
    return row


GATE = {"rowid": 7, "gate_id": "add-greeting-1a2b3c4d#03", "spec_id": "add-greeting-1a2b3c4d",
        "title": "Add a greeting", "role": "reviewer", "question": "Add the requests dependency?",
        "deadline": "2027-01-16T08:00:00.000Z", "on_timeout": "reject", "answer": None, "note": None,
        "answered_by": None, "answered_via": None}


# -- /status -----------------------------------------------------------------------------------


def test_status_fits_a_phone_a_few_short_lines_per_spec():
    specs = [
        spec_row(id="waits-00000001", state="waiting", role="reviewer", step=3, question="Add requests? " * 20,
                 deadline=at(23 * 3600 + 60), dispatches=3, cost_usd=0.03),
        spec_row(id="broke-00000002", state="failed", error="the builder agent failed after 3 attempts: " + "x" * 300),
        spec_row(id="runs-00000003", state="running", title="T" * 200,
                 progress={"turns": 4, "tool": "Bash", "tokens": 12345, "cost_usd": 0.01, "last_event_at": at(-10)}),
        spec_row(id="done-00000004", state="done", role="docs", step=6, dispatches=6, cost_usd=1.5),
    ]
    out = status_text(specs, more=7, now=NOW)
    assert max(len(line) for line in out.splitlines()) <= 100  # no wide table: short lines
    for spec in specs:
        assert spec["id"] in out.splitlines()  # the id alone on its line: easy to copy
    assert "waiting · reviewer 03 · 3 calls · $0.0300 · 5m ago" in out
    assert "asks: Add requests?" in out and "(23h left)" in out
    assert "error: the builder agent failed after 3 attempts" in out
    assert "now: turn 4 · Bash · 12,345 tokens · $0.0100 · 10s ago" in out
    assert "done · docs 06 · 6 calls · $1.50" in out
    assert "7 older spec(s) not shown" in out and "/spec ID" in out
    assert units(out) <= TELEGRAM_LIMIT


def test_status_with_no_specs_and_a_paused_one():
    assert "no specs yet" in status_text([], 0, now=NOW)
    out = status_text([spec_row(paused_until=at(7200), pause_reason="usage limit")], 0, now=NOW)
    assert "paused (usage limit) until " + at(7200) + ", 2h left" in out


# -- /spec ID ----------------------------------------------------------------------------------


def test_spec_detail_has_state_role_progress_cost_dispatches_and_gates():
    spec = spec_row(state="waiting", role="reviewer", step=3, question="Add the requests dependency?",
                    deadline=at(3600 * 5), dispatches=4, cost_usd=0.04, gate_reason="blocker",
                    progress={"turns": 7, "tool": "Edit", "tokens": 2000, "cost_usd": 0.005, "last_event_at": at(-3)},
                    branch="iwo/add-greeting-1a2b3c4d", head="0123456789abcdef0123", budget_usd=5)
    steps = [{"step": n, "role": role, "started_at": at(-600 + n), "finished_at": at(-500 + n), "verdict": verdict,
              "summary": "", "question": None, "handoff": None, "error": None}
             for n, role, verdict in ((1, "planner", "done"), (2, "builder", "done"), (3, "reviewer", "blocker"))]
    attempts = [{"step": 1, "attempt": 1, "cost_usd": 0.01}, {"step": 2, "attempt": 1, "cost_usd": 0.01},
                {"step": 2, "attempt": 2, "cost_usd": 0.01}, {"step": 3, "attempt": 1, "cost_usd": 0.01}]
    gates = [
        {"id": "add-greeting-1a2b3c4d#01", "role": "planner", "reason": "agent_failed", "question": "retry?",
         "deadline": at(-100), "answer": "approve", "note": None, "answered_by": "@alice", "answered_via": "telegram"},
        {"id": "add-greeting-1a2b3c4d#03", "role": "reviewer", "reason": "blocker",
         "question": "Add the requests dependency?", "deadline": at(3600 * 5), "answer": None, "note": None,
         "answered_by": None, "answered_via": None},
    ]
    out = spec_text(spec, steps, attempts, gates, now=NOW)
    assert out.splitlines()[:2] == ["add-greeting-1a2b3c4d", "Add a greeting"]
    assert "state: waiting — reviewer, dispatch 03 · 5m ago" in out
    assert "asks (blocker): Add the requests dependency? (5h left)" in out
    assert "progress: turn 7 · Edit · 2,000 tokens · $0.0050 · 3s ago" in out
    assert "cost: $0.0400 over 4 dispatch(es) (budget $5.00)" in out
    assert "branch: iwo/add-greeting-1a2b3c4d at 0123456789ab" in out
    assert "02 builder — done · $0.0200" in out and "03 reviewer — blocker · $0.0100" in out
    assert "add-greeting-1a2b3c4d#01 planner (agent_failed) — approve by @alice via telegram" in out
    assert "add-greeting-1a2b3c4d#03 reviewer (blocker) — waiting, 5h left" in out
    assert "iwo-lite status add-greeting-1a2b3c4d" in out


def test_spec_detail_of_an_old_row_without_the_new_fields():
    """Rows from before the progress/pause/branch columns: rendered without them, no KeyError."""
    out = spec_text(spec_row(state="failed", error="boom"), [], [], [], now=NOW)
    assert "error: boom" in out and "progress" not in out and "branch" not in out and "paused" not in out
    json_progress = spec_row(progress='{"turns": 2, "tool": "Read"}')  # a JSON column not decoded
    assert "progress: turn 2 · Read" in spec_text(json_progress, [], [], [], now=NOW)


def test_spec_detail_shows_the_last_dispatches_only():
    steps = [{"step": n, "role": "builder", "started_at": at(0), "finished_at": at(1), "verdict": "done",
              "summary": "", "question": None, "handoff": None, "error": None} for n in range(1, 31)]
    out = spec_text(spec_row(), steps, [], [], now=NOW)
    assert "… 18 earlier" in out and "30 builder" in out and "\n01 builder" not in out


# -- events ------------------------------------------------------------------------------------


def event(kind: str, **fields) -> dict:
    base = {"kind": kind, "spec_id": "add-greeting-1a2b3c4d", "title": "Add a greeting", "state": kind,
            "dispatches": 6, "cost_usd": 0.06, "branch": "iwo/add-greeting-1a2b3c4d", "error": None,
            "pause_reason": None, "paused_until": None}
    base.update(fields)
    return base


@pytest.mark.parametrize("kind", ["done", "failed", "rejected", "paused"])
def test_each_event_names_the_state_title_id_dispatches_cost_and_branch(kind):
    out = event_text(event(kind), now=NOW)
    first = out.splitlines()[0]
    assert first.startswith(f"iwo-lite — {kind}") and first.endswith("Add a greeting")
    assert "spec add-greeting-1a2b3c4d" in out and "6 dispatch(es) · $0.0600" in out
    assert "branch: iwo/add-greeting-1a2b3c4d" in out


def test_event_details_per_kind():
    failed = event_text(event("failed", error="the tester agent failed: exit 1"), now=NOW)
    assert "error: the tester agent failed: exit 1" in failed
    paused = event_text(event("paused", state="running", pause_reason="usage limit", paused_until=at(7200)),
                        now=NOW)
    assert paused.startswith("iwo-lite — paused (usage limit): Add a greeting")
    assert f"resumes at {at(7200)} (2h left)" in paused and "state running" in paused
    shared = event_text(event("done", branch=None), now=NOW)
    assert "branch" not in shared


# -- Telegram's 4,096 characters ---------------------------------------------------------------


def test_a_10000_character_question_is_cut_to_fit_and_says_so():
    gate = dict(GATE, question="Why? " + "q" * 9995)
    for kind in ("question", "reminder"):
        out = gate_text(gate, kind)
        assert units(out) <= TELEGRAM_LIMIT
        assert "10,000 characters are over Telegram's 4,096-character limit" in out
        assert "iwo-lite status add-greeting-1a2b3c4d" in out
        assert "Deadline: 2027-01-16T08:00:00.000Z (then: reject)" in out  # the rest of the message is kept
        assert out.rstrip().endswith("with your text.")
    answered = dict(gate, answer="revise", note="n" * 3000, answered_by="@bob", answered_via="telegram")
    edited = gate_text(answered, "question", telegram.answered_suffix(answered))
    assert units(edited) <= TELEGRAM_LIMIT and "iwo-lite status" in edited


def test_a_short_question_is_untouched():
    out = gate_text(GATE)
    assert "Add the requests dependency?" in out and "cut" not in out


def test_fit_counts_as_telegram_does_and_never_splits_a_character():
    assert fit("hello", "x") == "hello"
    emoji = "\U0001f600" * 3000  # 6,000 UTF-16 units in 3,000 characters
    out = fit(emoji, "s-1")
    assert units(out) <= TELEGRAM_LIMIT and "iwo-lite status s-1" in out
    assert out.split("…")[0] == "\U0001f600" * (len(out.split("…")[0]))
    exact = "x" * TELEGRAM_LIMIT
    assert fit(exact) == exact and units(fit(exact + "y")) <= TELEGRAM_LIMIT
    assert "iwo-lite status]" in fit("y" * 5000)  # no spec: the command still points somewhere


# -- ids of specs sent as text -----------------------------------------------------------------


def sha8(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


@pytest.mark.parametrize("spec, slug", [
    ("# Add a greeting\nMake greet() say hello.\n", "add-a-greeting"),
    ("\n\n   \nFix: the *login* page!!\n", "fix-the-login-page"),  # blank lines skipped, punctuation folded
    ("🎉🎉 !!! ???\nthe real title\n", "spec"),  # emoji/punctuation only: "spec", not the next line
    ("Café crème — naïve façade\n", "cafe-creme-naive-facade"),  # accents dropped
    ("Добавить приветствие\n", "spec"),  # no ASCII letters at all
    ("ＡＢＣ ｆｕｌｌｗｉｄｔｈ\n", "abc-fullwidth"),  # compatibility forms folded
])
def test_text_spec_id_slug_rules(spec, slug):
    spec_id = text_spec_id(spec)
    assert spec_id == f"{slug}-{sha8(spec)}"
    assert check_id(spec_id) == spec_id


def test_text_spec_id_long_first_line_and_stability():
    line = "Make the very long first line of this spec into a slug that stops somewhere " * 3
    spec_id = text_spec_id(line + "\nbody")
    slug = spec_id.rsplit("-", 1)[0]
    assert len(slug) <= 40 and not slug.endswith("-") and slug.startswith("make-the-very-long-first-line-of")
    assert len(spec_id) <= 64 and check_id(spec_id) == spec_id
    assert text_spec_id(line + "\nbody") == spec_id  # the same text twice: the same spec
    assert text_spec_id(line + "\nbody!") != spec_id
    assert text_spec_id("a" * 39 + "-b\n").startswith("a" * 39 + "-")  # cut at 40, no trailing "-"


def test_a_document_id_follows_the_file_rule():
    from pathlib import Path

    body = "# Spec\nbody\n"
    assert intake.derive_id(Path("My Spec.md"), body) == f"My-Spec-{sha8(body)}"


# -- a spec's text: one rule for files and Telegram --------------------------------------------


def test_validate_spec_text_same_checks_as_a_file():
    assert validate_spec_text("# ok\n", "/submit") == "# ok\n"
    assert validate_spec_text("# ok é\n".encode(), "a.md") == "# ok é\n"
    for data, words in ((b"", "spec is empty"), ("  \n\t", "spec is empty"), (b"ab\x00cd", "looks binary"),
                        ("ab\x00", "looks binary"),
                        ("caf\xe9".encode("latin-1"), "not UTF-8 text (bad byte at offset 3)"),
                        (b"x" * (MAX_SPEC_BYTES + 1), f"over the limit of {MAX_SPEC_BYTES} bytes"),
                        ("é" * (MAX_SPEC_BYTES // 2 + 1), "over the limit"), ("\ud800", "not UTF-8")):
        with pytest.raises(UserError) as error:
            validate_spec_text(data, "notes.md")
        assert str(error.value).startswith("notes.md: ") and words in str(error.value)
        assert "\n" not in str(error.value)
    assert validate_spec_text(b"x" * MAX_SPEC_BYTES, "big.md")  # exactly the limit is fine
    assert intake.MAX_SPEC_BYTES is text.MAX_SPEC_BYTES  # one limit for files and Telegram


def test_read_spec_file_uses_the_same_rule(tmp_path):
    path = tmp_path / "bin.md"
    path.write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match=f"^{path}: looks binary"):
        intake.read_spec_file(path)


# -- small helpers ---------------------------------------------------------------------------


def test_file_base_url_from_base_url():
    assert file_base_url("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert file_base_url("http://127.0.0.1:8081/bot") == "http://127.0.0.1:8081/file/bot"
    assert file_base_url("https://x.example/tg/bot{token}") == "https://x.example/tg/file/bot{token}"
    assert file_base_url("https://x.example/api/") == "https://x.example/api/file/bot"


def test_which_documents_are_specs_and_the_submit_body():
    assert is_text_document("spec.md", "application/octet-stream")
    assert is_text_document("SPEC.MARKDOWN", None) and is_text_document("notes.TXT", None)
    assert is_text_document("no-suffix", "text/plain") and is_text_document(None, "text/markdown")
    assert not is_text_document("photo.png", "image/png") and not is_text_document(None, None)
    assert command_body("/submit") == ""
    assert command_body("/submit@iwo_test_bot  # Title\n\nline two\n") == "# Title\n\nline two"
    assert command_body("/submit\n# Title\nbody") == "# Title\nbody"


# -- send_event, against a stub bot and store --------------------------------------------------


class StubBot:
    def __init__(self, failing_chats=()):
        self.sent: list[tuple[int, str]] = []
        self.failing = set(failing_chats)
        self.next_id = 100

    async def send_message(self, chat_id, text, reply_markup=None):
        if chat_id in self.failing:
            raise RuntimeError("Forbidden: bot was blocked by the user")
        assert units(text) <= TELEGRAM_LIMIT
        self.next_id += 1
        self.sent.append((chat_id, text))
        return SimpleNamespace(message_id=self.next_id)


class StubStore:
    def __init__(self):
        self.writes: list[tuple] = []

    async def run(self, op):
        result = None
        while True:
            try:
                request = op.send(result)
            except StopIteration as done:
                return done.value
            assert isinstance(request, Write)
            self.writes.append(request.params)
            result = 1


def notifier(chats=(1001, 1002), failing=(), **telegram_keys):
    config = SimpleNamespace(telegram=SimpleNamespace(allowed_chat_ids=chats, allowed_user_ids=(),
                                                      token_env="IWO_TELEGRAM_TOKEN", **telegram_keys))
    bot = StubBot(failing)
    tg = telegram.TelegramNotifier(config, "123:SECRET", StubStore(), actions=None)
    tg.app = SimpleNamespace(bot=bot)
    tg.ready.set()
    return tg, bot


def test_send_event_sends_each_chat_once_and_records_it():
    tg, bot = notifier()
    refs = asyncio.run(tg.send_event(event("done")))
    assert refs == ["1001:101", "1002:102"] and [chat for chat, _ in bot.sent] == [1001, 1002]
    assert "iwo-lite — done: Add a greeting" in bot.sent[0][1]
    assert [(w[0], w[1], w[2], w[3]) for w in tg.store.writes] == [("telegram", "1001:101", None, "done"),
                                                                   ("telegram", "1002:102", None, "done")]


def test_telegram_notify_chooses_the_kinds():
    assert DEFAULT_NOTIFY == ("done", "failed", "rejected", "paused")
    tg, bot = notifier()  # no telegram.notify key yet: the default, every kind
    for kind in DEFAULT_NOTIFY:
        assert asyncio.run(tg.send_event(event(kind)))
    tg, bot = notifier(notify=("failed",))
    assert asyncio.run(tg.send_event(event("done"))) == []
    assert asyncio.run(tg.send_event(event("failed", error="x"))) == ["1001:101", "1002:102"]
    tg, bot = notifier(notify=())
    assert asyncio.run(tg.send_event(event("paused"))) == [] and bot.sent == []


def test_send_event_never_raises_and_names_the_failing_chat(caplog):
    tg, bot = notifier(failing=(1001,))
    with caplog.at_level(logging.WARNING, logger="iwo_lite.telegram"):
        refs = asyncio.run(tg.send_event(event("rejected")))
    assert refs == ["1002:101"]
    assert "chat 1001" in caplog.text and "SECRET" not in caplog.text
    tg, bot = notifier()
    tg.ready.clear()  # the bot is not connected (Telegram down): nothing sent, nothing raised
    assert asyncio.run(tg.send_event(event("done"))) == []
    tg, bot = notifier()
    tg.store = None  # even a broken store only costs the record
    assert asyncio.run(tg.send_event(event("done"))) == ["1001:101", "1002:102"]


def test_a_10000_character_error_event_is_cut_to_fit():
    tg, bot = notifier(chats=(1001,))
    asyncio.run(tg.send_event(event("failed", title="t" * 5000, error="e" * 10000)))
    assert units(bot.sent[0][1]) <= TELEGRAM_LIMIT
