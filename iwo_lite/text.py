"""Text from agents and users made safe to store, print and send: no control characters, bounded length."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Control characters (terminal escapes) dropped."""
    return _CONTROL.sub("", text)


def clip(text: str, limit: int = 300) -> str:
    """One line: whitespace folded, control characters dropped, cut at `limit` characters."""
    flat = " ".join(clean(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
