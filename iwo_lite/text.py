"""Text from agents and users made safe to store, print and send: no control characters, bounded length.

Also what a spec's text must be (`validate_spec_text`, MAX_SPEC_BYTES), here at the bottom layer so
that every way in (intake.py for files and the inbox, notify/ for Telegram) checks it with one rule.
"""

from __future__ import annotations

import re

from iwo_lite.errors import UserError

# C0/C1 controls but \t and \n, and the bidi controls that make text read other than it is
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A lone UTF-16 surrogate: valid in JSON ("\ud800", what Node prints for a string cut in the middle
# of an emoji) but not encodable as UTF-8, so it would fail every write of the text (a file, SQLite).
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean(text: str) -> str:
    """Control characters (terminal escapes) and bidi controls dropped; lone surrogates replaced with U+FFFD."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def clip(text: str, limit: int = 300) -> str:
    """One line: whitespace folded, control characters dropped, cut at `limit` characters."""
    flat = " ".join(clean(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


# -- a spec's text, wherever it comes from (a file, the inbox, a Telegram message or document) ----

MAX_SPEC_BYTES = 1024 * 1024


def validate_spec_text(text: str | bytes, source: str) -> str:
    """The spec's text when it is one: not empty, at most MAX_SPEC_BYTES of UTF-8, no NUL.

    `text` may be the raw bytes (a file, a download): then it must decode as UTF-8. Anything
    else raises UserError with one line that starts with `source` (a path, a file name, "/submit").
    """
    if isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as error:  # lone surrogates: not text any UTF-8 file could hold
            raise UserError(f"{source}: not UTF-8 text (bad character at offset {error.start})")
    else:
        data = bytes(text)
    if len(data) > MAX_SPEC_BYTES:
        raise UserError(f"{source}: spec is over the limit of {MAX_SPEC_BYTES} bytes")
    if b"\x00" in data:
        raise UserError(f"{source}: looks binary (contains NUL bytes); a spec is a text file")
    if not isinstance(text, str):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{source}: not UTF-8 text (bad byte at offset {error.start})")
    if not text.strip():
        raise UserError(f"{source}: spec is empty")
    return text
