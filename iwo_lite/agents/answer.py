"""An agent's answer: the result object it printed, read into an AgentAnswer, and the class of
its error (what the dispatcher does next).

Owns reading Claude Code's result object (`--output-format json`, or the last line of
`stream-json`; plain JSON agents print the same object): `is_error` (a failure can come with
`subtype: "success"`), `subtype`, `api_error_status`, `errors`, `result`, `total_cost_usd`,
`usage`, `session_id`, `num_turns`, `permission_denials`, and the verdict — `structured_output`,
else the last fenced ```json block in `result` — checked against the role's verdicts. Also
what the CLI says on stderr when it printed no result (a refused flag, a session id in use).
Any failure is an AgentAnswer with `error` (one line that reads like the cause) and
`error_class` set, never an exception.

Error classes (`AgentAnswer.error_class`; None with a good answer):

    retry           an ordinary failed try: unreadable output, no or an unknown verdict, a
                    blocker without a question, an API 500 (or another 5xx, a 400), "Request
                    timed out", the process exiting without a result
    fatal           trying again cannot fix it: API 401/403, invalid API key, not logged in,
                    OAuth token expired/revoked, the model not found (404), a flag the CLI
                    refuses, an invalid --json-schema, --dangerously-skip-permissions refused
                    as root, an invalid session id — open a gate at once
    denied          the result lists permission_denials: never a pass on the agent's own
                    say-so; the verdict and summary are kept, `error` names the denied calls
    max_turns       error_max_turns (`--max-turns N` reached)
    budget          error_max_budget_usd (`--max-budget-usd` reached)
    overloaded      API 529 / "Overloaded"
    rate_limited    an API 429 that is not a usage limit
    usage_limit     a subscription's usage limit: a rejected rate_limit_event, or "You've hit
                    your session limit · resets 1:53pm (UTC)"; `resets_at` (epoch seconds)
                    from the event, else from that text, else None
    session_in_use  stderr "Session ID <id> is already in use": this attempt already ran
    no_session      "No conversation found with session ID: <id>": nothing to resume here

Numbers the agent reports are not trusted (iwo_lite/numbers.py): a cost that is not a finite
number >= 0 and at most MAX_CALL_USD is recorded as unknown (0 in every sum, `cost_note` says
what was reported); a token count that is not believable counts as 0.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from iwo_lite.numbers import checked_cost, checked_count
from iwo_lite.roles import VERDICTS
from iwo_lite.text import clean, clip

_FENCED_JSON = re.compile(r"```json[ \t]*\r?\n(.*?)```", re.DOTALL)

ERROR_CLASSES = ("retry", "fatal", "denied", "max_turns", "budget", "overloaded", "rate_limited",
                 "usage_limit", "session_in_use", "no_session")


@dataclass(frozen=True)
class AgentAnswer:
    """What one agent process produced. `error` is set when the attempt failed, and then
    `error_class` says what kind of failure it was (see the module docstring)."""

    verdict: str | None = None
    summary: str = ""
    question: str = ""
    result: str = ""
    cost_usd: float = 0.0
    session_id: str | None = None
    num_turns: int | None = None
    is_error: bool = False
    error: str | None = None
    error_class: str | None = None
    api_error_status: int | None = None
    denials: tuple = ()  # ({"tool": "Bash", "input": "python3 -m pytest"}, ...)
    resets_at: float | None = None  # usage_limit (and a 429 with a known reset): epoch seconds
    tokens: int = 0  # input + output + cache write + cache read tokens of the call
    cost_note: str | None = None  # the reported cost was not believable: cost_usd is 0, the cost unknown

    def __post_init__(self) -> None:
        # an error without a class is an ordinary failed try (e.g. a timeout built by the dispatcher)
        if self.error is not None and self.error_class is None:
            object.__setattr__(self, "error_class", "retry")
        if not isinstance(self.denials, tuple):  # read back from JSON: a list
            object.__setattr__(self, "denials", tuple(dict(d) for d in self.denials or ()))

    def to_json(self) -> dict:
        data = asdict(self)
        data["denials"] = [dict(d) for d in self.denials]
        return data


# -- parsing ---------------------------------------------------------------------------------------

def parse_agent_output(role: str, stdout: str, exit_code: int | None, stderr_tail: str = "") -> AgentAnswer:
    """A plain JSON agent's stdout (one result object) into an AgentAnswer; any failure becomes
    an AgentAnswer with `error` and `error_class` set."""
    text = stdout.strip()
    if not text:
        return answer_without_result(exit_code, stderr_tail, printed=False)
    try:
        payload = json.loads(text)
    except ValueError:
        refused = classify_stderr(stderr_tail)
        if refused is not None:
            return AgentAnswer(error=refused[1], error_class=refused[0])
        return AgentAnswer(error=f"agent output is not JSON (exit status {exit_code}): {clip(text)}",
                           error_class="retry")
    if not isinstance(payload, dict):
        return AgentAnswer(error="agent output is JSON but not a result object", error_class="retry")
    return answer_from_result(role, payload, exit_code, stderr_tail)


def answer_from_result(role: str, payload: dict, exit_code: int | None, stderr_tail: str = "", *,
                       resets_at: float | None = None, limit_rejected: bool = False,
                       cwd: str | None = None) -> AgentAnswer:
    """A result object into an AgentAnswer.

    `resets_at` / `limit_rejected`: a rejected rate_limit_event was seen in the stream (with
    that resetsAt); `cwd`: the agent's working directory (denied paths are shown relative to it).
    """
    status = payload.get("api_error_status")
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    cost, cost_note = checked_cost(payload.get("total_cost_usd"), missing_ok=True)
    base = dict(
        result=clean(str(payload.get("result") or "")),
        cost_usd=cost or 0.0,
        cost_note=cost_note,
        session_id=clean(payload["session_id"]) if isinstance(payload.get("session_id"), str) else None,
        num_turns=int(payload["num_turns"]) if checked_count(payload.get("num_turns")) is not None else None,
        is_error=bool(payload.get("is_error")),
        api_error_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        denials=denials_of(payload.get("permission_denials"), cwd),
        tokens=usage_tokens(usage),
    )
    if payload.get("is_error") or exit_code not in (0, None):
        error_class, error, resets = _failure(payload, exit_code, stderr_tail, resets_at, limit_rejected)
        return AgentAnswer(**base, error=error, error_class=error_class, resets_at=resets)
    verdict, summary, question, problem = _verdict_of(role, payload)
    if base["denials"]:
        error = "permission denied: " + ", ".join(f"{d['tool']}({clip(d['input'], 60)})" if d["input"] else d["tool"]
                                                  for d in base["denials"])
        error = clip(error, 300) + (f"; and {problem}" if problem else "")
        return AgentAnswer(**base, verdict=verdict, summary=summary, question=question, error=error,
                           error_class="denied")
    if problem:
        return AgentAnswer(**base, error=problem, error_class="retry")
    return AgentAnswer(**base, verdict=verdict, summary=summary, question=question)


def answer_without_result(exit_code: int | None, stderr_tail: str = "", *, printed: bool,
                          session_id: str | None = None) -> AgentAnswer:
    """The process printed no result object: what stderr says, else an ordinary failed try."""
    refused = classify_stderr(stderr_tail)
    if refused is not None:
        return AgentAnswer(error=refused[1], error_class=refused[0], session_id=session_id)
    said = _stderr_line(stderr_tail)
    if printed:
        error = f"agent exited with status {exit_code} before printing its result"
    else:
        error = f"agent exited with status {exit_code} and printed nothing"
    return AgentAnswer(error=error + (f": {said}" if said else ""), error_class="retry", session_id=session_id)


# -- what went wrong -------------------------------------------------------------------------------

_SESSION_IN_USE = re.compile(r"Session ID (\S+) is already in use")
_NO_SESSION = re.compile(r"No conversation found with session ID:? (\S+)")
_CLI_ERROR = re.compile(r"^\s*(?:error|Error): (.+?)\s*$", re.MULTILINE)
_ROOT_REFUSAL = "cannot be used with root/sudo privileges"
_HIT_LIMIT = re.compile(r"you(?:'|’)ve hit your\b[^·\n]*?\blimit", re.IGNORECASE)
_OLD_LIMIT = re.compile(r"usage limit reached\|(\d{9,})", re.IGNORECASE)  # older CLIs: "...|<epoch>"
_API_ERROR = re.compile(r"API Error: (\d{3})\s+([^.·\n]*)")
_AUTH_TEXT = (("invalid api key", "invalid API key"), ("not logged in", "not logged in"),
              ("oauth token has expired", "OAuth token expired"), ("oauth token has been revoked", "OAuth token revoked"),
              ("oauth token revoked", "OAuth token revoked"))


def classify_stderr(stderr: str) -> tuple[str, str] | None:
    """(error class, error) for what the CLI writes on stderr when it refuses to run; None otherwise."""
    if not stderr:
        return None
    match = _SESSION_IN_USE.search(stderr)
    if match:
        return "session_in_use", f"session {match.group(1)} is already in use (this attempt ran before)"
    match = _NO_SESSION.search(stderr)
    if match:
        return "no_session", f"no session {match.group(1)} to resume here (no transcript for this working directory)"
    if _ROOT_REFUSAL in stderr:
        return "fatal", ("--dangerously-skip-permissions refused when running as root (permissions = \"full\"): "
                         "set IS_SANDBOX=1 in the daemon's environment, or choose another profile")
    if "Invalid session ID" in stderr:
        return "fatal", "invalid session id (not a UUID)"
    match = _CLI_ERROR.search(stderr)
    if match:  # "error: ..." is the argument parser's; "Error: ... --flag ..." a flag's own check
        said = clip(match.group(1), 200)
        if "--json-schema" in said:
            return "fatal", f"invalid --json-schema: {said}"
        if match.group(0).lstrip().startswith("error:") or "--" in said:
            return "fatal", f"claude refused its arguments: {said}"
    return None


def _failure(payload: dict, exit_code: int | None, stderr_tail: str, resets_at: float | None,
             limit_rejected: bool) -> tuple[str, str, float | None]:
    """(error class, error, resets_at) of a result object that says the call failed."""
    subtype = str(payload.get("subtype") or "")
    status = payload.get("api_error_status")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    text = str(payload.get("result") or "")
    errors = [str(e) for e in payload.get("errors") or [] if e]
    detail = text or "; ".join(errors)
    lowered = detail.lower()
    refused = classify_stderr(stderr_tail)
    if refused is not None and refused[0] in ("session_in_use", "no_session"):
        return refused[0], refused[1], None
    if subtype == "error_max_turns":
        match = re.search(r"\((\d+)\)", detail)
        return "max_turns", f"reached --max-turns ({match.group(1) if match else '?'})", None
    if subtype == "error_max_budget_usd":
        match = re.search(r"\(\$([^)]*)\)", detail)
        return "budget", f"reached --max-budget-usd (${match.group(1) if match else '?'})", None
    if subtype == "error_max_structured_output_retries":
        return "retry", f"no valid verdict: {clip(detail, 200) or 'structured output rejected by the schema'}", None
    match = _NO_SESSION.search(detail)
    if match:
        return "no_session", f"no session {match.group(1)} to resume here (no transcript for this working directory)", None
    old = _OLD_LIMIT.search(detail)
    if _HIT_LIMIT.search(text) or old or (limit_rejected and "not your usage limit" not in lowered):
        resets = resets_at if resets_at is not None else (float(old.group(1)) if old else parse_reset_time(text))
        return "usage_limit", "usage limit; " + (f"resets {_iso(resets)}" if resets is not None
                                                  else "reset time unknown"), resets
    for needle, name in _AUTH_TEXT:
        if needle in lowered:
            return "fatal", name, None
    if status in (401, 403) or "failed to authenticate" in lowered:
        return "fatal", f"authentication failed: {clip(detail, 200)}", None
    if status == 529 or "overloaded" in lowered:
        return "overloaded", "API 529 overloaded", None
    if status == 429 or "(429)" in detail or "temporarily limiting requests" in lowered:
        why = " (the server is temporarily limiting requests)" if "temporarily limiting" in lowered else ""
        return "rate_limited", f"API 429 rate limited{why}", resets_at
    if status == 404:
        return "fatal", f"API 404: {clip(detail, 200)}", None
    if "request timed out" in lowered:
        return "retry", "API request timed out", None
    match = _API_ERROR.search(detail)
    if match:
        words = match.group(2).strip().lower()
        return "retry", f"API {match.group(1)} {words}".strip(), None
    if status is not None:
        return "retry", f"API {status}: {clip(detail, 200)}", None
    if not payload.get("is_error"):  # exit status != 0, yet the result object says success
        return "retry", (f"agent call failed (exit status {exit_code}) although its result says "
                         f"{subtype or 'nothing'}: {clip(detail)}"), None
    if refused is not None:
        return refused[0], refused[1], None
    kind = f" ({subtype})" if subtype and subtype != "success" else ""
    return "retry", f"agent call failed{kind}: {clip(detail) or 'no detail'}", None


def _stderr_line(stderr: str) -> str:
    """The most telling line of a stderr tail."""
    match = _CLI_ERROR.search(stderr or "")
    if match:
        return clip(match.group(1), 200)
    lines = [line for line in (stderr or "").splitlines() if line.strip()]
    return clip(lines[-1], 200) if lines else ""


# -- reset times ----------------------------------------------------------------------------------

_RESETS = re.compile(
    r"resets\s+(?:at\s+)?(?:(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2}),?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap])\.?m\.?(?:\s*\((?P<tz>[^)]+)\))?",
    re.IGNORECASE)
_MONTHS = {name: index for index, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
RESET_GRACE_S = 3600.0  # a stated reset up to this long ago is taken as just passed (minute rounding, clock skew)


def parse_reset_time(text: str, now: float | None = None) -> float | None:
    """The epoch seconds of "resets 1:53pm (UTC)", "resets 11am (Europe/Paris)" or "resets Nov 27,
    9am (UTC)" in `text`: the next such time after `now` (a time up to RESET_GRACE_S ago counts
    as just passed and is returned as is). None when there is no such phrase or it does not parse."""
    match = _RESETS.search(text or "")
    if not match:
        return None
    now = _dt.datetime.now(_dt.timezone.utc).timestamp() if now is None else now
    tz = _zone(match.group("tz"))
    if tz is None:
        return None
    hour, minute = int(match.group("hour")), int(match.group("minute") or 0)
    if not (1 <= hour <= 12 and minute < 60):
        return None
    hour = hour % 12 + (12 if match.group("ampm").lower() == "p" else 0)
    clock = _dt.time(hour, minute)
    today = _dt.datetime.fromtimestamp(now, tz).date()
    if match.group("mon"):
        month = _MONTHS.get(match.group("mon")[:3].lower())
        if month is None:
            return None
        for year in (today.year, today.year + 1):
            try:
                moment = _dt.datetime.combine(_dt.date(year, month, int(match.group("day"))), clock, tz)
            except ValueError:
                continue
            if moment.timestamp() > now - RESET_GRACE_S:
                return moment.timestamp()
        return None
    for day in (today, today + _dt.timedelta(days=1)):
        moment = _dt.datetime.combine(day, clock, tz).timestamp()
        if moment > now - RESET_GRACE_S:
            return moment
    return None


def _zone(name: str | None):
    if not name:
        return _dt.datetime.now().astimezone().tzinfo  # the CLI prints local time: ours, same environment
    name = name.strip()
    if name.upper() in ("UTC", "GMT", "Z"):
        return _dt.timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- denials, tokens, the verdict -----------------------------------------------------------------

def short_input(tool: str, tool_input: object, cwd: str | None = None, limit: int = 120) -> str:
    """A tool call's input in a few words: Bash -> the command; Write/Edit/Read -> the file
    (relative to `cwd` when inside it); anything else -> its JSON, clipped."""
    if isinstance(tool_input, dict):
        if tool in ("Bash", "exec_command") and isinstance(tool_input.get("command"), str):
            return clip(tool_input["command"], limit)
        for key in ("file_path", "notebook_path", "path"):
            if isinstance(tool_input.get(key), str):
                return clip(relative(tool_input[key], cwd), limit)
    try:
        text = json.dumps(tool_input, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = str(tool_input)
    return clip(text, limit)


def relative(path: str, cwd: str | None) -> str:
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1:]
    return path


def denials_of(value: object, cwd: str | None = None) -> tuple:
    """`permission_denials` as ({"tool", "input"}, ...), duplicates dropped, in order."""
    found: list[dict] = []
    for denial in value if isinstance(value, list) else []:
        if not isinstance(denial, dict):
            continue
        tool = clean(str(denial.get("tool_name") or "?"))
        entry = {"tool": tool, "input": short_input(tool, denial.get("tool_input"), cwd)}
        if entry not in found:
            found.append(entry)
    return tuple(found)


def usage_tokens(usage: object) -> int:
    """input + output + cache write + cache read tokens of a `usage` object."""
    if not isinstance(usage, dict):
        return 0
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(checked_count(usage.get(key)) or 0 for key in keys)


def _verdict_of(role: str, payload: dict) -> tuple[str | None, str, str, str | None]:
    """(verdict, summary, question, what is wrong with it or None)."""
    verdict_obj = _find_verdict(payload)
    if verdict_obj is None:
        return None, "", "", ("agent answer has no verdict (no structured_output and no fenced ```json block "
                              "in result)")
    verdict = verdict_obj.get("verdict")
    allowed = VERDICTS[role]
    if verdict not in allowed:
        return None, "", "", f"unknown verdict {verdict!r} for {role} (expected one of {', '.join(allowed)})"
    question = clean(str(verdict_obj.get("question") or "")).strip()
    if verdict == "blocker" and not question:
        return None, "", "", "verdict blocker without a question"
    return verdict, clean(str(verdict_obj.get("summary") or "")).strip(), question, None


def _find_verdict(payload: dict) -> dict | None:
    structured = payload.get("structured_output")
    if isinstance(structured, dict) and "verdict" in structured:
        return structured
    result = payload.get("result")
    blocks = _FENCED_JSON.findall(result) if isinstance(result, str) else []
    if not blocks:
        return None
    try:  # the LAST block is the verdict; if it does not parse, the answer is unreadable
        candidate = json.loads(blocks[-1])
    except ValueError:
        return None
    return candidate if isinstance(candidate, dict) and "verdict" in candidate else None


