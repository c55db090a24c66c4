"""What the dashboard reads: the same read-only queries as `status`, `diff` and `logs`, as JSON-ready data.

Owns the read side of the web API (plain functions, run in a thread by web/server.py): the spec
list (`status --json`) and what changed since a moment, one spec (`status ID --json`, with its
tool-call counts), its tool-call timeline, its diff, one dispatch's prompt and handoff (the
handoff as Markdown rendered with raw HTML disabled: text from agents never becomes markup),
the costs, whether the daemon runs, and the change fingerprint the live page waits on. Imports no
DBOS and writes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from iwo_lite import status, store, views
from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.home import Home, daemon_pid, read_text
from iwo_lite.store import costs as cost_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.times import iso_utc

MAX_TEXT = 256 * 1024  # of a prompt or handoff sent to the page
COST_DAYS = 30


class NotFound(UserError):
    """An id (spec, dispatch) that does not exist: 404."""


def specs(config: Config, since: str | None = None) -> list[dict]:
    """Every spec, as `status --json` prints them; with `since`, only those a board drawn at `since`
    must draw again (every unfinished one, every one updated since)."""
    if since is None:
        return status.list_specs(config.database_url)[0]
    with store.readonly(config.database_url) as db:
        return [] if db is None else db.run(spec_rows.changed_since(since))


def daemon(config: Config) -> dict:
    """{"running", "pid", "line", "ok"}: `ok` is False when specs wait for a daemon that is not running."""
    home = Home(config.home)
    line, ok = status.daemon_line(config.database_url, home.lock)
    pid = daemon_pid(home.lock)
    return {"running": pid is not None, "pid": pid, "line": line, "ok": ok}


def board(config: Config, since: str | None = None) -> dict:
    """What the board page draws: the specs (all, or those changed since), the daemon, the server's time."""
    moment = time.time()
    # `since` for the next call: a little before now, so a row changed while this one read is read again
    return {"now": iso_utc(moment), "since": iso_utc(moment - 2.0), "daemon": daemon(config),
            "specs": specs(config, since), "full": since is None}


def spec(config: Config, spec_id: str) -> dict:
    """`status ID --json`'s object: the spec, its dispatches and attempts (with tool-call counts), its gates."""
    try:
        return status.spec_trace(config.database_url, spec_id, lambda attempt: views.tool_counts(config, attempt))
    except UserError as error:
        raise NotFound(str(error)) from None


def _known(config: Config, spec_id: str) -> tuple[dict, list[dict], list[dict]]:
    try:
        return views._spec(config, spec_id)
    except UserError as error:
        raise NotFound(str(error)) from None


def events(config: Config, spec_id: str, dispatch: int | None = None, attempt: int | None = None) -> dict:
    """The tool-call timeline of the running (or last) attempt, or of dispatch `dispatch` (its last
    attempt, or attempt `attempt`)."""
    _, steps, attempts = _known(config, spec_id)
    chosen = [a for a in attempts if dispatch is None or a["step"] == dispatch]
    if attempt is not None:
        chosen = [a for a in chosen if a["attempt"] == attempt]
    if dispatch is not None and not chosen:
        raise NotFound(f"{spec_id}: dispatch {dispatch:02d}" + (f" attempt {attempt}" if attempt else "")
                       + ": no such attempt")
    if not chosen:
        return {"spec_id": spec_id, "step": None, "role": None, "attempt": None, "finished": True, "events": []}
    last = chosen[-1]
    roles = {s["step"]: s["role"] for s in steps}
    return {"spec_id": spec_id, "step": last["step"], "role": roles.get(last["step"]), "attempt": last["attempt"],
            "agent": last.get("agent"), "finished": last["finished_at"] is not None,
            "events": [event.to_json() for event in views.timeline(config, last)]}


def diff(config: Config, spec_id: str, dispatch: int | None = None, stat: bool = False) -> str:
    _known(config, spec_id)
    try:
        return views.diff_text(config, spec_id, dispatch, stat)
    except UserError as error:
        if "no such dispatch" in str(error):
            raise NotFound(str(error)) from None
        raise


def dispatch(config: Config, spec_id: str, step: int) -> dict:
    """One dispatch's prompt (its last attempt's prompt.md) and handoff (text and rendered HTML)."""
    _, steps, attempts = _known(config, spec_id)
    found = next((s for s in steps if s["step"] == step), None)
    if found is None:
        raise NotFound(f"{spec_id}: dispatch {step:02d}: no such dispatch")
    tries = [a for a in attempts if a["step"] == step and a.get("run_dir")]
    prompt = _capped(Path(tries[-1]["run_dir"]) / "prompt.md") if tries else None
    handoff = _capped(Path(found["handoff"])) if found.get("handoff") else None
    return {"spec_id": spec_id, "step": step, "role": found["role"], "prompt": prompt, "handoff": handoff,
            "handoff_html": markdown_html(handoff) if handoff else None}


def _capped(path: Path) -> str | None:
    if not path.exists():
        return None
    text = read_text(path)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT} more characters in {path})"


def markdown_html(text: str) -> str:
    """CommonMark to HTML with raw HTML off (a `<script>` in a handoff shows as text) and only
    http(s)/mailto/relative links (markdown-it drops javascript: and data: links itself)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").render(text)


def costs(config: Config, days: int = COST_DAYS) -> dict:
    """Spend per UTC day (the last `days`, zeros included), per spec (the top 20), per role, in all,
    and what replay saved."""
    first = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days - 1) * 86400))
    with store.readonly(config.database_url) as db:
        if db is None:
            return {"days": _every_day([], days), "specs": [], "roles": [], "total_usd": 0.0, "saved_usd": 0.0,
                    "recoveries": 0}
        by_day = db.run(cost_rows.per_day(first))
        saved_usd, recoveries = db.run(cost_rows.saved())
        return {"days": _every_day(by_day, days), "specs": db.run(cost_rows.per_spec()),
                "roles": db.run(cost_rows.per_role()), "total_usd": db.run(cost_rows.total()),
                "saved_usd": saved_usd, "recoveries": recoveries}


def _every_day(rows: list[dict], days: int) -> list[dict]:
    spent = {row["day"]: row["usd"] for row in rows}
    now = time.time()
    listed = [time.strftime("%Y-%m-%d", time.gmtime(now - back * 86400)) for back in range(days - 1, -1, -1)]
    return [{"day": day, "usd": spent.get(day, 0.0)} for day in listed]


def fingerprint(config: Config) -> tuple:
    """Changes whenever anything the pages show may have changed: the database (on SQLite its file
    and write-ahead log, a stat each; on Postgres one small query), and the daemon coming or going."""
    home = Home(config.home)
    pid = daemon_pid(home.lock)
    db_path = config.db_path
    if db_path is not None:
        marks = []
        for path in (db_path, db_path.with_name(db_path.name + "-wal")):
            try:
                info = os.stat(path)
                marks.append((info.st_mtime_ns, info.st_size))
            except OSError:
                marks.append(None)
        return pid, tuple(marks)
    with store.readonly(config.database_url) as db:
        return pid, (db.run(spec_rows.change_mark()) if db is not None else None)
