"""What the dashboard changes, through the same paths as the shell: submit, answer a gate, cancel,
resume, fork.

Owns turning a request's JSON into one of the shell's operations and its outcome into an HTTP
status. Answers (approve / reject / revise) go through gates.answer_from_shell and a submit
through intake.submit, in this process (neither imports DBOS; both poke the daemon). Cancel,
resume and fork need DBOS's client, so they run as the shell command itself (`python -m
iwo_lite cancel ID`, with this home and config): the web process never imports DBOS, and the
three cannot differ from what a person types. The first answer wins, as everywhere: a second one
is 409.

Statuses: 200 done; 400 bad input (a missing or wrong field); 404 an unknown id; 409 the spec
is not in a state for it (not waiting, already answered, already finished, busy).
"""

from __future__ import annotations

import os
import subprocess
import sys

from iwo_lite.config import Config
from iwo_lite.errors import UserError, first_line
from iwo_lite.roles import ANSWERS, ROLES

ACTIONS = ("approve", "reject", "revise", "cancel", "resume", "fork")
SHELL_TIMEOUT_S = 120.0


class ActionError(Exception):
    """An action refused: `status` is the HTTP status, the message one line naming what is at fault."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_of(message: str) -> int:
    """The HTTP status of a refusal, from the shell's one-line message."""
    if "no such spec" in message or "no such dispatch" in message or "no such gate" in message:
        return 404
    if message.startswith(("--from", "answer ", "text:", "id:")) or "needs the instructions" in message:
        return 400
    return 409


def _text_field(body: dict, name: str, *, required: bool) -> str:
    value = body.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ActionError(400, f"{name}: expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ActionError(400, f"{name}: required (a non-empty string)")
    return value


def submit(config: Config, body: dict) -> dict:
    """POST /api/specs: {"text": the spec, "id": optional, "filename": optional (an uploaded file's name)}."""
    from iwo_lite import intake

    text = _text_field(body, "text", required=True)
    filename = _text_field(body, "filename", required=False) or None
    chosen = _text_field(body, "id", required=False) or None
    try:
        spec = intake.spec_from_text(text, os.path.basename(filename) if filename else None, "web")
        if chosen is not None:
            spec = intake.Spec(id=intake.check_id(chosen), title=spec.title, text=spec.text, source=spec.source)
        created = intake.submit(config, spec)
    except UserError as error:
        raise ActionError(400 if "already exists" not in str(error) else 409, first_line(error)) from None
    if not created:
        raise ActionError(409, f"{spec.id}: already exists; nothing new started")
    return {"ok": True, "spec_id": spec.id, "title": spec.title}


def act(config: Config, spec_id: str, action: str, body: dict) -> dict:
    """POST /api/specs/<id>/<action>."""
    if action not in ACTIONS:
        raise ActionError(404, f"{action}: no such action (expected one of {', '.join(ACTIONS)})")
    if action in ANSWERS:
        note = _text_field(body, "note", required=False) or _text_field(body, "text", required=False)
        if action == "revise" and not note.strip():
            raise ActionError(400, "text: revise needs the instructions for the builder ({\"text\": ...})")
        from iwo_lite.gates import answer_from_shell

        try:
            gate = answer_from_shell(config, spec_id, action, note, via="web")
        except UserError as error:
            raise ActionError(status_of(str(error)), first_line(error)) from None
        return {"ok": True, "spec_id": spec_id, "action": action, "gate": gate}
    args = [action, spec_id]
    if action == "fork":
        role = _text_field(body, "from", required=True)
        if role not in ROLES:
            raise ActionError(400, f"from: {role!r}: expected one of {', '.join(ROLES)}")
        args += ["--from", role]
    out = run_shell(config, args)
    result = {"ok": True, "spec_id": spec_id, "action": action, "output": out.strip()}
    if action == "fork":
        result["new_id"] = out.strip().splitlines()[-1]
    return result


def shell_command() -> list[str]:
    """This program as a shell command: the same Python and the same files (a zipapp's unpacked
    site-packages included, through PYTHONPATH set by run_shell)."""
    return [sys.executable, "-m", "iwo_lite"]


def run_shell(config: Config, args: list[str]) -> str:
    """Run `iwo-lite ARGS` for this home and config; its stdout, or ActionError with its one-line error."""
    command = [*shell_command(), "--home", str(config.home)]
    if config.config_path is not None:
        command += ["--config", str(config.config_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    try:
        done = subprocess.run([*command, *args], capture_output=True, text=True, errors="replace", env=env,
                              stdin=subprocess.DEVNULL, timeout=SHELL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ActionError(409, f"{' '.join(args)}: took more than {SHELL_TIMEOUT_S:.0f} s; see `iwo-lite status`")
    if done.returncode == 0:
        return done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    message = lines[-1].removeprefix("iwo-lite: ") if lines else f"exit {done.returncode}"
    raise ActionError(status_of(message) if done.returncode == 2 else 500, message)
