"""OpenAI Codex (`codex exec --json`) as an agent kind: argv per role and permission profile, the
verdict schema file, threads (sessions) and their resume, the answer from its events (read by
agents/codex_events.py, with the rollout file and the cost of tokens), denied commands, error
classes.

Owns, for the pinned CLI (0.169.0; the facts are pinned by tests/test_codex_cli.py):

* argv: `[agents.codex] command` (the native binary: the npm wrapper `bin/codex.js` is resolved to
  it, since the wrapper spawns it as a child) with the flags iwo-lite owns stripped, then `exec
  --json --skip-git-repo-check --output-schema <run dir>/verdict.schema.json -c
  approval_policy="never"`, the role's sandbox (PROFILES), the role's `extra_args`, `-m MODEL`,
  and for a continued attempt `resume <thread id>`; the prompt on stdin (`-`). Flags are not
  remembered by a resumed thread: each attempt gives them all again, before `resume`.
* sessions: Codex names its thread when it starts (`thread.started`); a continued attempt
  resumes that thread when its rollout file is in $CODEX_HOME/sessions (else it starts afresh).
* reading stdout: `thread.started`, `item.*` (command_execution, agent_message, file_change,
  error), `turn.completed{usage}`, `turn.failed{error}`, top-level `error` (retry notices).
  The verdict is the last agent_message (JSON, as the schema asks; Codex does not check it: we
  do, against the role's verdicts). No cost is reported: tokens x the price table
  (`[agents.codex] prices`).
* denials: a command refused by the sandbox either prints "Read-only file system" / "Operation
  not permitted" in its output, or (when it fails) emits no event at all — then only the
  thread's rollout file has it. Both are read; either is a `denied` answer, never a pass.
* error classes: a usage limit ("You've hit your usage limit. Try again at 1:39 AM.") pauses
  until the reset; a 429 is `rate_limited`; "high demand" (what Codex says for a 5xx, after its
  own 30 requests) is `overloaded`; 401/403 or an invalid key is `fatal` (a gate at once); an
  unknown thread is `no_session`.

Pure functions and small classes, apart from reading Codex's own session files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iwo_lite.agents.answer import AgentAnswer, answer_from_result, classify_stderr
from iwo_lite.agents.base import Session, SessionKey
from iwo_lite.agents.codex_events import (  # re-exported: tests and callers import them from here
    DENIED_MARKERS,
    CodexStreamReader,
    Scan,
    _count,
    _events,
    codex_home,
    cost_of,
    denied_text,
    price_of,
    rollout_facts,
    rollout_path,
    scan,
    shell_command,
)
from iwo_lite.agents.events import ToolEvent, event
from iwo_lite.roles import DEFAULT_PERMISSIONS, VERDICTS
from iwo_lite.text import clip

PROFILES: dict[str, tuple[str, ...]] = {
    "read": ("-s", "read-only"),  # reads and read-only commands; every write refused by the sandbox
    "edit": ("-s", "workspace-write"),  # writes inside the working directory (and /tmp); no network
    "run": ("-s", "workspace-write", "-c", "sandbox_workspace_write.network_access=true"),  # + network
    "full": ("-s", "danger-full-access"),  # no sandbox at all
}
# flag -> how many values it takes; iwo-lite sets these (or they would break it)
OWNED_FLAGS: dict[str, int] = {
    "exec": 0, "e": 0, "resume": 0, "--json": 0, "-s": 1, "--sandbox": 1, "--output-schema": 1, "-o": 1,
    "--output-last-message": 1, "--skip-git-repo-check": 0, "--dangerously-bypass-approvals-and-sandbox": 0,
    "--full-auto": 0, "-a": 1, "--ask-for-approval": 1, "--ephemeral": 0, "-C": 1, "--cd": 1, "--color": 1,
    "--last": 0,
}
SCHEMA_FILE = "verdict.schema.json"
CONTINUE_PROMPT = ("You are the {role} in a six-role coding loop; you were interrupted. iwo-lite stopped or lost "
                   "your earlier run (a timeout, a stall or a restart); nobody refused anything, so run again what "
                   "you still need. Continue the same task from where you left off, and end with your verdict as "
                   "the JSON object the output schema asks for.\n")


def strip_owned(command) -> tuple[str, ...]:
    """`command` without the flags (and subcommands) iwo-lite owns; `--flag=value` forms too."""
    command = tuple(str(arg) for arg in command)
    kept, index = list(command[:1]), 1
    while index < len(command):
        arg = command[index]
        name, has_value, _ = arg.partition("=")
        if name in OWNED_FLAGS and (arg == name or has_value and name.startswith("--")):
            index += 1 + (OWNED_FLAGS[name] if not has_value else 0)
            continue
        kept.append(arg)
        index += 1
    return tuple(kept)


def native_binary(executable: str) -> str:
    """The native codex binary behind npm's `bin/codex.js` wrapper (which spawns it as a child, so
    killing the wrapper alone would leave it running); anything else as given."""
    found = shutil.which(executable) or executable
    real = os.path.realpath(found)
    if not real.endswith(os.path.join("bin", "codex.js")):
        return executable
    package = Path(real).parent.parent  # node_modules/@openai/codex
    for vendor in (package / "vendor", *sorted(package.parent.glob("codex-linux-*/vendor"))):
        for binary in sorted(vendor.glob("*-linux-*/bin/codex")) if vendor.is_dir() else []:
            if os.access(binary, os.X_OK):
                return str(binary)
    return executable


def verdict_schema(role: str) -> dict:
    """The role's verdict as a strict JSON Schema (OpenAI's structured outputs: every property
    required, no others; `question` is "" unless the verdict is blocker — checked by us)."""
    return {"type": "object", "additionalProperties": False, "required": ["verdict", "summary", "question"],
            "properties": {"verdict": {"type": "string", "enum": list(VERDICTS[role])},
                           "summary": {"type": "string", "description": "One paragraph: what you did, found or decided."},
                           "question": {"type": "string", "description": "With verdict blocker: what the human must "
                                        "decide; else an empty string."}}}


def configured_model(env: Mapping[str, str]) -> str | None:
    """The `model` of $CODEX_HOME/config.toml (Codex's default for every run), or None."""
    try:
        with open(codex_home(env) / "config.toml", "rb") as handle:
            model = tomllib.load(handle).get("model")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return model if isinstance(model, str) and model else None


# -- what went wrong ---------------------------------------------------------------------------------

_TRY_AGAIN = re.compile(r"try again at\s+(?:(?P<date>[A-Z][a-z]{2,8}\.? \d{1,2}(?:st|nd|rd|th)?,? \d{4}),?\s+)?"
                        r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp])\.?[Mm]", re.IGNORECASE)
_TRY_IN = re.compile(r"try again in\s+(?:(?P<d>\d+)\s*days?)?[ ,]*(?:(?P<h>\d+)\s*hours?)?[ ,]*"
                     r"(?:(?P<m>\d+)\s*minutes?)?", re.IGNORECASE)


def usage_reset(text: str, now: float | None = None) -> float | None:
    """The epoch of "Try again at 1:39 AM." (local time, the next such moment), "Try again at Dec
    6th, 2026 1:39 AM." or "Try again in 2 hours 5 minutes"; None when not said. Codex cuts the
    reset time down to its minute, so a named minute means its end (1:39 AM -> 1:40:00): never
    earlier than the real reset."""
    now = _dt.datetime.now().timestamp() if now is None else now
    match = _TRY_AGAIN.search(text or "")
    if match:
        hour = int(match.group("hour")) % 12 + (12 if match.group("ampm").lower() == "p" else 0)
        local = _dt.datetime.fromtimestamp(now).astimezone()
        if match.group("date"):
            day_text = re.sub(r"(\d)(st|nd|rd|th)", r"\1", match.group("date").replace(".", "").replace(",", ""))
            for form in ("%b %d %Y", "%B %d %Y"):
                try:
                    day = _dt.datetime.strptime(day_text, form).date()
                    break
                except ValueError:
                    day = None
            if day is None:
                return None
            return _dt.datetime.combine(day, _dt.time(hour, int(match.group("minute"))), local.tzinfo).timestamp() + 60
        moment = local.replace(hour=hour, minute=int(match.group("minute")), second=0, microsecond=0)
        if moment.timestamp() + 60 < now:
            moment += _dt.timedelta(days=1)
        return moment.timestamp() + 60
    match = _TRY_IN.search(text or "")
    if match and any(match.group(k) for k in ("d", "h", "m")):
        return now + 86400 * int(match.group("d") or 0) + 3600 * int(match.group("h") or 0) + 60 * int(match.group("m") or 0)
    return None


def classify(message: str, stderr: str = "") -> tuple[str, str, float | None]:
    """(error class, error, resets_at) of what Codex said when a turn failed."""
    lowered = message.lower()
    if "usage limit" in lowered:
        resets = usage_reset(message)
        when = _dt.datetime.fromtimestamp(resets, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if resets else None
        return "usage_limit", "usage limit; " + (f"resets {when}" if when else "reset time unknown"), resets
    if re.search(r"\b40[13]\b", message) or "incorrect api key" in lowered or "invalid api key" in lowered \
            or "invalid_api_key" in lowered or "unauthorized" in lowered:
        return "fatal", f"authentication failed: {clip(message, 200)}", None
    if "429" in message or "too many requests" in lowered or "rate limit" in lowered:
        return "rate_limited", f"API 429 rate limited: {clip(message, 160)}", None
    if "high demand" in lowered or "overloaded" in lowered or re.search(r"\b5(?:03|29)\b", message):
        return "overloaded", f"API overloaded: {clip(message, 160)}", None
    if re.search(r"\b404\b", message) or "model_not_found" in lowered or "does not exist" in lowered:
        return "fatal", f"API 404: {clip(message, 200)}", None
    return "retry", f"codex turn failed: {clip(message, 200)}", None


def stderr_failure(stderr: str) -> tuple[str, str] | None:
    """What Codex says on stderr when it refuses to run (no events on stdout)."""
    match = re.search(r"no rollout found for thread id (\S+)", stderr or "")
    if match:
        return "no_session", f"no thread {match.group(1)} to resume here (no rollout file in $CODEX_HOME)"
    match = re.search(r"^error: (.+)$", stderr or "", re.MULTILINE)
    if match:
        return "fatal", f"codex refused its arguments: {clip(match.group(1), 200)}"
    if "--skip-git-repo-check" in (stderr or ""):
        return "fatal", "codex refused a directory that is not a git repository"
    return classify_stderr(stderr)


def _verdict_object(text: str) -> dict | None:
    text = (text or "").strip()
    fenced = re.findall(r"```(?:json)?[ \t]*\r?\n(.*?)```", text, re.DOTALL)
    for candidate in ([text] + fenced[::-1]):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# -- the agent -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CodexAgent:
    """OpenAI Codex as an agent kind (implements agents.base.Agent)."""

    command: tuple[str, ...]
    permissions: dict[str, str] = field(default_factory=dict)  # by role: read | edit | run | full
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    models: dict[str, str | None] = field(default_factory=dict)  # by role; None: [agents.codex] model
    model: str = ""  # [agents.codex] model ("" = Codex's own default)
    prices: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)

    name = "codex"
    streams = True  # JSON lines as it goes: progress, and the stall watchdog
    interrupt_first = True  # SIGINT first: it exits 1 at once; SIGTERM to the whole tree could end its
    #                         command first, and Codex then asks the model once more (seen: 0.3 s after the kill)
    caps_budget = False  # no budget flag: the dispatcher stops it (progress cost from the rollout file)

    def __post_init__(self) -> None:
        command = strip_owned(self.command)
        if command:
            command = (native_binary(command[0]),) + command[1:]
        object.__setattr__(self, "command", command)

    def profile(self, role: str) -> str:
        return self.permissions.get(role) or DEFAULT_PERMISSIONS.get(role, "read")

    def model_of(self, role: str) -> str | None:
        return self.models.get(role) or self.model or None

    def argv(self, role: str, *, session: Session | None = None, budget_left_usd: float | None = None,
             run_dir: Path | None = None) -> list[str]:
        """`budget_left_usd` is not passed (Codex has no such flag): the budget is held between calls."""
        argv = list(self.command) + ["exec", "--json", "--skip-git-repo-check"]
        if run_dir is not None:
            argv += ["--output-schema", str(Path(run_dir) / SCHEMA_FILE)]
        argv += ["-c", 'approval_policy="never"', *PROFILES[self.profile(role)], *self.extra_args.get(role, ())]
        if self.model_of(role):
            argv += ["-m", str(self.model_of(role))]
        if session is not None and session.resume_from:
            argv += ["resume", session.resume_from]
        return argv + ["-"]

    def files(self, role: str) -> dict[str, str]:
        return {SCHEMA_FILE: json.dumps(verdict_schema(role), indent=1) + "\n"}

    def env(self) -> dict[str, str]:
        return {"NO_COLOR": "1"}

    def session(self, key: SessionKey, resume_from: str | None, cwd, env: Mapping[str, str]) -> Session:
        """The thread is named by Codex when it starts; a continued attempt resumes `resume_from`
        when its rollout file is in this $CODEX_HOME."""
        if resume_from and rollout_path(resume_from, env) is not None:
            return Session(None, resume_from)
        return Session(None)

    def stdin(self, prompt: str, role: str, session: Session | None = None) -> str:
        if session is not None and session.resume_from:
            return CONTINUE_PROMPT.format(role=role)
        return prompt

    def parse(self, role: str, stdout: str, exit_code: int | None, stderr_tail: str = "", *,
              env: Mapping[str, str] | None = None) -> AgentAnswer:
        found = scan(stdout)
        env = env if env is not None else os.environ
        facts = rollout_facts(rollout_path(found.thread_id, env) if found.thread_id else None, found.turns_started)
        model = self.model_of(role) or facts["model"]
        usage = found.usage if found.completed else (facts["usage"] or found.usage)  # killed: what it was paid
        tokens = {"input_tokens": int(_count(usage.get("input_tokens"))),
                  "output_tokens": int(_count(usage.get("output_tokens")))}
        cost = cost_of(usage, model, self.prices)
        base = dict(session_id=found.thread_id, cost_usd=cost, tokens=sum(tokens.values()),
                    num_turns=found.turns_started or None)
        if found.thread_id is None and not found.completed:
            refused = stderr_failure(stderr_tail)
            if refused is not None:
                return AgentAnswer(error=refused[1], error_class=refused[0], **base)
        failure = found.failure or (found.notices[-1] if found.notices and not found.completed else None)
        if failure is not None:
            kind, error, resets = classify(failure, stderr_tail)
            if found.retries:
                error += f" (after {found.retries} retries of codex's own)"
            return AgentAnswer(error=error, error_class=kind, resets_at=resets, is_error=True, **base)
        if not found.completed:
            said = stderr_failure(stderr_tail)
            if said is not None:
                return AgentAnswer(error=said[1], error_class=said[0], **base)
            return AgentAnswer(error=f"codex exited with status {exit_code} before its turn completed",
                               error_class="retry", **base)
        denials = [{"tool_name": "exec_command", "tool_input": {"command": shell_command(str(c.get("command")))}}
                   for c in found.commands if denied_text(str(c.get("aggregated_output") or ""))]
        denials += [{"tool_name": "exec_command", "tool_input": {"command": d["command"]}} for d in facts["denied"]]
        verdict = _verdict_object(found.message or "")
        payload = {"result": found.message or "", "is_error": False, "session_id": found.thread_id,
                   "num_turns": found.turns_started, "total_cost_usd": cost, "usage": tokens,
                   "permission_denials": denials}
        if verdict is not None and "verdict" in verdict:
            payload["structured_output"] = verdict
        return answer_from_result(role, payload, exit_code, stderr_tail)

    def stream_reader(self) -> CodexStreamReader:
        """Live progress, priced at the model this role runs: its `model`, else Codex's configured one."""
        return CodexStreamReader(self, self.model or configured_model(os.environ))

    def tool_events(self, stdout_text: str) -> list[ToolEvent]:
        """One event per command_execution (and file_change) item, in order; a command whose output
        says the sandbox refused it is "denied"."""
        events: list[ToolEvent] = []
        seen: dict[str, int] = {}
        for item in _events(stdout_text):
            body = item.get("item") if isinstance(item.get("item"), dict) else None
            if not body or body.get("type") not in ("command_execution", "file_change", "mcp_tool_call", "web_search"):
                continue
            kind = body["type"]
            if kind == "command_execution":
                tool, what = "exec_command", shell_command(str(body.get("command") or ""))
                output = str(body.get("aggregated_output") or "")
                code = body.get("exit_code")
                status = body.get("status")
                state = ("running" if status == "in_progress" else "denied" if denied_text(output)
                         else "ok" if status == "completed" and code in (0, None) else "failed")
            else:
                tool = kind
                changes = body.get("changes") if isinstance(body.get("changes"), list) else []
                what = ", ".join(str(c.get("path")) for c in changes if isinstance(c, dict)) or json.dumps(
                    {k: v for k, v in body.items() if k not in ("id", "type", "status")})[:200]
                output = ""
                state = {"in_progress": "running", "completed": "ok"}.get(str(body.get("status")), "failed")
            key = str(body.get("id") or len(seen))
            record = event(len(seen) + 1 if key not in seen else seen[key], None, tool, what, state, output)
            if key in seen:
                events[seen[key] - 1] = record
            else:
                seen[key] = len(events) + 1
                events.append(record)
        return events

    def writable_state(self, env: Mapping[str, str]) -> list[str]:
        """$CODEX_HOME (or ~/.codex): its sessions (for resume), logs and sandbox helper."""
        return [str(codex_home(env))]

    def checks(self, config, roles: list[str]) -> list[tuple[bool, str, str]]:
        found = shutil.which(self.command[0]) if self.command else None
        results = [(bool(found), f"agent command (codex): {self.command[0]}" + (f" -> {found}" if found else " not found"),
                    "install it (npm install -g @openai/codex), or set agents.codex.command")]
        shown = ", ".join(f"{role} {self.profile(role)} ({PROFILES[self.profile(role)][1]})" for role in roles)
        results.append((True, f"agent kind: codex; permissions: {shown}", ""))
        refused = self.refused(config, roles)
        if refused:
            what, _, fix = refused.partition("; ")
            results.append((False, what, fix))
        return results

    def refused(self, config, roles: list[str]) -> str | None:
        """A CODEX_HOME under $TMPDIR, with a role in Codex's sandbox: Codex cannot install its
        sandbox helper there, and every sandboxed command would fail without a word."""
        home = codex_home(os.environ)
        tmp = os.path.realpath(os.environ.get("TMPDIR") or "/tmp")
        sandboxed = [role for role in roles if self.profile(role) != "full"]
        if sandboxed and os.path.realpath(home).startswith(tmp.rstrip("/") + "/"):
            return (f"CODEX_HOME {home} lies under $TMPDIR ({tmp}): Codex's sandbox then fails every command of "
                    f"roles.{sandboxed[0]} silently; set CODEX_HOME (or TMPDIR) so that it does not lie inside $TMPDIR")
        return None


def from_config(config, roles: list[str] | None = None) -> CodexAgent:
    """Codex for `roles` (default: all): [agents.codex] command / model / prices."""
    kind = config.agents.codex
    chosen = {role: config.roles[role] for role in (roles if roles is not None else config.roles)}
    return CodexAgent(
        command=tuple(config.agents.command("codex", config.agent)),
        permissions={role: rc.permissions or DEFAULT_PERMISSIONS[role] for role, rc in chosen.items()},
        extra_args={role: tuple(rc.extra_args) for role, rc in chosen.items()},
        models={role: rc.model for role, rc in chosen.items()},
        model=kind.model,
        prices=dict(kind.prices),
    )
