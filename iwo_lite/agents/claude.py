"""Claude Code (`claude -p`) as an agent kind: the flags iwo-lite owns, permission profiles,
the verdict schema, sessions, and reading the stream-json output.

Owns, for the pinned CLI (2.1.197; the facts are pinned by tests/test_claude_cli.py):

* argv: the user's `agent.command` with every flag iwo-lite owns stripped (OWNED_FLAGS), then
  `-p --output-format stream-json --verbose --json-schema <the role's verdict schema>`, the
  session flags, the role's permission profile (PROFILES), `--max-budget-usd`, the role's
  `extra_args` (after the profile, so they can widen or narrow it) and `--model`;
* the agent's environment additions (env) and its stdin (the prompt, or CONTINUE_PROMPT when
  an attempt continues an interrupted session);
* sessions: one deterministic session id per attempt (session_id_for); a continued attempt
  forks the earlier attempt's session (`--resume OLD --fork-session --session-id NEW`: the
  model sees the earlier turns, and the new attempt still has an id of its own that the CLI
  refuses to start twice); where the CLI keeps a session's transcript (transcript_path);
* reading stdout: StreamReader follows the growing stream-json file for live progress (turns,
  the tool in use, tokens, estimated cost); ClaudeAgent.parse reads the final stdout into an
  AgentAnswer with an error class (agents/answer.py).

Pure functions and small classes: no process is started here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iwo_lite.agents.answer import AgentAnswer, answer_from_result, answer_without_result, relative
from iwo_lite.agents.base import Session, SessionKey, Tail
from iwo_lite.agents.events import ToolEvent
from iwo_lite.numbers import checked_cost, checked_count
from iwo_lite.roles import DEFAULT_PERMISSIONS, VERDICTS
from iwo_lite.text import clip

# -- permission profiles -----------------------------------------------------------------------

# Each verified against the real CLI (tests/test_claude_agent_real.py, tests/test_claude_cli.py).
PROFILES: dict[str, tuple[str, ...]] = {
    # Write/Edit/NotebookEdit are not offered at all; read-only shell (ls, cat, grep, git status) stays
    # allowed; a mutating shell command (touch, python3, git commit, >) is denied
    "read": ("--disallowedTools", "Write,Edit,NotebookEdit"),
    # Write/Edit and simple file commands (mkdir, touch, rm, >) inside the cwd; python3, git denied
    "edit": ("--permission-mode", "acceptEdits"),
    # any shell command, plus Write/Edit inside the cwd
    "run": ("--permission-mode", "acceptEdits", "--allowedTools", "Bash"),
    # everything; as root the CLI refuses it unless IS_SANDBOX=1 is in its environment
    "full": ("--dangerously-skip-permissions",),
}


# -- the flags iwo-lite owns ------------------------------------------------------------------------

# flag -> how many values it takes: 0 none, 1 one, "?" an optional one, "*" every following non-flag
OWNED_FLAGS: dict[str, int | str] = {
    "-p": 0, "--print": 0,
    "--output-format": 1,
    "--verbose": 0,
    "--json-schema": 1,
    "--session-id": 1,
    "--resume": "?", "-r": "?",
    "--fork-session": 0,
    "--continue": 0, "-c": 0,
    "--permission-mode": 1,
    "--allowedTools": "*", "--allowed-tools": "*",
    "--disallowedTools": "*", "--disallowed-tools": "*",
    "--dangerously-skip-permissions": 0,
    "--max-budget-usd": 1,
    # not iwo-lite's to set, but they would break it: no transcript to resume, the prompt not on stdin
    "--no-session-persistence": 0,
    "--input-format": 1,
}

MIN_BUDGET_USD = 0.01  # --max-budget-usd 0 (or not a number) crashes the CLI: never pass less than this


def strip_owned(command) -> tuple[str, ...]:
    """`command` without the flags iwo-lite owns (both `--flag value` and `--flag=value` forms):
    the executable and every other argument (`--model`, `--max-turns`, `--add-dir`, ...) stay."""
    command = tuple(str(arg) for arg in command)
    if not command:
        return ()
    kept = [command[0]]
    index = 1
    while index < len(command):
        arg = command[index]
        name, has_value, _ = arg.partition("=")
        if name in OWNED_FLAGS and (arg == name or has_value and name.startswith("--")):
            index += 1
            takes = OWNED_FLAGS[name]
            if has_value:
                continue
            if takes == 1:
                index += 1
            elif takes == "?":
                if index < len(command) and not command[index].startswith("-"):
                    index += 1
            elif takes == "*":
                while index < len(command) and not command[index].startswith("-"):
                    index += 1
            continue
        kept.append(arg)
        index += 1
    return tuple(kept)


# -- the verdict schema ------------------------------------------------------------------------------

def verdict_schema(role: str) -> dict:
    """The JSON Schema of the role's verdict (the CLI's StructuredOutput tool checks it): only
    the role's verdicts; `verdict` and `summary` required; with `blocker` a non-blank `question`
    too (if/then: the CLI enforces it, verified in tests/test_claude_agent_real.py)."""
    verdicts = list(VERDICTS[role])
    schema: dict = {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": verdicts},
            "summary": {"type": "string", "description": "One paragraph: what you did, found or decided."},
            "question": {"type": "string", "description": "With verdict blocker: what the human must decide."},
        },
        "required": ["verdict", "summary"],
    }
    if "blocker" in verdicts:
        schema["if"] = {"properties": {"verdict": {"const": "blocker"}}, "required": ["verdict"]}
        schema["then"] = {"required": ["question"],
                          "properties": {"question": {"type": "string", "minLength": 1, "pattern": "\\S"}}}
    return schema


# -- sessions ------------------------------------------------------------------------------------------

_SESSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/iwo-lite/claude-session")


def session_id_for(namespace: str, spec_id: str, step: int, attempt: int) -> str:
    """The session id of one attempt: a UUID derived from (namespace, spec, dispatch, attempt),
    so the same attempt always gets the same id (and the CLI refuses to start it twice)."""
    return str(uuid.uuid5(_SESSION_NAMESPACE, json.dumps([namespace, spec_id, int(step), int(attempt)])))


# A run stopped on purpose got SIGINT, so its transcript says "The user doesn't want to proceed with this
# tool use": say who stopped it, so the model does not take it as a refusal of that tool.
CONTINUE_PROMPT = ("You are the {role} in a six-role coding loop; you were interrupted. iwo-lite stopped or lost "
                   "your earlier run (a timeout, a stall or a restart); no person refused any tool, so run again "
                   "what you still need. Continue the same task from where you left off, and end with your "
                   "verdict.\n")


def continue_prompt(role: str) -> str:
    return CONTINUE_PROMPT.format(role=role)


def project_dir_name(cwd: str) -> str:
    """The CLI's name for a working directory under projects/: every character that is not
    [A-Za-z0-9] (per UTF-16 unit) -> '-'; over 200 characters: the first 200, '-', and a base-36
    hash of the path (the CLI's own rule, read from 2.1.197)."""
    units = cwd.encode("utf-16-le")
    codes = [int.from_bytes(units[i:i + 2], "little") for i in range(0, len(units), 2)]
    name = "".join(chr(c) if c < 128 and chr(c).isalnum() else "-" for c in codes)
    if len(name) <= 200:
        return name
    value = 0
    for code in codes:
        value = (value * 31 + code) & 0xFFFFFFFF
    if value >= 2**31:
        value -= 2**32
    value = abs(value)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        value, rest = divmod(value, 36)
        text = digits[rest] + text
        if not value:
            break
    return f"{name[:200]}-{text}"


# -- progress from the stream ------------------------------------------------------------------------

# $ per million tokens: input, output, cache write, cache read
PRICES: dict[str, tuple[float, float, float, float]] = {
    "opus": (5.0, 25.0, 6.25, 0.5),
    "sonnet": (3.0, 15.0, 3.75, 0.3),
    "haiku": (1.0, 5.0, 1.25, 0.1),
}
SYNTHETIC = "<synthetic>"  # the model of the assistant line the CLI writes for an API error


def estimate_cost(model: str | None, usage: Mapping) -> float:
    """The cost of one message's `usage` at the model family's prices; 0 for an unknown model."""
    family = next((name for name in PRICES if name in (model or "").lower()), None)
    if family is None or not isinstance(usage, Mapping):
        return 0.0
    prices = PRICES[family]
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(_count(usage.get(key)) * price for key, price in zip(keys, prices)) / 1_000_000


def tool_summary(name: str, tool_input: object, cwd: str | None = None, limit: int = 80) -> str:
    """A tool call in a few words: "Bash: pytest -q", "Write: src/app.py", "Read: README.md", "Grep"."""
    detail = None
    if isinstance(tool_input, dict):
        if name == "Bash":
            detail = tool_input.get("command")
        elif name in ("Write", "Edit", "MultiEdit", "Read", "NotebookEdit"):
            path = tool_input.get("file_path") or tool_input.get("notebook_path")
            detail = relative(path, cwd) if isinstance(path, str) else None
    return clip(f"{name}: {detail}" if isinstance(detail, str) and detail.strip() else name, limit)


class StreamReader:
    """Follows Claude Code's stream-json stdout as it grows.

    `feed(data)` takes the next bytes (partial lines are kept until their newline); `read_new(path)`
    reads what was appended to the file since the last call (it keeps the offset: nothing is
    read or parsed twice, so calling it every second on a 20 MB stream is cheap). Lines that are
    not JSON are ignored; `user` lines (tool results, possibly large) are skipped unparsed.

    `progress` = {"turns", "tool", "tokens", "cost_usd"}: turns = distinct assistant messages
    (not the CLI's "<synthetic>" error messages); tool = the last tool call in a few words;
    tokens and cost_usd from each message's usage (as of its start: the output tokens and the
    cost are estimates) until the result line, whose exact totals then replace them.
    Also: `session_id` and `cwd` (from the init line), `rate_limit` (resetsAt of a rejected
    rate_limit_event, epoch seconds), `api_retry` (the last api_retry event), `result`.
    """

    def __init__(self) -> None:
        self._tail = Tail()  # the file read_new follows
        self.lines = 0  # complete lines seen
        self.session_id: str | None = None
        self.cwd: str | None = None
        self.model: str | None = None
        self.rate_limit: float | None = None
        self.rate_limit_info: dict | None = None
        self.api_retry: dict | None = None
        self.result: dict | None = None
        self._partial = b""
        self._messages: set[str] = set()
        self._turns = 0
        self._tokens = 0
        self._cost = 0.0
        self._tool: str | None = None

    @property
    def progress(self) -> dict:
        return {"turns": self._turns, "tool": self._tool, "tokens": self._tokens, "cost_usd": round(self._cost, 6)}

    def read_new(self, path: str | os.PathLike) -> bool:
        """Read what was appended to `path` since the last call; True when there was something."""
        data = self._tail.appended(path)
        if data:
            self.feed(data)
        return bool(data)

    @property
    def offset(self) -> int:
        """Bytes of the file read so far (read_new)."""
        return self._tail.offset

    def feed(self, data: bytes) -> None:
        buffer = self._partial + data if self._partial else data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._line(buffer[start:end])
            start = end + 1
        self._partial = buffer[start:]
        # the result line is the last one; should it come without its newline, take it now
        if self._partial.startswith(b'{"type":"result"') and self._partial.rstrip().endswith(b"}"):
            if self._line(self._partial):
                self._partial = b""

    def flush(self) -> None:
        """The output is complete: read a last line that has no newline."""
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> bool:
        raw = raw.strip()
        if not raw.startswith(b"{"):
            return False
        if raw.startswith(b'{"type":"user"'):
            self.lines += 1
            return True
        try:
            event = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        self.lines += 1
        kind = event.get("type")
        if kind == "assistant":
            self._assistant(event)
        elif kind == "system":
            if event.get("subtype") == "init":
                self.session_id = _str(event.get("session_id")) or self.session_id
                self.cwd = _str(event.get("cwd")) or self.cwd
                self.model = _str(event.get("model")) or self.model
            elif event.get("subtype") == "api_retry":
                self.api_retry = {k: event.get(k) for k in ("attempt", "max_retries", "retry_delay_ms",
                                                            "error_status", "error")}
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info")
            if isinstance(info, dict) and info.get("status") == "rejected":
                self.rate_limit_info = info
                resets = info.get("resetsAt")
                self.rate_limit = float(resets) if _is_number(resets) else None
        elif kind == "result":
            self._result(event)
        return True

    def _assistant(self, event: dict) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            return
        model = _str(message.get("model"))
        if model == SYNTHETIC:
            return
        message_id = _str(message.get("id")) or _str(event.get("uuid")) or str(self.lines)
        if message_id not in self._messages:
            self._messages.add(message_id)
            if self.result is None:
                self._turns += 1
                usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
                self._tokens += sum(int(_count(usage.get(key))) for key in
                                    ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                                     "cache_read_input_tokens"))
                self._cost += estimate_cost(model, usage)
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                self._tool = tool_summary(str(block.get("name") or "?"), block.get("input"), self.cwd)

    def _result(self, event: dict) -> None:
        self.result = event
        if checked_count(event.get("num_turns")) is not None:
            self._turns = int(event["num_turns"])
        cost, _ = checked_cost(event.get("total_cost_usd"))
        if cost is not None:  # else the estimate stays: the final answer says the cost is unknown
            self._cost = cost
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._tokens = sum(int(_count(usage.get(key))) for key in
                               ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                                "cache_read_input_tokens"))
        self.session_id = _str(event.get("session_id")) or self.session_id


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> float:
    """A token count the agent reported, when believable (numbers.checked_count), else 0."""
    return float(checked_count(value) or 0)


# -- reading the final stdout ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamScan:
    """What `scan_stream` found in a finished stream-json stdout."""

    result: dict | None = None
    session_id: str | None = None
    cwd: str | None = None
    limit_rejected: bool = False
    resets_at: float | None = None


def scan_stream(stdout: str) -> StreamScan:
    """The result line (the last one), the init line (the first) and any rejected
    rate_limit_event of a stream-json stdout, parsing only those lines."""
    session_id = cwd = None
    first = stdout[: stdout.find("\n")] if "\n" in stdout else stdout
    if first.lstrip().startswith('{"type":"system"'):
        init = _loads(first)
        if init and init.get("subtype") == "init":
            session_id, cwd = _str(init.get("session_id")), _str(init.get("cwd"))
    result = None
    end = len(stdout)
    while end > 0 and result is None:
        start = stdout.rfind("\n", 0, end) + 1
        line = stdout[start:end].strip()
        end = start - 1
        if line.startswith("{") and ('"type":"result"' in line or '"type": "result"' in line):
            candidate = _loads(line)
            if candidate and candidate.get("type") == "result":
                result = candidate
    if result is None and stdout.lstrip().startswith("{"):  # one (pretty-printed) result object
        candidate = _loads(stdout)
        if candidate and candidate.get("type", "result") == "result" and "is_error" in candidate:
            result = candidate
    rejected, resets_at = False, None
    at = stdout.find('"rate_limit_event"')
    while at >= 0:
        start = stdout.rfind("\n", 0, at) + 1
        stop = stdout.find("\n", at)
        stop = len(stdout) if stop < 0 else stop
        event = _loads(stdout[start:stop])
        info = (event or {}).get("rate_limit_info")
        if isinstance(info, dict) and info.get("status") == "rejected":
            rejected = True
            resets_at = float(info["resetsAt"]) if _is_number(info.get("resetsAt")) else resets_at
        at = stdout.find('"rate_limit_event"', stop)
    return StreamScan(result, session_id, cwd, rejected, resets_at)


def _loads(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- the agent -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaudeAgent:
    """Claude Code as an agent kind (implements agents.base.Agent)."""

    command: tuple[str, ...]  # agent.command with the owned flags stripped
    permissions: dict[str, str] = field(default_factory=dict)  # by role: read | edit | run | full
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by role
    models: dict[str, str | None] = field(default_factory=dict)  # by role

    name = "claude"
    streams = True  # stdout is stream-json: progress can be read while it runs
    # a run stopped on purpose (timeout, stall, cancel) gets SIGINT first: the CLI aborts and makes no
    # further API call, where on SIGTERM during a tool that ran a few seconds it asks for one more turn
    interrupt_first = True
    caps_budget = True  # --max-budget-usd

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", strip_owned(self.command))
        for role, profile in self.permissions.items():
            if profile is not None and profile not in PROFILES:
                raise ValueError(f"roles.{role}.permissions: expected one of {', '.join(PROFILES)}, got {profile!r}")

    def profile(self, role: str) -> str:
        return self.permissions.get(role) or DEFAULT_PERMISSIONS.get(role, "read")

    def argv(self, role: str, *, session: Session | None = None, budget_left_usd: float | None = None,
             run_dir: Path | None = None) -> list[str]:
        argv = list(self.command)
        argv += ["-p", "--output-format", "stream-json", "--verbose",
                 "--json-schema", json.dumps(verdict_schema(role), separators=(",", ":"))]
        if session is not None:
            argv += session.flags()
        argv += PROFILES[self.profile(role)]
        if budget_left_usd is not None and _is_number(budget_left_usd):
            argv += ["--max-budget-usd", _dollars(max(float(budget_left_usd), MIN_BUDGET_USD))]
        argv += list(self.extra_args.get(role, ()))
        model = self.models.get(role)
        return argv + ["--model", model] if model else argv

    def env(self) -> dict[str, str]:
        return {
            # The CLI retries an API error itself, 10 times by default (11 requests over ~3 min),
            # before iwo-lite sees anything. With 2, every error ends within ~3 requests (~2 s of
            # backoff; repeated 529s end after 3 whatever this says), and iwo-lite's own
            # classification acts: a durable pause for 529/429, a gate for 401, a counted retry
            # (resuming the session) for 500.
            "CLAUDE_CODE_MAX_RETRIES": "2",
            # no extra (paid) session-title request per run
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def files(self, role: str) -> dict[str, str]:
        return {}  # the verdict schema goes on the command line

    def session(self, key: SessionKey, resume_from: str | None, cwd, env: Mapping[str, str]) -> Session:
        """A session id of the attempt's own (session_id_for); it forks `resume_from` when that
        session's transcript is on this machine."""
        own = session_id_for(key.namespace, key.spec_id, key.step, key.attempt)
        if resume_from and self.transcript_path(resume_from, cwd, env).exists():
            return Session(own, resume_from)
        return Session(own)

    def stdin(self, prompt: str, role: str, session: Session | None = None) -> str:
        """The prompt, or CONTINUE_PROMPT when the attempt continues an earlier session."""
        if session is not None and session.resume_from:
            return continue_prompt(role)
        return prompt

    def parse(self, role: str, stdout: str, exit_code: int | None, stderr_tail: str = "", *,
              env: Mapping[str, str] | None = None) -> AgentAnswer:
        scan = scan_stream(stdout or "")
        if scan.result is None:
            return answer_without_result(exit_code, stderr_tail, printed=bool((stdout or "").strip()),
                                         session_id=scan.session_id)
        return answer_from_result(role, scan.result, exit_code, stderr_tail, resets_at=scan.resets_at,
                                  limit_rejected=scan.limit_rejected, cwd=scan.cwd)

    def transcript_path(self, session_id: str, cwd: str | os.PathLike, env: Mapping[str, str]) -> Path:
        """Where the CLI keeps the session when run in `cwd` with environment `env`:
        $CLAUDE_CONFIG_DIR/projects/... when set, else $HOME/.claude/projects/<cwd's name>/<id>.jsonl
        (the cwd with symlinks resolved, as the CLI sees it)."""
        config_dir = env.get("CLAUDE_CONFIG_DIR") or ""
        if config_dir:
            base = Path(config_dir).expanduser()
        else:
            base = Path(env.get("HOME") or os.path.expanduser("~")) / ".claude"
        real = unicodedata.normalize("NFC", os.path.realpath(os.fspath(cwd)))
        return base / "projects" / project_dir_name(real) / f"{session_id}.jsonl"

    def stream_reader(self) -> StreamReader:
        return StreamReader()

    def tool_events(self, stdout_text: str) -> list[ToolEvent]:
        """The tool-call timeline of a stream-json stdout (agents/claude_events.py)."""
        from iwo_lite.agents.claude_events import tool_events

        return tool_events(stdout_text)

    def writable_state(self, env: Mapping[str, str]) -> list[str]:
        """~/.claude (or $CLAUDE_CONFIG_DIR): transcripts, for resume; ~/.claude.json: its settings."""
        home = env.get("HOME") or os.path.expanduser("~")
        config_dir = env.get("CLAUDE_CONFIG_DIR") or os.path.join(home, ".claude")
        return [str(Path(config_dir).expanduser()), os.path.join(home, ".claude.json")]

    def checks(self, config, roles: list[str]) -> list[tuple[bool, str, str]]:
        """The command on PATH, each role's permission profile, the root/IS_SANDBOX refusal."""
        found = shutil.which(self.command[0]) if self.command else None
        results = [(bool(found), f"agent command (claude): {self.command[0]}" + (f" -> {found}" if found else
                                                                                  " not found"),
                    "install Claude Code, or set agent.command (or agents.claude.command) in the config")]
        shown = ", ".join(f"{role} {self.profile(role)}" for role in roles)
        results.append((True, f"agent kind: claude; permissions: {shown}", ""))
        refused = self.refused(config, roles)
        if refused:
            what, _, fix = refused.partition("; ")
            results.append((False, what, fix))
        return results

    def refused(self, config, roles: list[str]) -> str | None:
        from iwo_lite import sandbox

        return full_profile_refused(config, roles, sandboxed=sandbox.choose(config.agent.sandbox).on)


def _dollars(value: float) -> str:
    """A positive amount without an exponent: 0.01, 1.2, 12.3456."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "0") else f"{MIN_BUDGET_USD}"


def from_config(config, roles: list[str] | None = None) -> ClaudeAgent:
    """Claude Code for `roles` (default: all): [agents.claude] command, else agent.command."""
    agents = getattr(config, "agents", None)
    command = agents.command("claude", config.agent) if agents is not None else config.agent.command
    roles = {role: config.roles[role] for role in (roles if roles is not None else config.roles)}
    return ClaudeAgent(
        command=tuple(command),
        permissions={role: getattr(rc, "permissions", None) or DEFAULT_PERMISSIONS.get(role, "read")
                     for role, rc in roles.items()},
        extra_args={role: tuple(rc.extra_args) for role, rc in roles.items()},
        models={role: rc.model for role, rc in roles.items()},
    )


__all__ = ["PROFILES", "DEFAULT_PERMISSIONS", "OWNED_FLAGS", "CONTINUE_PROMPT", "ClaudeAgent", "Session", "SessionKey",
           "StreamReader", "StreamScan", "continue_prompt", "estimate_cost", "from_config", "project_dir_name",
           "scan_stream", "session_id_for", "strip_owned", "tool_summary", "verdict_schema"]


def full_profile_refused(config, roles: list[str] | None = None, sandboxed: bool = False) -> str | None:
    """Why Claude Code would refuse a role's "full" profile here (as root without IS_SANDBOX=1), or None.
    `sandboxed`: the agents run in iwo-lite's sandbox, which sets IS_SANDBOX=1 inside (it is one)."""
    full = [role for role, rc in config.roles.items() if roles is None or role in roles
            if (getattr(rc, "permissions", None) or DEFAULT_PERMISSIONS[role]) == "full"]
    if not full or sandboxed or os.geteuid() != 0 or os.environ.get("IS_SANDBOX") == "1":
        return None
    return (f'roles.{full[0]}.permissions = "full": running as root, Claude Code refuses '
            "--dangerously-skip-permissions unless IS_SANDBOX=1 is set; export IS_SANDBOX=1 if this machine "
            "is a sandbox, install bubblewrap (agent.sandbox = \"auto\" then confines the agents and sets it), "
            "or choose another profile")
