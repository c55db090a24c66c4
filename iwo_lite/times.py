"""Timestamps as iwo-lite stores them: ISO 8601 UTC text with milliseconds, which sorts as text."""

from __future__ import annotations

import datetime as _dt


def utc_now() -> str:
    """Now, e.g. 2026-11-21T23:50:01.123Z."""
    return iso_utc(_dt.datetime.now(_dt.timezone.utc).timestamp())


def iso_utc(epoch_seconds: float) -> str:
    moment = _dt.datetime.fromtimestamp(epoch_seconds, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> float:
    """The epoch seconds of a timestamp written by utc_now/iso_utc."""
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc).timestamp()
