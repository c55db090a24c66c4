"""Timestamps as iwo-lite stores them (ISO 8601 UTC text with milliseconds, which sorts as text),
and how long ago / how long left as a person reads them ("3m ago", "2h left") — the one place
`status`, Telegram and the web page take these texts from."""

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


def span(seconds: float) -> str:
    """A duration in its largest whole unit: "2d", "5h", "3m", "40s"."""
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return parse_utc(iso)
    except (TypeError, ValueError):
        return None


def ago(iso: str | None, now: float | None = None) -> str:
    """"3m ago" ("" when there is no such time)."""
    import time

    moment = _epoch(iso)
    return "" if moment is None else span(max(0.0, (time.time() if now is None else now) - moment)) + " ago"


def left(iso: str | None, now: float | None = None) -> str:
    """"2h left", or "due now" once it has passed ("" when there is no such time)."""
    import time

    moment = _epoch(iso)
    if moment is None:
        return ""
    now = time.time() if now is None else now
    return "due now" if moment <= now else span(moment - now) + " left"
