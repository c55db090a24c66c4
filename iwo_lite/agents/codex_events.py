"""What Codex's output says: its JSON-lines events, the thread's rollout file, and the cost of its tokens.

Owns reading `codex exec --json`'s stdout (`Scan`: thread id, usage, turns, the last agent message,
failures, retry notices; `CodexStreamReader`: a running attempt's progress), the thread's rollout
file under $CODEX_HOME/sessions (the refusals stdout does not show: `rollout_facts`), telling a
sandbox refusal from a command's output (`denied_text`), and tokens priced by `[agents.codex]
prices` (`price_of`, `cost_of`). agents/codex.py builds the command line and the answer from these.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iwo_lite.agents.base import Tail
from iwo_lite.numbers import checked_count
from iwo_lite.text import clip


DENIED_MARKERS = ("Read-only file system", "Operation not permitted")


def codex_home(env: Mapping[str, str]) -> Path:
    """$CODEX_HOME, else ~/.codex (with the environment's HOME)."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"]).expanduser()
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".codex"


def rollout_path(thread_id: str, env: Mapping[str, str]) -> Path | None:
    """The thread's rollout file ($CODEX_HOME/sessions/YYYY/MM/DD/rollout-<ts>-<id>.jsonl), or None."""
    if not re.fullmatch(r"[0-9A-Za-z-]{8,64}", thread_id or ""):
        return None
    found = sorted((codex_home(env) / "sessions").glob(f"*/*/*/rollout-*-{thread_id}.jsonl"))
    return found[-1] if found else None


def price_of(model: str | None, prices: Mapping[str, tuple[float, float, float]]) -> tuple[float, float, float]:
    """The longest price-table key that starts the model's name, else "*" (else nothing: 0)."""
    name = (model or "").lower()
    best = max((key for key in prices if key != "*" and name.startswith(key.lower())), key=len, default=None)
    return prices[best] if best is not None else prices.get("*", (0.0, 0.0, 0.0))


def cost_of(usage: Mapping, model: str | None, prices: Mapping[str, tuple[float, float, float]]) -> float:
    """US dollars of a turn.completed `usage`: uncached input, cached input, output (reasoning included)."""
    p_in, p_cached, p_out = price_of(model, prices)
    total_in = _count(usage.get("input_tokens"))
    cached = min(_count(usage.get("cached_input_tokens")), total_in)
    return ((total_in - cached) * p_in + cached * p_cached + _count(usage.get("output_tokens")) * p_out) / 1_000_000


def _count(value: object) -> float:
    """A token count Codex reported, when believable (numbers.checked_count: NaN, inf, negative or
    absurd counts are 0), so a cost from tokens is always finite and sane."""
    return float(checked_count(value) or 0)


def _events(text: str):
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def shell_command(command: str) -> str:
    """`/bin/bash -lc 'touch x'` -> `touch x` (the shell Codex puts around each command, quoted
    with '...' or "...")."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return command or ""
    if len(words) == 3 and os.path.basename(words[0]) in ("bash", "sh", "zsh") and words[1] in ("-lc", "-c"):
        return words[2]
    return command or ""


def denied_text(output: str) -> bool:
    return any(marker in (output or "") for marker in DENIED_MARKERS)


@dataclass
class Scan:
    """What a (finished or growing) `codex exec --json` stdout says."""

    thread_id: str | None = None
    turns_started: int = 0
    completed: bool = False
    failure: str | None = None  # turn.failed's message
    notices: list[str] = field(default_factory=list)  # top-level error events (retry notices, the final error)
    message: str | None = None  # the last agent_message
    usage: dict = field(default_factory=dict)  # summed over turn.completed
    commands: list[dict] = field(default_factory=list)  # command_execution items, by id, in order
    items: int = 0  # completed items (commands, messages, file changes)

    def feed(self, item: dict) -> None:
        kind = item.get("type")
        if kind == "thread.started" and isinstance(item.get("thread_id"), str):
            self.thread_id = item["thread_id"]
        elif kind == "turn.started":
            self.turns_started += 1
        elif kind == "turn.completed":
            self.completed = True
            for key, value in (item.get("usage") or {}).items():
                self.usage[key] = self.usage.get(key, 0) + _count(value)
        elif kind == "turn.failed":
            self.failure = str(((item.get("error") or {}).get("message")) or "turn failed")
        elif kind == "error":
            self.notices.append(str(item.get("message") or ""))
        elif kind in ("item.started", "item.updated", "item.completed"):
            body = item.get("item") if isinstance(item.get("item"), dict) else {}
            if kind == "item.completed":
                self.items += 1
            if body.get("type") == "command_execution":
                known = next((c for c in self.commands if c.get("id") == body.get("id")), None)
                if known is None:
                    self.commands.append(dict(body))
                else:
                    known.update(body)
            elif body.get("type") == "agent_message" and kind == "item.completed":
                self.message = str(body.get("text") or "")

    @property
    def retries(self) -> int:
        return sum(1 for notice in self.notices if notice.startswith("Reconnecting..."))


def scan(stdout: str) -> Scan:
    found = Scan()
    for item in _events(stdout):
        found.feed(item)
    return found


class CodexStreamReader:
    """Follows the growing stdout: progress = {"turns" (completed items), "tool" (the last command),
    "tokens", "cost_usd"}. Codex prints tokens only when its turn completes, so while it runs the
    tokens come from the thread's rollout file (a token_usage_record per model response, written
    before its tools run; of this run's turns: the last `turn.started` count of them), found in
    $CODEX_HOME once the thread is named."""

    def __init__(self, agent, model: str | None, env: Mapping[str, str] | None = None):  # agent: the CodexAgent
        self.agent, self.model = agent, model
        self.env = env if env is not None else os.environ
        self._stdout = Tail()
        self.scan = Scan()
        self._rollout: Path | None = None
        self._rollout_tail = Tail()
        self._turn_usage: list[dict] = []  # per task_started in the rollout: summed last_token_usage

    @property
    def session_id(self) -> str | None:
        return self.scan.thread_id

    def usage(self) -> dict:
        """This run's tokens so far: turn.completed once it came, else the rollout's count."""
        if self.scan.completed or not self._turn_usage or not self.scan.turns_started:
            return self.scan.usage
        total: dict = {}
        for usage in self._turn_usage[-self.scan.turns_started:]:
            for key, value in usage.items():
                total[key] = total.get(key, 0) + value
        return total

    @property
    def progress(self) -> dict:
        last = self.scan.commands[-1] if self.scan.commands else None
        tool = clip(f"exec_command: {shell_command(str(last.get('command') or ''))}", 80) if last else None
        usage = self.usage()
        return {"turns": self.scan.items, "tool": tool,
                "tokens": int(_count(usage.get("input_tokens")) + _count(usage.get("output_tokens"))),
                "cost_usd": round(cost_of(usage, self.model, self.agent.prices), 6)}

    def read_new(self, path: str | os.PathLike) -> bool:
        lines = self._stdout.lines(path)
        for item in _events(b"\n".join(lines or []).decode("utf-8", "replace")):
            self.scan.feed(item)
        self._read_rollout()
        return lines is not None

    def _read_rollout(self) -> None:
        if self.scan.completed or self.scan.thread_id is None:
            return
        if self._rollout is None:
            self._rollout = rollout_path(self.scan.thread_id, self.env)
            if self._rollout is None:
                return
        # token_usage_record: written as each response ends, before its tools run
        for line in self._rollout_tail.lines(self._rollout) or []:
            if b'"task_started"' not in line and b'"token_usage_record"' not in line:
                continue
            try:
                record = json.loads(line)
                payload = record.get("payload") or {}
            except (ValueError, AttributeError):
                continue
            if payload.get("type") == "task_started":
                self._turn_usage.append({})
            elif record.get("type") == "token_usage_record" and isinstance(payload.get("usage"), dict):
                if not self._turn_usage:
                    self._turn_usage.append({})
                for key, value in payload["usage"].items():
                    self._turn_usage[-1][key] = self._turn_usage[-1].get(key, 0) + _count(value)


def rollout_facts(path: Path | None, turns: int) -> dict:
    """From the rollout file, for the last `turns` turns (this run's): the model, the commands whose
    output says the sandbox refused them ([{"command", "output"}]), and the tokens of every model
    response (`usage`, summed token_usage_records: paid, even when the run was killed before
    Codex printed its turn.completed)."""
    facts: dict = {"model": None, "denied": [], "usage": {}}
    if path is None or turns <= 0:
        return facts
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return facts
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    starts = [i for i, r in enumerate(records) if (r.get("payload") or {}).get("type") == "task_started"]
    mine = records[starts[-turns]:] if len(starts) >= turns else records
    calls: dict[str, str] = {}
    for record in mine:
        payload = record.get("payload") or {}
        if record.get("type") == "turn_context" and payload.get("model"):
            facts["model"] = str(payload["model"])
        if record.get("type") == "token_usage_record" and isinstance(payload.get("usage"), dict):
            for key, value in payload["usage"].items():
                facts["usage"][key] = facts["usage"].get(key, 0) + _count(value)
        if payload.get("type") == "function_call":
            try:
                arguments = json.loads(payload.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            calls[str(payload.get("call_id"))] = str(arguments.get("cmd") or arguments.get("command")
                                                     or payload.get("name") or "?")
        elif payload.get("type") == "function_call_output":
            output = payload.get("output")
            output = output if isinstance(output, str) else json.dumps(output)
            if denied_text(output):
                facts["denied"].append({"command": calls.get(str(payload.get("call_id")), "?"), "output": output})
    return facts
