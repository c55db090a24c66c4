"""A table for the terminal that costs little to draw: `status`'s spec table.

Owns laying out columns of plain text in the width the console offers: short columns keep
their full width, the stretchy ones share what is left (cut with "…"), a title, a header with a
rule under it, and a caption — the look of rich's SIMPLE_HEAD table at a small part of its cost
(rich measures every cell of every column several times: 80 ms of a 120 ms `status` at 10,000
specs). It is a rich renderable, so `console.print` and `Live` draw it, in colour on a terminal
and plain in a pipe. Cells must already be safe text (text.clean): nothing here is markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAP = "  "


@dataclass
class FastTable:
    title: str
    headers: tuple[str, ...]
    rows: list[list[str]]
    stretchy: tuple[int, ...] = ()  # columns that share the width left over (by index)
    right: tuple[int, ...] = ()  # right-justified columns
    styles: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> rich style
    caption: str | None = None

    def widths(self, room: int | None) -> list[int]:
        """Each column's width: its widest cell; with `room`, the stretchy ones cut to fit it."""
        natural = [max([len(h)] + [len(row[i]) for row in self.rows]) for i, h in enumerate(self.headers)]
        if room is None or not self.stretchy:
            return natural
        fixed = sum(w for i, w in enumerate(natural) if i not in self.stretchy) + len(GAP) * (len(natural) - 1)
        left = max(room - fixed, len(self.stretchy) * 8)
        wanted = sum(natural[i] for i in self.stretchy)
        if wanted <= left:
            return natural
        share, widths = left // len(self.stretchy), list(natural)
        small = [i for i in self.stretchy if natural[i] <= share]
        spare = left - sum(natural[i] for i in small)
        big = [i for i in self.stretchy if i not in small]
        for n, i in enumerate(big):
            widths[i] = spare // len(big) + (1 if n < spare % len(big) else 0)
        return widths

    def lines(self, room: int | None) -> list[tuple[str, list[tuple[int, int, str]]]]:
        """The table as lines of text, each with its styled spans (start, end, style)."""
        widths = self.widths(room)
        total = sum(widths) + len(GAP) * (len(widths) - 1)

        def cells(values: list[str], row: int | None) -> tuple[str, list]:
            parts, spans, at = [], [], 0
            for i, (value, width) in enumerate(zip(values, widths)):
                text = value if len(value) <= width else value[:max(width - 1, 0)] + "…"
                text = text.rjust(width) if i in self.right else text.ljust(width)
                style = self.styles.get((row, i)) if row is not None else "bold"
                if style:
                    spans.append((at, at + len(text), style))
                parts.append(text)
                at += len(text) + len(GAP)
            return GAP.join(parts).rstrip(), spans

        out = [(self.title.center(total).rstrip(), [(0, total, "italic")]), cells(list(self.headers), None),
               ("─" * total, [])]
        out += [cells(row, index) for index, row in enumerate(self.rows)]
        if self.caption:
            out.append((self.caption.center(total).rstrip(), [(0, total, "dim")]))
        return out

    def __rich_console__(self, console, options):
        from rich.text import Text

        for line, spans in self.lines(options.max_width):
            text = Text(line, no_wrap=True, overflow="ellipsis", end="\n")
            for start, end, style in spans:
                text.stylize(style, start, end)
            yield text
