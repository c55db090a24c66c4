"""Numbers from outside, and JSON that is always JSON.

Owns what an agent's reported numbers must be to be believed: a cost is a finite number >= 0
and at most MAX_CALL_USD for one call; a token (or turn) count an integral number >= 0 and at
most MAX_CALL_TOKENS. Anything else (NaN, infinite, negative, absurd, a string, a bool, an
object) is unknown: the caller records 0 in every sum and a note saying what was reported.
And `json_text`: every JSON iwo-lite writes (files, rows, `status --json`) goes through it, so a
non-finite float (from an old row, say) becomes null instead of `NaN`/`Infinity`, which are not
JSON. Standard library only.
"""

from __future__ import annotations

import json
import math

MAX_CALL_USD = 1000.0  # a cost above this for one agent call is not believed (recorded as unknown)
MAX_CALL_TOKENS = 10**9  # a token count above this for one call is not believed


def checked_cost(value: object, *, missing_ok: bool = False) -> tuple[float | None, str | None]:
    """(the cost in USD, None) when `value` is believable; else (None, a note saying what was
    reported). Missing (None): (0.0, None) with `missing_ok` (an agent that reports no cost)."""
    if value is None and missing_ok:
        return 0.0, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (isinstance(value, int) or math.isfinite(value)) and 0 <= value <= MAX_CALL_USD:
            return float(value), None
        shown = repr(value) if isinstance(value, float) else str(value)
        why = ("not a finite number" if isinstance(value, float) and not math.isfinite(value) else "negative"
               if value < 0 else f"over the ceiling of ${MAX_CALL_USD:g} per call")
    else:
        shown = repr(value) if isinstance(value, str) else json_text(value, default=str)
        why = "not a number"
    shown = "".join(ch if ch.isprintable() else "?" for ch in shown)
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return None, f"the agent reported cost {shown} ({why}): recorded as unknown, not counted"


def checked_count(value: object) -> int | None:
    """A token or turn count when `value` is believable, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value <= MAX_CALL_TOKENS else None


def finite(data: object) -> object:
    """`data` with every non-finite float (NaN, ±inf) replaced by None, at any depth."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data


def json_text(data: object, **options) -> str:
    """json.dumps that never writes NaN or Infinity (they become null): always valid JSON. The copy
    without them is made only when there is one (at 100,000 specs the copy alone took 0.5 s)."""
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(data), allow_nan=False, **options)
