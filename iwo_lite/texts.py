"""What iwo-lite says about specs in words: one module for the terminal (`status`) and the phone (Telegram).

Owns the texts both write from the same rows: the terminal's one-line detail of a spec (what it
does, waits on or failed with), its money column and the running agent's progress; the phone's
/status, /spec, a gate's question (with reminder and answer), a spec's event and /help, each
fitted to Telegram's 4,096 UTF-16 units (cut with a note, never mid-character); and the pieces
both use (dollars, a progress line, a pause line; times.py has "3m ago" and "2h left"). Pure
functions of dicts: no I/O, no imports beyond layer 0.
"""

from __future__ import annotations

import json
import time

from iwo_lite.text import clip
from iwo_lite.times import ago, left


# -- the terminal (status) -----------------------------------------------------------------------


def progress_text(progress: dict | None, now: float | None = None) -> str:
    """A running agent's progress in one line: `Bash: pytest -q · 7 turns · 41k tok · $0.32 · 12s ago`."""
    if not progress:
        return ""
    tokens = progress.get("tokens") or 0
    shown = f"{tokens / 1000:.0f}k" if tokens >= 1000 else str(tokens)
    parts = [progress.get("tool") or "thinking", f"{progress.get('turns') or 0} turns", f"{shown} tok",
             f"${progress.get('cost_usd') or 0:.2f}"]
    if progress.get("last_event_at"):
        parts.append(ago(progress["last_event_at"], now))
    return " · ".join(parts)


def detail_text(spec: dict, now: float) -> str:
    """What a spec is doing or waiting on, in one line."""
    state = spec["state"]
    if state == "waiting":
        reason = f"[{spec['gate_reason']}] " if spec.get("gate_reason") not in (None, "blocker") else ""
        return f"{reason}{spec['question'] or ''} ({left(spec['deadline'], now)})"
    if state == "failed":
        return spec["error"] or ""
    if spec.get("paused_until"):
        return f"paused ({spec['pause_reason']}) until {spec['paused_until'][11:16]}Z ({left(spec['paused_until'], now)})"
    if state == "running":
        return progress_text(spec.get("progress"), now)
    return ""


def money_text(spec: dict) -> str:
    cap = spec.get("budget_usd")
    return f"{spec['cost_usd']:.4f}" + (f"/{cap:.2f}" if cap else "")


# -- the phone (Telegram): fitting its limit, then the messages --------------------------------


TELEGRAM_LIMIT = 4096  # characters in one message, counted as Telegram does (UTF-16 code units)


STATUS_LIMIT = 10  # specs in /status


SPEC_STEPS_SHOWN = 12  # the last dispatches in /spec


COMMANDS = (  # registered with setMyCommands: what the phone offers after "/"
    ("status", "Recent specs and their state"),
    ("spec", "One spec in detail: /spec ID"),
    ("submit", "Start a spec: /submit then its text (or send a .md file)"),
    ("cancel", "Cancel a spec: /cancel ID"),
)


REMINDER_PREFIX = "Reminder — still waiting for an answer.\n\n"


def units(text: str) -> int:
    """The length Telegram counts: UTF-16 code units (an emoji outside the BMP is two)."""
    return len(text.encode("utf-16-le")) // 2


def _head(text: str, room: int) -> str:
    """The longest start of `text` of at most `room` UTF-16 units, never half a character."""
    if units(text) <= room:
        return text
    cut = text[:room]  # `room` characters: `room` units or more (a character outside the BMP is two)
    while units(cut) > room:  # drop at least one character per extra unit: ends within one pass
        cut = cut[: max(0, len(cut) - (units(cut) - room))]
    return cut


def cut_note(spec_id: str | None, length: int, limit: int = TELEGRAM_LIMIT) -> str:
    where = f"iwo-lite status {spec_id}" if spec_id else "iwo-lite status"
    return (f"\n\n[cut: {length:,} characters are over Telegram's {limit:,}-character limit; "
            f"the whole text: {where}]")


def shorten(text: str, room: int, spec_id: str | None, limit: int = TELEGRAM_LIMIT) -> str:
    """`text` in at most `room` units: whole when it fits, else its start, "…" and a note saying so."""
    if units(text) <= room:
        return text
    note = cut_note(spec_id, units(text), limit)
    return _head(text, max(0, room - units(note) - 1)).rstrip() + "…" + note


def fit(text: str, spec_id: str | None = None, limit: int = TELEGRAM_LIMIT) -> str:
    """A message Telegram takes: `text`, or its start with a note pointing at `iwo-lite status`."""
    return shorten(text, limit, spec_id, limit)


def gate_text(gate: dict, kind: str = "question", answered: str = "") -> str:
    """A gate's message; a question too long for one message is cut, the rest of the message kept."""
    prefix = REMINDER_PREFIX if kind == "reminder" else ""
    head = (f"{prefix}iwo-lite — spec {gate['spec_id']}: {gate['title']}\n"
            f"The {gate['role']} asks (gate {gate['gate_id']}):\n\n")
    tail = (f"\n\nDeadline: {gate['deadline']} (then: {gate['on_timeout']})\n"
            "Reply to this message to send the spec back to the builder with your text." + answered)
    room = TELEGRAM_LIMIT - units(head) - units(tail)
    question = shorten(gate["question"] or "", max(room, 200), gate["spec_id"])
    return fit(head + question + tail, gate["spec_id"])


def answered_suffix(gate: dict) -> str:
    note = gate["note"] or ""
    return (f"\n\nAnswered: {gate['answer']}" + (f" ({note})" if note else "")
            + f" — by {gate['answered_by']} via {gate['answered_via']}")


def usd(value) -> str:
    value = float(value or 0)
    return f"${value:.2f}" if value >= 1 or value == 0 else f"${value:.4f}"


def _progress(spec: dict) -> dict | None:
    progress = spec.get("progress")
    if isinstance(progress, str):
        try:
            progress = json.loads(progress)
        except ValueError:
            return None
    return progress if isinstance(progress, dict) and progress else None


def progress_line(progress: dict, now: float) -> str:
    """"turn 4 · Bash · 12,345 tokens · $0.0100 · 10s ago" (the parts the running agent reported)."""
    parts = []
    if progress.get("turns") is not None:
        parts.append(f"turn {progress['turns']}")
    if progress.get("tool"):
        parts.append(clip(str(progress["tool"]), 40))
    if progress.get("tokens") is not None:
        try:
            parts.append(f"{int(progress['tokens']):,} tokens")
        except (TypeError, ValueError):
            pass
    if progress.get("cost_usd") is not None:
        parts.append(usd(progress["cost_usd"]))
    if progress.get("last_event_at"):
        parts.append(ago(progress["last_event_at"], now))
    return " · ".join(part for part in parts if part)


def pause_line(spec: dict, now: float) -> str:
    """"paused (usage limit) until 2026-…Z, 2h left", or "" when the spec is not paused."""
    until, reason = spec.get("paused_until"), spec.get("pause_reason")
    if not until and not reason:
        return ""
    line = "paused" + (f" ({reason})" if reason else "")
    if until:
        line += f" until {until}" + (f", {left(until, now)}" if left(until, now) else "")
    return line


def _role_at(spec: dict) -> str:
    role = spec.get("role") or ""
    step = spec.get("step")
    return f"{role} {step:02d}".strip() if isinstance(step, int) and step else role


def status_text(specs: list[dict], more: int, now: float | None = None) -> str:
    """/status: each spec in a few short lines (id; state, role, calls, cost, age; title; detail)."""
    now = time.time() if now is None else now
    if not specs:
        return "iwo-lite: no specs yet. /submit one (or send a .md file)."
    blocks = [f"iwo-lite — {len(specs)} spec(s), newest first"]
    for spec in specs:
        facts = [spec["state"], _role_at(spec), f"{spec['dispatches']} calls", usd(spec["cost_usd"]),
                 ago(spec["updated_at"], now)]
        lines = [spec["id"], "  " + " · ".join(fact for fact in facts if fact), "  " + clip(spec["title"] or "", 60)]
        pause = pause_line(spec, now)
        if pause:
            lines.append("  " + pause)
        if spec["state"] == "waiting":
            due = left(spec.get("deadline"), now)
            lines.append("  asks: " + clip(spec.get("question") or "", 80) + (f" ({due})" if due else ""))
        elif spec["state"] == "failed" and spec.get("error"):
            lines.append("  error: " + clip(spec["error"], 80))
        elif spec["state"] == "running" and _progress(spec):
            lines.append("  now: " + progress_line(_progress(spec), now))
        blocks.append("\n".join(lines))
    if more:
        blocks.append(f"{more} older spec(s) not shown: iwo-lite status --all")
    blocks.append("/spec ID for one spec")
    return "\n\n".join(blocks)


def spec_text(spec: dict, steps: list[dict], attempts: list[dict], gates: list[dict],
              now: float | None = None) -> str:
    """/spec ID: the spec's state, current role, progress, pause, cost, last dispatches and gates."""
    now = time.time() if now is None else now
    lines = [spec["id"], clip(spec["title"] or "", 200), ""]
    state = f"state: {spec['state']}"
    if spec.get("role"):
        state += f" — {spec['role']}" + (f", dispatch {spec['step']:02d}" if spec.get("step") else "")
    lines.append(state + (f" · {ago(spec['updated_at'], now)}" if spec.get("updated_at") else ""))
    if spec["state"] == "waiting" and spec.get("question"):
        reason = spec.get("gate_reason")
        due = left(spec.get("deadline"), now)
        lines.append(f"asks{f' ({reason})' if reason else ''}: {clip(spec['question'], 300)}"
                     + (f" ({due})" if due else ""))
    pause = pause_line(spec, now)
    if pause:
        lines.append(pause)
    progress = _progress(spec)
    if progress and spec["state"] in ("running", "waiting", "queued"):
        lines.append("progress: " + progress_line(progress, now))
    cost = f"cost: {usd(spec['cost_usd'])} over {spec['dispatches']} dispatch(es)"
    if spec.get("budget_usd") is not None:
        cost += f" (budget {usd(spec['budget_usd'])})"
    lines.append(cost)
    if spec.get("branch"):
        lines.append(f"branch: {spec['branch']}" + (f" at {str(spec['head'])[:12]}" if spec.get("head") else ""))
    if spec.get("error"):
        lines.append("error: " + clip(spec["error"], 300))
    if spec.get("parent_id"):
        lines.append(f"forked from: {spec['parent_id']}")
    if steps:
        cost_of: dict[int, float] = {}
        for attempt in attempts:
            cost_of[attempt["step"]] = cost_of.get(attempt["step"], 0.0) + float(attempt["cost_usd"] or 0)
        lines += ["", "dispatches:"]
        if len(steps) > SPEC_STEPS_SHOWN:
            lines.append(f"… {len(steps) - SPEC_STEPS_SHOWN} earlier")
        for step in steps[-SPEC_STEPS_SHOWN:]:
            outcome = step["verdict"] or ("error" if step["error"] else "running" if not step["finished_at"] else "-")
            lines.append(f"{step['step']:02d} {step['role']} — {outcome} · {usd(cost_of.get(step['step'], 0))}")
    if gates:
        lines += ["", "gates:"]
        for gate in gates:
            if gate["answer"]:
                how = f"{gate['answer']}" + (f" ({clip(gate['note'], 80)})" if gate["note"] else "")
                how += f" by {gate['answered_by']} via {gate['answered_via']}"
            else:
                due = left(gate["deadline"], now)
                how = "waiting" + (f", {due}" if due else "")
            lines.append(f"{gate['id']} {gate['role']} ({gate['reason']}) — {how}")
            if not gate["answer"]:
                lines.append("  " + clip(gate["question"] or "", 200))
    lines += ["", f"Everything: iwo-lite status {spec['id']}"]
    return "\n".join(lines)


def event_text(event: dict, now: float | None = None) -> str:
    """A spec's event for the phone: the state word and title, id, dispatches, cost, branch, why."""
    now = time.time() if now is None else now
    kind = event.get("kind") or event.get("state") or "?"
    word = kind
    if kind == "paused" and event.get("pause_reason"):
        word += f" ({event['pause_reason']})"
    lines = [f"iwo-lite — {word}: {clip(event.get('title') or '', 200)}", f"spec {event.get('spec_id')}"]
    if kind == "paused" and event.get("paused_until"):
        due = left(event["paused_until"], now)
        lines.append(f"resumes at {event['paused_until']}" + (f" ({due})" if due else ""))
    if kind == "failed" and event.get("error"):
        lines.append("error: " + clip(event["error"], 600))
    state = event.get("state")
    facts = [f"{event.get('dispatches') or 0} dispatch(es)", usd(event.get("cost_usd"))]
    if state and state != kind:
        facts.insert(0, f"state {state}")
    lines.append(" · ".join(facts))
    if event.get("branch"):
        lines.append(f"branch: {event['branch']}")
    return "\n".join(lines)


def help_text() -> str:
    return ("iwo-lite bot. Commands:\n" + "\n".join(f"/{name} — {what}" for name, what in COMMANDS)
            + "\nA text or markdown document sent here is submitted as a spec.")
