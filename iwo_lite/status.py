"""`iwo-lite status`: read-only SQL over the database, shown as rich tables or JSON.

Owns: the spec table, one spec's step-by-step trace, `--json`, `--sql` (any read-only query)
and `--watch`, over the store's read-only face (the SQLite file opened with `mode=ro` and a
busy timeout; on Postgres every query alone in a READ ONLY transaction). This module never
imports DBOS, so it answers fast whether the daemon runs or not. Every function takes the
`database_url`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from iwo_lite import store
from iwo_lite.errors import UserError, first_line
from iwo_lite.store import gates as gate_rows
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.text import clean
from iwo_lite.times import parse_utc

TABLE_LIMIT = 50


def _safe(value: object) -> str:
    """A database value made safe to print in a rich table: no terminal escapes, no markup."""
    from rich.markup import escape

    return escape(clean("" if value is None else str(value)))


STATE_STYLE = {"queued": "cyan", "running": "yellow", "waiting": "bold magenta", "done": "green",
               "rejected": "red", "failed": "bold red", "cancelled": "dim"}


def list_specs(database_url: str, limit: int | None = None, spec_id: str | None = None) -> tuple[list[dict], int]:
    """(specs newest first, how many more there are beyond `limit`)."""
    with store.readonly(database_url) as db:
        return ([], 0) if db is None else db.run(spec_rows.listed(limit, spec_id))


def spec_trace(database_url: str, spec_id: str) -> dict:
    """One spec with its dispatches (each with its attempts) and its gates."""
    with store.readonly(database_url) as db:
        specs = db.run(spec_rows.listed(spec_id=spec_id))[0] if db is not None else []
        if not specs:
            raise UserError(f"{spec_id}: no such spec")
        steps = db.run(run_rows.steps_of(spec_id))
        attempts = db.run(run_rows.attempts_of(spec_id))
        gates = db.run(gate_rows.of_spec(spec_id))
        saved_usd, recoveries = db.run(spec_rows.saved_by_replay(spec_id))
    for step in steps:
        step["attempts"] = [a for a in attempts if a["step"] == step["step"]]
        step["cost_usd"] = round(sum(a["cost_usd"] or 0 for a in step["attempts"]), 6)
    return dict(specs[0], saved_usd=saved_usd, recoveries=recoveries, steps=steps, gates=gates)


def run_sql(database_url: str, query: str) -> tuple[list[str], list[tuple]]:
    db = store.Store.open_readonly(database_url)
    if db is None:
        raise UserError(f"status --sql: no database at {database_url[len('sqlite:///'):]}")
    conn = db.conn
    if db.dialect == "sqlite":
        conn.set_authorizer(_deny_attach)  # ATTACH and VACUUM INTO would create files elsewhere
    try:
        cursor = conn.execute(query)
        columns = [d[0] for d in cursor.description or ()]
        return columns, [tuple(row) for row in cursor.fetchall()]
    except Exception as error:
        if not _is_query_error(error):
            raise
        raise UserError(f"status --sql: {first_line(error)}")
    finally:
        conn.close()


def _is_query_error(error: Exception) -> bool:
    """A mistake in the query (SQLite's or Postgres's), as opposed to a broken connection."""
    if isinstance(error, sqlite3.Error):
        return True
    kind = type(error)
    return kind.__module__.startswith("psycopg") and kind.__name__ not in ("OperationalError", "InterfaceError")


def _deny_attach(action: int, *_: object) -> int:
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


# -- rendering -----------------------------------------------------------------------------


def ago(iso: str | None, now: float | None = None) -> str:
    if not iso:
        return ""
    seconds = max(0, int((now or time.time()) - parse_utc(iso)))
    return _span(seconds) + " ago"


def left(iso: str | None, now: float | None = None) -> str:
    if not iso:
        return ""
    seconds = int(parse_utc(iso) - (now or time.time()))
    return "due now" if seconds <= 0 else _span(seconds) + " left"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def specs_table(specs: list[dict], more: int) -> Any:
    """The spec table. Short columns keep their full width; title and question take what is left."""
    from rich import box
    from rich.table import Table

    now = time.time()
    rows = []
    for spec in specs:
        state = spec["state"]
        detail = ""
        if state == "waiting":
            detail = f"{spec['question'] or ''} ({left(spec['deadline'], now)})"
        elif state == "failed":
            detail = spec["error"] or ""
        rows.append([spec["id"], spec["title"], state, spec["role"] or "",
                     f"{spec['step']:02d}" if spec["step"] else "", detail[:200], ago(spec["updated_at"], now),
                     str(spec["dispatches"]), f"{spec['cost_usd']:.4f}"])
    headers = ("id", "title", "state", "role", "NN", "waiting on / error", "advanced", "calls", "$")
    table = Table(title="iwo-lite specs", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, expand=True,
                  caption=f"{more} older spec(s) not shown: --all shows them" if more else None)
    for index, header in enumerate(headers):
        stretchy = header in ("title", "waiting on / error")
        widest = max([len(header)] + [len(row[index]) for row in rows])
        table.add_column(header, no_wrap=True, overflow="ellipsis", ratio=1 if stretchy else None,
                         min_width=None if stretchy else widest,
                         justify="right" if header in ("NN", "calls", "$") else "left")
    for row in rows:
        row = [_safe(cell) for cell in row]
        row[2] = f"[{STATE_STYLE.get(row[2], '')}]{row[2]}[/]"
        table.add_row(*row)
    return table


def trace_view(trace: dict) -> Any:
    from rich.console import Group
    from rich.table import Table

    head = (f"[bold]{_safe(trace['id'])}[/] — {_safe(trace['title'])}\nstate [{STATE_STYLE.get(trace['state'], '')}]"
            f"{trace['state']}[/], role {trace['role'] or '-'}, step {trace['step']:02d}, "
            f"{trace['dispatches']} dispatch(es), ${trace['cost_usd']:.4f}")
    if trace["recoveries"]:
        head += (f"\nrecovered {trace['recoveries']} time(s); saved by replay ${trace['saved_usd']:.4f} "
                 "(calls returned from the checkpoint or re-attached, not paid again)")
    if trace["error"]:
        head += f"\n[red]error: {_safe(trace['error'])}[/]"
    if trace.get("parent_id"):
        head += f"\nforked from {trace['parent_id']}"
    steps = Table(title="dispatches")
    for column in ("NN", "role", "attempt", "started", "took", "verdict", "$", "handoff / note"):
        steps.add_column(column, overflow="fold")
    for step in trace["steps"]:
        for attempt in step["attempts"] or [None]:
            took = ""
            if attempt and attempt["finished_at"]:
                took = f"{parse_utc(attempt['finished_at']) - parse_utc(attempt['started_at']):.1f}s"
            note = (attempt or {}).get("error") or ""
            if attempt and attempt["reattached"]:
                note = ("re-attached after restart; " + note).rstrip("; ")
            if step["handoff"] and (attempt is None or attempt["attempt"] == len(step["attempts"])):
                note = (note + "\n" if note else "") + "specs/" + step["handoff"].rsplit("/specs/", 1)[-1]
            steps.add_row(*map(_safe, (
                f"{step['step']:02d}", step["role"], str(attempt["attempt"]) if attempt else "-",
                ((attempt or step)["started_at"] or "")[11:19], took, (attempt or {}).get("verdict") or step["verdict"] or "",
                f"{(attempt or {}).get('cost_usd') or 0:.4f}", note[:200],
            )))
    parts: list[Any] = [head, steps]
    if trace["gates"]:
        gates = Table(title="human gates")
        for column in ("gate", "role", "reason", "question", "deadline", "answer", "by / via"):
            gates.add_column(column, overflow="fold")
        for gate in trace["gates"]:
            answer = gate["answer"] or "(waiting)"
            if gate["note"]:
                answer += f": {gate['note']}"
            gates.add_row(*map(_safe, (gate["id"], gate["role"], gate["reason"], gate["question"], gate["deadline"],
                                       answer, f"{gate['answered_by'] or ''} / {gate['answered_via'] or ''}".strip(" /"))))
        parts.append(gates)
    return Group(*parts)


def show(database_url: str, *, spec_id: str | None, show_all: bool, as_json: bool, sql: str | None,
         watch: bool) -> None:
    from rich.console import Console

    console = Console()
    if sql is not None:
        columns, rows = run_sql(database_url, sql)
        if as_json:
            print(json.dumps([dict(zip(columns, row)) for row in rows], indent=2, default=str))
        else:
            from rich.table import Table

            table = Table(*columns)
            for row in rows:
                table.add_row(*map(_safe, row))
            console.print(table)
        return
    if as_json:
        data = [spec_trace(database_url, spec_id)] if spec_id else list_specs(database_url)[0]
        print(json.dumps(data, indent=2))
        return

    def view() -> Any:
        if spec_id:
            return trace_view(spec_trace(database_url, spec_id))
        return specs_table(*list_specs(database_url, None if show_all else TABLE_LIMIT))

    if not watch:
        console.print(view())
        return
    from rich.live import Live

    with Live(view(), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(1)
                live.update(view())
        except KeyboardInterrupt:
            pass
