"""`iwo-lite status`: read-only SQL over the database, shown as rich tables or JSON.

Owns: the spec table, one spec's step-by-step trace, `--json`, `--sql` (any read-only query)
and `--watch`, over the store's read-only face (the SQLite file opened with `mode=ro` and a
busy timeout; on Postgres every query alone in a READ ONLY transaction). This module never
imports DBOS, so it answers fast whether the daemon runs or not. Every function takes the
`database_url`.
"""

from __future__ import annotations

import time
from typing import Any

from iwo_lite import store
from iwo_lite.errors import UserError
from iwo_lite.numbers import json_text
from iwo_lite.store import gates as gate_rows
from iwo_lite.store.query import run_sql  # `status --sql` (re-exported)
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.text import clean
from iwo_lite.texts import detail_text, money_text, progress_text
from iwo_lite.times import ago, parse_utc

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


def spec_trace(database_url: str, spec_id: str, tools=None) -> dict:
    """One spec with its dispatches (each with its attempts) and its gates; with `tools` (attempt ->
    views.tool_counts), each attempt's tool calls counted: how many, which failed, which were denied."""
    with store.readonly(database_url) as db:
        specs = db.run(spec_rows.listed(spec_id=spec_id))[0] if db is not None else []
        if not specs:
            raise UserError(f"{spec_id}: no such spec")
        steps = db.run(run_rows.steps_of(spec_id))
        attempts = db.run(run_rows.attempts_of(spec_id))
        gates = db.run(gate_rows.of_spec(spec_id))
        saved_usd, recoveries = db.run(spec_rows.saved_by_replay(spec_id))
    for attempt in attempts:
        if attempt.get("cost_note"):
            attempt["cost_usd"] = None  # unknown: the agent reported no believable cost
        if tools is not None:
            attempt["tools"] = tools(attempt)
    for step in steps:
        step["attempts"] = [a for a in attempts if a["step"] == step["step"]]
        step["cost_usd"] = round(sum(a["cost_usd"] or 0 for a in step["attempts"]), 6)
        # the agent kind that ran the dispatch (its last attempt's; None before it started, or in a
        # home older than the per-role agents)
        step["agent"] = next((a["agent"] for a in reversed(step["attempts"]) if a.get("agent")), None)
    return dict(specs[0], saved_usd=saved_usd, recoveries=recoveries, steps=steps, gates=gates)


# -- rendering -----------------------------------------------------------------------------


def specs_table(specs: list[dict], more: int) -> Any:
    """The spec table. Short columns keep their full width; title and detail take what is left."""
    from iwo_lite.tables import FastTable

    now = time.time()
    rows, styles = [], {}
    for index, spec in enumerate(specs):
        rows.append([clean("" if cell is None else str(cell)) for cell in (
            spec["id"], spec["title"], spec["state"], spec["role"] or "",
            f"{spec['step']:02d}" if spec["step"] else "", detail_text(spec, now)[:200],
            ago(spec["updated_at"], now), str(spec["dispatches"]), money_text(spec))])
        styles[(index, 2)] = STATE_STYLE.get(spec["state"], "")
    headers = ("id", "title", "state", "role", "NN", "doing / waiting on / error", "advanced", "calls", "$")
    return FastTable("iwo-lite specs", headers, rows, stretchy=(1, 5), right=(4, 7, 8), styles=styles,
                     caption=f"{more} older spec(s) not shown: --all shows them" if more else None)


def _attempt_note(step: dict, attempt: dict | None) -> str:
    """What happened to one attempt, for the trace: re-attached, resumed, stalled, denied tools, commit."""
    notes = []
    if attempt:
        if attempt["reattached"]:
            vanished = attempt.get("error_class") in ("interrupted",) or (attempt.get("error") or "").startswith(
                "agent process vanished")
            notes.append("collected after restart" if vanished else "re-attached after restart")
        if attempt.get("resumed_from"):
            notes.append(f"resumed session {attempt['resumed_from'][:8]}")
        if attempt.get("note") and not attempt["note"].startswith("resumed session"):
            notes.append(attempt["note"])
        if attempt.get("cost_note"):
            notes.append(attempt["cost_note"])
        if attempt.get("error"):
            notes.append(attempt["error"])  # says "stalled", "permission denied: ..." itself
        if attempt.get("denials") and "permission denied" not in (attempt.get("error") or ""):
            notes.append("denied: " + ", ".join(f"{d.get('tool')}({d.get('input', '')})" for d in attempt["denials"]))
        notes.extend(_tools_note(attempt.get("tools")))
        if attempt.get("finished_at") is None and attempt.get("progress"):
            notes.append(progress_text(attempt["progress"]))
    last = attempt is None or attempt["attempt"] == len(step["attempts"])
    if last and step.get("commit_sha"):
        notes.append(f"commit {step['commit_sha'][:8]}")
    if last and step["handoff"]:
        notes.append("specs/" + step["handoff"].rsplit("/specs/", 1)[-1])
    return "; ".join(notes)


def _tools_note(tools: dict | None) -> list[str]:
    """`5 tool calls, 2 FAILED (Write, Write), 1 denied (Bash(rm -rf x))`: a failed tool is never progress."""
    if not tools or not tools["calls"]:
        return []
    note = f"{tools['calls']} tool call(s)"
    if tools["failed"]:
        note += f", {tools['failed']} FAILED ({', '.join(tools['failed_tools'][:5])})"
    if tools["denied"]:
        note += f", {tools['denied']} denied ({', '.join(tools['denied_tools'][:3])})"
    return [note]


def trace_view(trace: dict) -> Any:
    from rich.console import Group
    from rich.table import Table

    head = (f"[bold]{_safe(trace['id'])}[/] — {_safe(trace['title'])}\nstate [{STATE_STYLE.get(trace['state'], '')}]"
            f"{trace['state']}[/], role {trace['role'] or '-'}, step {trace['step']:02d}, "
            f"{trace['dispatches']} dispatch(es), ${money_text(trace)}")
    if trace.get("branch"):
        head += f"\nbranch {_safe(trace['branch'])}" + (f" at {trace['head'][:8]}" if trace.get("head") else "")
    if trace.get("paused_until"):
        head += f"\n[yellow]paused ({trace['pause_reason']}) until {trace['paused_until']}[/]"
    elif trace["state"] == "running" and trace.get("progress"):
        head += f"\nnow: {_safe(progress_text(trace['progress']))}"
    if trace["recoveries"]:
        head += (f"\nrecovered {trace['recoveries']} time(s); saved by replay ${trace['saved_usd']:.4f} "
                 "(calls returned from the checkpoint or re-attached, not paid again)")
    if trace["error"]:
        head += f"\n[red]error: {_safe(trace['error'])}[/]"
    if trace.get("parent_id"):
        head += f"\nforked from {trace['parent_id']}"
    steps = Table(title="dispatches")
    for column in ("NN", "role", "agent", "attempt", "started", "took", "verdict", "$", "notes"):
        steps.add_column(column, overflow="fold")
    for step in trace["steps"]:
        for attempt in step["attempts"] or [None]:
            took = ""
            if attempt and attempt["finished_at"]:
                took = f"{parse_utc(attempt['finished_at']) - parse_utc(attempt['started_at']):.1f}s"
            steps.add_row(*map(_safe, (
                f"{step['step']:02d}", step["role"], ((attempt or {}).get("agent") or step.get("agent") or "-"),
                str(attempt["attempt"]) if attempt else "-",
                ((attempt or step)["started_at"] or "")[11:19], took,
                (attempt["verdict"] or "") if attempt else (step["verdict"] or ""),
                "?" if (attempt or {}).get("cost_note") else f"{(attempt or {}).get('cost_usd') or 0:.4f}",
                _attempt_note(step, attempt)[:300],
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


def daemon_line(database_url: str, lock_path) -> tuple[str, bool]:
    """Whether this home's daemon runs, in one line, and whether that is all right: a daemon that is
    not running while specs wait for it is the thing not to miss."""
    from iwo_lite.home import daemon_pid

    pid = daemon_pid(lock_path)
    if pid:
        return f"daemon: running (pid {pid})", True
    try:
        with store.readonly(database_url) as db:
            waiting = db.run(spec_rows.unfinished_count()) if db is not None else 0
    except Exception:  # a database that cannot be read (doctor says why on a line of its own)
        return "daemon: not running", True
    if not waiting:
        return "daemon: not running (nothing waits for it)", True
    return (f"daemon: NOT RUNNING — {waiting} unfinished spec(s) wait for it; start it with `iwo-lite run`"
            " (or `iwo-lite service install`)", False)


def mixed_options(*, spec_id: str | None, show_all: bool, as_json: bool, sql: str | None, watch: bool) -> str | None:
    """Why these `status` options cannot go together (one of them would be ignored), or None."""
    if sql is not None and (spec_id or show_all or watch):
        named = (("the spec ID", spec_id), ("--all", show_all), ("--watch", watch))
        given = " and ".join(name for name, on in named if on)
        return f"status --sql prints its query's rows once: drop {given} (it combines only with --json)"
    if watch and as_json:
        return "status --watch redraws for a person; --json prints once (run it in a loop, or read GET /api/specs)"
    if spec_id and show_all:
        return f"status {spec_id}: --all is for the table of specs, not one spec's trace"
    return None


def show(database_url: str, *, spec_id: str | None, show_all: bool, as_json: bool, sql: str | None,
         watch: bool, lock_path=None, tools=None) -> None:
    from iwo_lite import output

    refused = mixed_options(spec_id=spec_id, show_all=show_all, as_json=as_json, sql=sql, watch=watch)
    if refused:
        raise UserError(refused)
    console = output.console()
    if sql is not None:
        columns, rows = run_sql(database_url, sql)
        if as_json:
            print(json_text([dict(zip(columns, row)) for row in rows], indent=2, default=str))
        else:
            from rich.table import Table

            table = Table(*map(_safe, columns))
            for row in rows:
                table.add_row(*map(_safe, row))
            console.print(table)
        return
    if as_json:
        data = [spec_trace(database_url, spec_id, tools)] if spec_id else list_specs(database_url)[0]
        print(json_text(data, indent=2))
        return

    def view() -> Any:
        shown = (trace_view(spec_trace(database_url, spec_id, tools)) if spec_id
                 else specs_table(*list_specs(database_url, None if show_all else TABLE_LIMIT)))
        if lock_path is None:
            return shown
        from rich.console import Group
        from rich.text import Text

        line, ok = daemon_line(database_url, lock_path)
        if spec_id and ok:  # one spec's trace: the daemon named only when specs wait for it in vain
            return shown
        return Group(Text(line, style="green" if ok else "bold red"), shown)

    if not watch:
        console.print(view())
        return
    if not console.is_terminal:  # a pipe or a file: one plain snapshot a second, no cursor control
        try:
            while True:
                console.print(view())
                console.file.flush()
                time.sleep(1)
        except KeyboardInterrupt:
            return
    from rich.live import Live

    with Live(view(), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(1)
                live.update(view())
        except KeyboardInterrupt:
            pass
