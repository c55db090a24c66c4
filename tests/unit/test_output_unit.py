"""The output boundary at the unit level: whatever a caller hands rich's Console (a table, a Text, a
FastTable, markup around data it forgot to escape), the text that reaches the terminal carries no
control or bidi character of its own; rich's colours and Live's cursor codes still do their work.

The process-level half (every command, a closed pipe, --watch into a pipe) is tests/test_output.py.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.live import Live
from rich.table import Table
from rich.text import Text

from iwo_lite import output
from iwo_lite.tables import FastTable

pytestmark = pytest.mark.unit

HOSTILE = "\x1b[2J\x1b[31mred\u202eevil\x9b6n\x07\u2066x\u200f"
# what rich itself may write: SGR colours, cursor moves and erases of its own (Live)
RICH_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def printed(terminal: bool, *renderables, **kwargs) -> str:
    console = output.console()
    console.file = io.StringIO()
    if terminal:
        console._force_terminal = True
        console._color_system = console._detect_color_system()
    for renderable in renderables:
        console.print(renderable, **kwargs)
    return console.file.getvalue()


def renderables():
    table = Table(f"head {HOSTILE}")
    table.add_row(Text(f"cell {HOSTILE}"))
    return [table, Text(f"text {HOSTILE}", style="bold"), f"[red]markup {HOSTILE}[/]",
            FastTable(f"title {HOSTILE}", ("h",), [[f"fast {HOSTILE}"]])]


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_nothing_the_console_prints_from_data_drives_the_terminal(terminal):
    out = printed(terminal, *renderables())
    assert "\x1b[2J" not in out and "\x1b[31mred" not in out
    leftover = output.UNSAFE.findall(RICH_CODES.sub("", out))
    assert not leftover, f"{leftover!r} in {out!r}"
    for word in ("head", "cell", "text", "markup", "title", "fast", "redevil6nx"):
        assert word in RICH_CODES.sub("", out)
    if terminal:  # rich's own colours survive the filter
        assert RICH_CODES.search(out)


def test_a_pipe_gets_no_escape_at_all():
    assert "\x1b" not in printed(False, *renderables())


def test_live_redraws_keep_their_cursor_codes_and_lose_the_datas():
    console = output.console()
    console.file = io.StringIO()
    console._force_terminal = True
    console.is_interactive = True  # what a terminal that is not TERM=dumb gets
    with Live(Text("first line"), console=console, auto_refresh=False) as live:
        live.update(Text(f"second {HOSTILE}"), refresh=True)
        live.update(Text("third"), refresh=True)
    out = console.file.getvalue()
    assert "\x1b[2J" not in out and "\u202e" not in out and "second" in out
    assert "\x1b[?25l" in out and "\x1b[2K" in out  # Live's own codes: cursor hidden, lines erased
    assert not output.UNSAFE.findall(RICH_CODES.sub("", out).replace("\r", ""))  # Live's own carriage returns
