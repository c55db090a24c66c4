#!/usr/bin/env python3
"""A fake ``claude -p --output-format json`` executable for iwo-lite's tests.

Stdlib only. Run it as the agent command, e.g.::

    [sys.executable, "tests/fake_claude.py", "-p", "--output-format", "json"]

Extra arguments (``--model M``, a role's ``extra_args``) are accepted and ignored,
but recorded in the invocation log.

What one invocation does
------------------------
1. Reads all of stdin (the prompt).
2. Works out its behaviour (below), then appends a ``start`` line to the log
   ``$FAKE_CLAUDE_LOG`` (if set) before anything slow; acts; appends an ``end``
   line just before exiting (a process killed by a signal has no ``end`` line).
3. Writes Claude Code's JSON result object (or the misbehaviour asked for) to
   stdout and exits.

Environment
-----------
IWO_ROLE, IWO_SPEC_ID, IWO_WORKFLOW_ID, IWO_ATTEMPT   as set by the daemon
FAKE_CLAUDE_LOG         JSON-lines invocation log (appended; O_APPEND, one write per line)
FAKE_CLAUDE_LOG_PROMPT  "1": also put the whole prompt in each log line (key "prompt")
FAKE_CLAUDE_SCENARIO    path of a scenario JSON file (re-read on every invocation);
                        unset: every role succeeds at once with its default verdict
FAKE_CLAUDE_STATE       directory for the per-(spec, role) dispatch counters; default:
                        the directory of FAKE_CLAUDE_LOG, else
                        ``$TMPDIR/fake_claude_state_<uid>``

Log lines
---------
``{"event": "start"|"end", "role", "spec", "workflow", "attempt", "pid", "argv",
"cwd", "prompt_sha", "prompt_len", "t", "n", "mode"}`` plus ``"exit"`` on ``end``,
``"child_pid"`` in mode ``spawn_child``, ``"prompt"`` with FAKE_CLAUDE_LOG_PROMPT=1.
``attempt`` is an int when IWO_ATTEMPT is numeric (else the raw string or null);
``prompt_sha`` is the sha256 hex of the raw stdin bytes, ``prompt_len`` their
length in bytes; ``argv`` is ``sys.argv[1:]``; ``n`` is the dispatch number used
to pick the scenario entry (see below); ``t`` is ``time.time()``.

Scenario file
-------------
::

    {
      "default": {"sleep": 0, "cost": 0.01},
      "roles": {
        "reviewer": [{"verdict": "changes", "summary": "fix X"}, {"verdict": "approve"}],
        "tester":   [{"verdict": "pass", "sleep": 3}]
      },
      "specs": {"SPEC-ID": {"roles": {"tester": [{"mode": "hang"}]}}}
    }

``specs`` is optional: for that spec id, its ``roles`` lists replace the top-level
lists of the same role, and its ``default`` is merged over the top-level one.

Choosing the entry (the counting rule): a counter per (IWO_SPEC_ID, IWO_ROLE) is
kept in FAKE_CLAUDE_STATE and bumped under ``fcntl.flock``. It is incremented
ONLY when IWO_ATTEMPT is "1" (or unset/empty), i.e. once per new dispatch; a
retry (attempt 2, 3, ...) reuses the current count, so all attempts of one
dispatch use the same entry (if a retry arrives with the counter still at 0, it
counts as dispatch 1). Dispatch number n uses ``roles[role][n-1]``; once the
list is exhausted its last entry repeats. A role with no list (or an empty one)
uses ``{}`` i.e. the defaults.

The effective entry is ``default`` merged with the entry, then, if the entry has
``"attempts": {"<IWO_ATTEMPT>": {...}}`` for the current attempt, that override
merged on top. E.g. ``{"attempts": {"1": {"mode": "garbage"}}, "verdict":
"approve"}``: attempt 1 prints garbage, attempt 2 approves.

Entry keys (all optional)
-------------------------
verdict    default by role: planner/builder/deployer/docs "done", reviewer
           "approve", tester "pass" (any other role "done")
summary    default "fake <role> summary"
question   put in the verdict object when given; with verdict "blocker" and no
           question, defaults to "fake <role> question?". Setting verdict,
           summary or question to null omits that key from the verdict object.
ignore_term  true: the agent ignores SIGTERM (only SIGKILL ends it)
sleep      seconds to wait before answering (small chunks; SIGTERM/SIGINT kill
           at once: both are reset to SIG_DFL)
cost       total_cost_usd (default 0.01), reported in every mode that prints JSON
code       exit code for mode "exit" (default 3)
bytes      filler size for mode "huge" (default 5_000_000)
lines      stderr line count for mode "stderr_noise" (default 20_000, ~1.3 MB)
write      {"relative/path": "content", ...}: files the agent writes in its cwd
           (parent directories made; a null content deletes the file), after
           its `sleep` and before it answers, in every mode that answers
           (not in hang, spawn_child, exit, garbage). Paths are relative to
           the cwd and may not leave it.
run        "shell command": after writing, /bin/sh -c it in the cwd (stdin /dev/null) and log
           {"exit", "output"} (stdout and stderr as one stream, the last 4000 characters) as "run" in the
           end line; its failure is not the agent's
git_commit "message": after writing, the agent commits everything in its cwd
           itself (`git add -A` + `git commit -m message`, as
           "Fake Agent <fake-agent@example.invalid>", hooks and signing off;
           nothing to commit is not an error). The commit's sha is logged as
           "git_commit" in the end line.
mode       one of:
  ok              exit 0; the result text holds an earlier DECOY ```json block
                  ({"verdict": "decoy", ...}) and the real verdict as the LAST
                  fenced ```json block
  structured      exit 0; verdict object in "structured_output", result is prose
  is_error        exit 1; subtype "success", is_error true, result "API Error: 529 overloaded"
                  (entry["error_text"] / entry["api_error_status"] give another error)
  is_error_exit0  the same, but exit 0
  max_turns       exit 1; subtype "error_max_turns", is_error true,
                  errors ["max turns reached"], no "result" key
  garbage         exit 0; stdout "this is not json\\n"
  truncated       exit 0; stdout is the first half of the "ok" JSON object
  no_verdict      exit 0; valid result object whose result text has no json block
  exit            exit entry["code"], nothing on stdout
  hang            sleep until killed
  huge            like ok, with entry["bytes"] of filler before the verdict block
  stderr_noise    entry["lines"] lines on stderr, then like ok
  spawn_child     starts ``sleep 1000`` (subprocess.Popen, same process group,
                  stdin /dev/null, stdout/stderr inherited), logs its pid as
                  "child_pid" in the start line, then hangs
A bad scenario file or unknown mode: a message on stderr, exit 97.

Importable helpers: ``read_log(path)``, ``count_dispatches(path, role=None,
spec=None)``, ``write_scenario(path, scenario)``, ``command(*extra)``, ``SCRIPT``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

SCRIPT = Path(__file__).resolve()

DEFAULT_VERDICTS = {
    "planner": "done",
    "builder": "done",
    "reviewer": "approve",
    "tester": "pass",
    "deployer": "done",
    "docs": "done",
}

MODES = {
    "ok", "structured", "is_error", "is_error_exit0", "max_turns", "garbage",
    "truncated", "no_verdict", "exit", "hang", "huge", "stderr_noise", "spawn_child",
}

BAD_SCENARIO_EXIT = 97


# ---------------------------------------------------------------- helpers (importable)

def read_log(path) -> list[dict]:
    """All lines of an invocation log, parsed; a missing file is an empty log."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill mid-write; should not happen
    return out


def count_dispatches(path, role: str | None = None, spec: str | None = None) -> int:
    """Number of agent processes started ("start" events), optionally for one role/spec."""
    return sum(
        1
        for e in read_log(path)
        if e.get("event") == "start"
        and (role is None or e.get("role") == role)
        and (spec is None or e.get("spec") == spec)
    )


def write_scenario(path, scenario: dict) -> Path:
    """Write a scenario dict as JSON (atomically) and return the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(scenario), encoding="utf-8")
    os.replace(tmp, path)
    return path


def command(*extra: str) -> list[str]:
    """argv to configure as ``agent.command``: this script under the current Python."""
    return [sys.executable, str(SCRIPT), "-p", "--output-format", "json", *extra]


# ---------------------------------------------------------------- the executable

class BadScenario(Exception):
    pass


def _state_dir() -> Path:
    d = os.environ.get("FAKE_CLAUDE_STATE")
    if not d:
        log = os.environ.get("FAKE_CLAUDE_LOG")
        if log:
            d = os.path.dirname(os.path.abspath(log))
        else:
            d = os.path.join(tempfile.gettempdir(), f"fake_claude_state_{os.getuid()}")
    os.makedirs(d, exist_ok=True)
    return Path(d)


def _bump_counter(spec: str, role: str, new_dispatch: bool) -> int:
    name = f"fake_claude.{quote(spec, safe='')}.{quote(role, safe='')}.count"
    fd = os.open(_state_dir() / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 64).decode("ascii", "replace").strip()
        n = int(raw) if raw.isdigit() else 0
        if new_dispatch or n == 0:
            n += 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(n).encode())
        return n
    finally:
        os.close(fd)  # releases the lock


def _load_scenario() -> dict:
    path = os.environ.get("FAKE_CLAUDE_SCENARIO")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            sc = json.load(f)
    except (OSError, ValueError) as e:
        raise BadScenario(f"cannot read scenario {path}: {e}") from e
    if not isinstance(sc, dict):
        raise BadScenario(f"scenario {path}: top level must be an object")
    return sc


def _entry(sc: dict, spec: str, role: str, n: int, attempt: str) -> dict:
    default = dict(sc.get("default") or {})
    roles = dict(sc.get("roles") or {})
    per_spec = (sc.get("specs") or {}).get(spec)
    if per_spec:
        default.update(per_spec.get("default") or {})
        roles.update(per_spec.get("roles") or {})
    entries = roles.get(role) or []
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise BadScenario(f"roles.{role} must be a list of objects")
    entry = entries[min(n, len(entries)) - 1] if entries else {}
    if not isinstance(entry, dict):
        raise BadScenario(f"roles.{role}[{min(n, len(entries)) - 1}] must be an object")
    entry = dict(entry)
    attempts = entry.pop("attempts", None) or {}
    eff = {**default, **entry}
    eff.pop("attempts", None)
    override = attempts.get(str(attempt))
    if override:
        eff.update(override)
    mode = eff.setdefault("mode", "ok")
    if mode not in MODES:
        raise BadScenario(f"unknown mode {mode!r} for role {role}")
    return eff


def _verdict_obj(role: str, e: dict) -> dict:
    obj = {
        "verdict": e.get("verdict", DEFAULT_VERDICTS.get(role, "done")),
        "summary": e.get("summary", f"fake {role} summary"),
    }
    if "question" in e:
        obj["question"] = e["question"]
    elif obj["verdict"] == "blocker":
        obj["question"] = f"fake {role} question?"
    return {k: v for k, v in obj.items() if v is not None}


def _fence(obj: dict) -> str:
    return "```json\n" + json.dumps(obj, indent=2) + "\n```"


def _result(e: dict, role: str, started: float, prompt_len: int, **fields) -> dict:
    ms = int((time.time() - started) * 1000)
    text = fields.get("result", "")
    res = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": ms,
        "duration_api_ms": max(0, ms - 1),
        "num_turns": 3,
        "result": text,
        "session_id": str(uuid.uuid4()),
        "total_cost_usd": e.get("cost", 0.01),
        "usage": {
            "input_tokens": prompt_len // 4,
            "output_tokens": max(1, len(text) // 4),
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    res.update(fields)
    return res


def _ok_text(role: str, e: dict, filler: str = "") -> str:
    decoy = _fence({"verdict": "decoy", "summary": "an earlier block; take the last one"})
    return (
        f"I am the fake {role}. First, an example of the format:\n\n{decoy}\n\n"
        f"{filler}"
        f"Work finished. My verdict:\n\n{_fence(_verdict_obj(role, e))}\n"
    )


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.05, left))


def _hang() -> None:
    while True:
        time.sleep(0.05)


class _Log:
    def __init__(self, base: dict):
        self.path = os.environ.get("FAKE_CLAUDE_LOG")
        self.base = base

    def write(self, **fields) -> None:
        if not self.path:
            return
        line = (json.dumps({**fields, **self.base, "t": time.time(), **fields}) + "\n").encode()
        fd = os.open(self.path, os.O_APPEND | os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _write_files(files: dict) -> None:
    """The entry's "write": each path (relative to the cwd, never outside it) gets its content."""
    if not isinstance(files, dict):
        raise ValueError('"write" must be an object {"relative/path": "content"}')
    cwd = os.path.realpath(os.getcwd())
    for rel, content in files.items():
        path = os.path.realpath(os.path.join(cwd, rel))
        if os.path.isabs(rel) or not path.startswith(cwd + os.sep):
            raise ValueError(f"write: {rel!r} is not a path inside the cwd")
        if content is None:
            if os.path.lexists(path):
                os.unlink(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(str(content))


def _git_commit(message: str) -> str | None:
    """`git add -A` + `git commit -m message` in the cwd as the fake agent; the new HEAD (None
    when there was nothing to commit)."""
    ident = ["-c", "user.name=Fake Agent", "-c", "user.email=fake-agent@example.invalid",
             "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"]
    subprocess.run(["git", *ident, "add", "-A"], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet"], capture_output=True, stdin=subprocess.DEVNULL)
    if staged.returncode == 0:
        return None
    subprocess.run(["git", *ident, "commit", "-q", "--no-verify", "-m", message], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    return subprocess.run(["git", "rev-parse", "HEAD"], check=True, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL).stdout.strip()


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    started = time.time()
    raw = sys.stdin.buffer.read()
    prompt = raw.decode("utf-8", errors="replace")

    role = os.environ.get("IWO_ROLE") or ""
    spec = os.environ.get("IWO_SPEC_ID") or ""
    attempt_raw = os.environ.get("IWO_ATTEMPT") or ""
    attempt = int(attempt_raw) if attempt_raw.isdigit() else (attempt_raw or None)
    base = {
        "role": os.environ.get("IWO_ROLE"),
        "spec": os.environ.get("IWO_SPEC_ID"),
        "workflow": os.environ.get("IWO_WORKFLOW_ID"),
        "attempt": attempt,
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "prompt_sha": hashlib.sha256(raw).hexdigest(),
        "prompt_len": len(raw),
    }
    if os.environ.get("FAKE_CLAUDE_LOG_PROMPT") == "1":
        base["prompt"] = prompt
    base["env_names"] = sorted(os.environ)  # which variables the agent sees (never their values)
    log = _Log(base)

    try:
        sc = _load_scenario()
        n = _bump_counter(spec or "-", role or "-", attempt_raw in ("", "1"))
        e = _entry(sc, spec, role, n, attempt_raw or "1")
    except BadScenario as exc:
        log.write(event="start", n=None, mode="bad_scenario")
        print(f"fake_claude: {exc}", file=sys.stderr)
        log.write(event="end", n=None, mode="bad_scenario", exit=BAD_SCENARIO_EXIT)
        return BAD_SCENARIO_EXIT
    mode = e["mode"]
    base.update(n=n, mode=mode)

    if e.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "spawn_child":
        child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
        base["child_pid"] = child.pid
    log.write(event="start")

    def finish(code: int) -> int:
        log.write(event="end", exit=code)
        return code

    _sleep(float(e.get("sleep") or 0))
    plen = len(raw)

    if mode in ("hang", "spawn_child"):
        _hang()
    if mode == "exit":
        return finish(int(e.get("code", 3)))
    if mode == "garbage":
        _out("this is not json\n")
        return finish(0)
    try:
        _write_files(e.get("write") or {})
        if e.get("run"):
            done = subprocess.run(["/bin/sh", "-c", str(e["run"])], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace")
            base["run"] = {"exit": done.returncode, "output": done.stdout[-4000:]}
        if e.get("git_commit"):
            base["git_commit"] = _git_commit(str(e["git_commit"]))
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"fake_claude: write/git_commit failed: {exc}", file=sys.stderr)
        return finish(BAD_SCENARIO_EXIT)
    if mode in ("is_error", "is_error_exit0"):
        res = _result(e, role, started, plen, is_error=True, result=e.get("error_text", "API Error: 529 overloaded"),
                      api_error_status=e.get("api_error_status"))
        _out(json.dumps(res) + "\n")
        return finish(1 if mode == "is_error" else 0)
    if mode == "max_turns":
        res = _result(e, role, started, plen, subtype="error_max_turns", is_error=True,
                      errors=["max turns reached"])
        del res["result"]
        _out(json.dumps(res) + "\n")
        return finish(1)
    if mode == "structured":
        res = _result(e, role, started, plen,
                      result=f"The fake {role} finished; the verdict is in structured_output.",
                      structured_output=_verdict_obj(role, e))
        _out(json.dumps(res) + "\n")
        return finish(0)
    if mode == "no_verdict":
        res = _result(e, role, started, plen,
                      result=f"The fake {role} did some work but forgot to give a verdict.")
        _out(json.dumps(res) + "\n")
        return finish(0)
    if mode == "stderr_noise":
        lines = int(e.get("lines", 20_000))
        chunk = "".join(f"fake {role} noise line {i:08d} lorem ipsum dolor sit amet\n"
                        for i in range(lines))
        sys.stderr.write(chunk)
        sys.stderr.flush()
    filler = ""
    if mode == "huge":
        size = int(e.get("bytes", 5_000_000))
        unit = "filler text to make the result huge. "
        filler = (unit * (size // len(unit) + 1))[:size] + "\n\n"
    text = json.dumps(_result(e, role, started, plen, result=_ok_text(role, e, filler)))
    if mode == "truncated":
        _out(text[: len(text) // 2])
        return finish(0)
    _out(text + "\n")  # ok, huge, stderr_noise
    return finish(0)


if __name__ == "__main__":
    sys.exit(main())
