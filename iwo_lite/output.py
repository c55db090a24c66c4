"""What reaches a person's terminal: the one boundary every command's output passes.

Owns three things, installed once by `cli.main` (`install()`):

* stdout and stderr wrapped so that nothing written through them can drive the terminal: every
  control character but newline and tab (so every escape sequence), and the bidirectional
  overrides and isolates that make text read other than it is (U+202A–202E, U+2066–2069,
  U+200E/200F, U+061C), are dropped — whatever the text came from (a spec, an agent, a handoff,
  the database, a column name, a file name in an error);
* `console()`: the rich Console for tables and colour. It writes to the real stream (its colour
  and cursor codes are its own), and every piece of text it renders passes `terminal_safe` on the
  way (`render`, the one method every print, table and Live redraw goes through), so data cannot
  drive the terminal whatever the caller forgot; `safe_markup(text)` still keeps a `[...]` in data
  from being read as markup; its width: the terminal's, or $COLUMNS; into a pipe or a file, wide enough that nothing is cut
  (rich alone cuts at 80 columns);
* a closed pipe (`iwo-lite status --all | head -1`): `quiet_broken_pipe()` points stdout at
  /dev/null so the command ends quietly with status 0, not with a traceback.
"""

from __future__ import annotations

import io
import os
import re
import sys

# C0 and C1 controls but \t and \n; DEL; the bidi controls (LRM, RLM, ALM, embeddings, overrides, isolates)
UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
PIPE_WIDTH = 4096


def terminal_safe(text: str) -> str:
    """`text` with every control character (but newline and tab) and bidi control removed."""
    return UNSAFE.sub("", text)


class SafeStream(io.TextIOBase):
    """A text stream that passes everything written through `terminal_safe` to the stream below."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(terminal_safe(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self):
        return getattr(self.raw, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self.raw, "errors", "strict")

    def writable(self) -> bool:
        return True


def install() -> None:
    """Wrap sys.stdout and sys.stderr (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SafeStream):
            setattr(sys, name, SafeStream(stream))


def raw_stdout():
    out = sys.stdout
    return out.raw if isinstance(out, SafeStream) else out


def console():
    """The rich Console for a command's output (see the module's docstring)."""
    from rich.console import Console

    from rich.segment import Segment

    class QuietConsole(Console):
        def render(self, renderable, options=None):
            # rich's own codes travel as control segments or as styles (made into escapes later,
            # when the buffer is written); a text segment holds only what the data said
            for segment in super().render(renderable, options):
                if segment.control or not UNSAFE.search(segment.text):
                    yield segment
                else:
                    yield Segment(terminal_safe(segment.text), segment.style, segment.control)

        def on_broken_pipe(self) -> None:  # rich's own exits 1; a closed pipe is no failure
            quiet_broken_pipe()
            raise BrokenPipeError

    out = raw_stdout()
    if out.isatty() or os.environ.get("COLUMNS"):
        return QuietConsole(file=out)
    return QuietConsole(file=out, width=PIPE_WIDTH)


def safe_markup(text: str) -> str:
    """Data to put inside a line of rich markup: terminal-safe, and its `[...]` not read as markup."""
    from rich.markup import escape

    return escape(terminal_safe(text))


def quiet_broken_pipe() -> None:
    """The reader of our stdout went away: the rest of the output goes nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, raw_stdout().fileno())
    except (OSError, ValueError):
        pass


def command_name() -> str:
    """How to run this iwo-lite again, as a person would type it here: `iwo-lite` when that is on
    PATH, else the path it was started by (`.venv/bin/iwo-lite`, the zipapp), else
    `python -m iwo_lite` with this interpreter."""
    import shlex
    import shutil

    arg0 = sys.argv[0] if sys.argv else ""
    base = os.path.basename(arg0)
    if not arg0 or base in ("__main__.py", "-c") or base.endswith(".py") and base != "iwo-lite.py":
        return f"{shlex.quote(sys.executable)} -m iwo_lite"
    found = shutil.which(base)
    if found and os.path.realpath(found) == os.path.realpath(arg0):
        return base
    if os.access(arg0, os.X_OK):
        return shlex.quote(os.path.abspath(arg0))
    return f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(arg0))}"
