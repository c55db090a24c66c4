"""Checking config values: one checker per kind of value, each turning a raw TOML value into a clean one.

Owns what a valid value of each kind is (a duration like `45m`, an argv array, a list of
ids, an environment variable's name, an http URL, one of a few words, an integer in a range)
and the one-line message saying what was expected and what was got. A checker raises `Bad`;
config.py adds the file and the dotted key. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Bad(ValueError):
    """Raised by a checker; config.py turns it into a ConfigError naming file and key.

    ``suffix`` extends the key (``[2]`` for a list item)."""

    def __init__(self, message: str, suffix: str = ""):
        super().__init__(message)
        self.suffix = suffix



_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_HELP = "expected a duration like 90s, 45m, 24h or 2d"


def parse_duration(text: str, *, allow_empty: bool = False) -> float | None:
    """Parse ``"90s"``, ``"45m"``, ``"24h"``, ``"2d"`` (also ``"1.5s"``) into seconds.

    ``""`` gives None when ``allow_empty`` (e.g. ``remind_every = ""`` means never).
    Anything else, including zero and negative durations, raises ValueError with a
    message that can follow ``"<file>: <key>: "``. Integer seconds straight from TOML are
    the caller's business (see :func:`load_config`).
    """
    if not isinstance(text, str):
        raise ValueError(f"{_DURATION_HELP}, got {show(text)}")
    stripped = text.strip()
    if stripped == "":
        if allow_empty:
            return None
        raise ValueError(f"{_DURATION_HELP}, got an empty string")
    if stripped.startswith("-"):
        raise ValueError(f"must be greater than zero, got {show(text)}")
    match = _DURATION_RE.fullmatch(stripped)
    if match is None:
        hint = ""
        if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
            hint = f' (add a unit: "{stripped}s" for seconds)'
        elif re.fullmatch(r"\d+(?:\.\d+)?\s*[SMHD]", stripped):
            hint = f' (units are lower case: "{stripped.lower()}")'
        raise ValueError(f"{_DURATION_HELP}, got {show(text)}{hint}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {show(text)}")
    if not math.isfinite(seconds):
        raise ValueError(f"{_DURATION_HELP}, got {show(text)} (too large)")
    return seconds


# --------------------------------------------------------------------------- home

def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def show(value: Any) -> str:
    """A value as it would look in TOML, on one line, shortened."""
    if isinstance(value, dict):
        return "a table"
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def got(value: Any) -> str:
    if isinstance(value, (bool, int, float, str)):
        return f"got {show(value)} ({type_name(value)})"
    return f"got {type_name(value)}"


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad(f"expected a string, {got(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"expected true or false, {got(value)}")
    return value


def host(value: Any) -> str:
    """An address to listen on: a name or an IP address, no scheme, port or spaces."""
    if not isinstance(value, str) or not value.strip():
        raise Bad(f"expected a host name or IP address such as \"127.0.0.1\", {got(value)}")
    if any(c in value for c in " /\t\n") or value.count(":") == 1:
        raise Bad(f"expected a host name or IP address without scheme or port, got {show(value)}")
    return value


def nonempty_string(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad(f"expected a string, {got(value)}")
    if not value.strip():
        raise Bad("expected a non-empty string, got an empty string")
    return value


# The largest count a key may hold (agent.max_concurrent, agent.retries, agent.global_max_concurrent,
# loop.max_rework): far more agent processes, tries or reworks than any run needs, so a larger
# value is a slip (a timeout in seconds typed into the wrong key), and some break things: one
# iwo_agent_slots row is made per global slot at start-up, and every try may be paid for.
MAX_COUNT = 1000


def int_at_least(minimum: int, maximum: int = MAX_COUNT) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Bad(f"expected an integer >= {minimum}, {got(value)}")
        if value < minimum:
            raise Bad(f"expected an integer >= {minimum}, got {value}")
        if value > maximum:
            raise Bad(f"expected an integer from {minimum} to {maximum}, got {value}")
        return value

    return check


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    wanted = " or ".join(show(o) for o in options)

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Bad(f"expected {wanted}, {got(value)}")
        if value not in options:
            raise Bad(f"expected {wanted}, got {show(value)}")
        return value

    return check


# The longest duration a key may hold. Deadlines are computed as now + duration and written as
# ISO 8601 dates: "99999999d" passes year 9999 and every gate would fail; a year is more than
# any timeout, reminder or wait needs.
MAX_DURATION_S = 365 * 86400.0
MIN_DURATION_S = 1.0  # every duration and interval: 0.001s is a typo, not a setting


def choice_or_auto(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    """One of `options`, or "" for None: iwo-lite chooses (e.g. from what it finds)."""
    one = choice(options)

    def check(value: Any) -> str | None:
        return None if value == "" else one(value)

    return check


def duration(value: Any, *, allow_empty: bool = False) -> float | None:
    if isinstance(value, bool):
        raise Bad(f"{_DURATION_HELP}, {got(value)}")
    if isinstance(value, (int, float)):  # a bare number from TOML is seconds
        if not math.isfinite(value) or value <= 0:
            raise Bad(f"must be greater than zero, got {show(value)}")
        seconds: float | None = float(value)
    elif not isinstance(value, str):
        raise Bad(f"{_DURATION_HELP}, {got(value)}")
    else:
        try:
            seconds = parse_duration(value, allow_empty=allow_empty)
        except ValueError as exc:
            raise Bad(str(exc)) from None
    if seconds is not None and seconds > MAX_DURATION_S:
        raise Bad(f"expected at most {MAX_DURATION_S / 86400:g}d, got {show(value)}")
    if seconds is not None and seconds < MIN_DURATION_S:
        raise Bad(f"expected at least {MIN_DURATION_S:g}s (a shorter one is a typo), got {show(value)}")
    return seconds


def duration_at_least(minimum: float, why: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        seconds = duration(value)
        if seconds < minimum:
            raise Bad(f"expected at least {minimum:g}s ({why}), got {seconds:g}s")
        return seconds

    return check


def duration_or_empty(value: Any) -> float | None:
    return duration(value, allow_empty=True)


def command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Bad(f'expected an array of strings like ["claude", "-p"], {got(value)}')
    if not value:
        raise Bad("expected at least the program to run, got an empty array")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Bad(f"expected a string, {got(item)}", f"[{i}]")
        if item == "":
            raise Bad("expected a non-empty string, got an empty string", f"[{i}]")
    return tuple(value)


def command_or_empty(value: Any) -> tuple[str, ...]:
    """An argv array, or [] for "the default"."""
    return () if value == [] else command(value)


def price_table(value: Any) -> tuple[tuple[str, tuple[float, float, float]], ...]:
    """A table of model name (or prefix, or "*") -> [input, cached input, output] US dollars per
    million tokens."""
    if not isinstance(value, dict):
        raise Bad(f'expected a table like {{ "gpt-5" = [1.25, 0.125, 10.0] }}, {got(value)}')
    table = {}
    for model, prices in value.items():
        where = "." + (model if re.fullmatch(r"[A-Za-z0-9_-]+", model) else json.dumps(model))
        if not isinstance(prices, list) or len(prices) != 3:
            raise Bad(f"expected [input, cached input, output] dollars per million tokens, {got(prices)}", where)
        for i, price in enumerate(prices):
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) \
                    or not 0 <= price <= 1e6:
                raise Bad(f"expected a price from 0 to 1e6 dollars per million tokens, {got(price)}", f"{where}[{i}]")
        table[model] = tuple(float(price) for price in prices)
    return tuple(table.items())


def string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Bad(f'expected an array of strings like ["--verbose"], {got(value)}')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Bad(f"expected a string, {got(item)}", f"[{i}]")
    return tuple(value)


def path_list(value: Any) -> tuple[str, ...]:
    """Absolute paths, or paths starting with ~/ (the agent's $HOME)."""
    if not isinstance(value, list):
        raise Bad(f'expected an array of paths like ["~/.cache/pip", "/srv/data"], {got(value)}')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Bad(f"expected a path, {got(item)}", f"[{i}]")
        if not (item.startswith("/") or item == "~" or item.startswith("~/")):
            raise Bad(f"expected an absolute path or one starting with ~/, got {show(item)}", f"[{i}]")
    return tuple(item.rstrip("/") or "/" for item in value)


def int_list(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise Bad(f"expected an array of integer ids like [123456789], {got(value)}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise Bad(f"expected an integer id, {got(item)}", f"[{i}]")
    return tuple(value)


def env_name(value: Any) -> str:
    # Never echo the value: a user may have pasted the token itself here.
    if not isinstance(value, str):
        raise Bad(f"expected the name of an environment variable, got {type_name(value)}")
    if ":" in value:
        raise Bad("expected the NAME of an environment variable (like IWO_TELEGRAM_TOKEN), "
                   "not the token itself; put the token in that variable")
    if not _ENV_NAME.fullmatch(value):
        raise Bad("expected the name of an environment variable (letters, digits and _, like IWO_TELEGRAM_TOKEN)")
    return value


def http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad(f"expected an http:// or https:// URL, {got(value)}")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise Bad(f"expected an http:// or https:// URL, got {show(redact_url(value))}")
    return value


def redact_url(url: str) -> str:
    """Replace the password in ``scheme://user:password@host`` with ``***``."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)


_SIZE_UNITS = {"": 1, "b": 1, "kib": 2**10, "kb": 10**3, "mib": 2**20, "mb": 10**6, "gib": 2**30, "gb": 10**9}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def size(value: Any) -> int:
    """Bytes: an integer, or a string like "20MiB", "500KiB", "1GB"."""
    if isinstance(value, bool):
        raise Bad(f"expected a size like 20MiB or a number of bytes, {got(value)}")
    if isinstance(value, int):
        if value <= 0:
            raise Bad(f"must be greater than zero, got {value}")
        return value
    match = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise Bad(f"expected a size like 20MiB or a number of bytes, {got(value)}")
    number = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if number <= 0:
        raise Bad(f"must be greater than zero, got {show(value)}")
    return number


def size_between(minimum: int, maximum: int) -> Callable[[Any], int]:
    """A size (as `size`) within [minimum, maximum] bytes."""
    def check(value: Any) -> int:
        number = size(value)
        if not minimum <= number <= maximum:
            raise Bad(f"expected between {minimum // 1024}KiB and {maximum // 2**30}GiB, got {show(value)}")
        return number

    return check


def number_at_least(minimum: float, maximum: float = math.inf) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Bad(f"expected a number >= {minimum:g}, {got(value)}")
        if value < minimum:
            raise Bad(f"expected a number >= {minimum:g}, got {value}")
        if value > maximum:
            raise Bad(f"expected a number <= {maximum:g}, got {value}")
        return float(value)

    return check


def subset_of(options: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        items = string_list(value)
        for index, item in enumerate(items):
            if item not in options:
                raise Bad(f"expected some of {', '.join(options)}, got {show(item)}", f"[{index}]")
        return items

    return check


_AUTHOR = re.compile(r"[^<>\n]+ <[^<>\s]+>")


def git_author(value: Any) -> str:
    text = nonempty_string(value).strip()
    if not _AUTHOR.fullmatch(text):
        raise Bad(f'expected "Name <email>", got {show(text)}')
    return text


PLACEHOLDER = re.compile(r"\{(branch|spec_id|title)\}")  # git.done_command's
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish", "ash", "busybox"}


def template_words(template: str) -> list[str]:
    """`git.done_command` split like a POSIX shell splits it (no shell runs it): its words, with the
    placeholders still in. Bad when it cannot be split, is empty, or puts a placeholder inside a
    shell's `-c` script (there a title would run as shell code)."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise Bad(f"cannot be split like a shell command line ({exc}), got {show(template)}") from None
    if not words:
        raise Bad("is empty")
    if os.path.basename(words[0]) in SHELLS:
        for flag, script in zip(words[1:], words[2:]):
            if re.fullmatch(r"-[a-z]*c[a-z]*", flag) and PLACEHOLDER.search(script):
                raise Bad(f"a placeholder inside `{words[0]} {flag} '...'` would be run as shell code; use "
                          '"$IWO_BRANCH", "$IWO_SPEC_ID", "$IWO_TITLE" there')
    return words


def command_template(value: Any) -> str:
    """`git.done_command`: "" (none), or a command line template_words accepts."""
    text = string(value)
    if text.strip():
        template_words(text)
    return text
