"""What a spec changed and what its agent did, for the shell: `iwo-lite diff` and `iwo-lite logs`.

Owns reading a spec's diff (its branch `iwo/<id>` against the commit it started from, or one
dispatch's commit, from the user's repository: it works after `clean` removed the worktree,
since the branch stays) and its agent's tool-call timeline (the running or last attempt's
stdout, read by that attempt's agent kind into ToolEvents). Read-only; no DBOS.
"""

from __future__ import annotations

import time
from pathlib import Path

from iwo_lite import agents, store
from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows

FOLLOW_S = 0.5


def _spec(config: Config, spec_id: str) -> tuple[dict, list[dict], list[dict]]:
    with store.readonly(config.database_url) as db:
        where = db.run(spec_rows.workspace_of(spec_id)) if db is not None else None
        if where is None:
            raise UserError(f"{spec_id}: no such spec")
        return where, db.run(run_rows.steps_of(spec_id)), db.run(run_rows.attempts_of(spec_id))


def diff_text(config: Config, spec_id: str, dispatch: int | None = None, stat: bool = False) -> str:
    """The unified diff (or `--stat`) of the spec's branch against its base, or of one dispatch's commit."""
    from iwo_lite import workspace

    where, steps, _ = _spec(config, spec_id)
    step = next((s for s in steps if s["step"] == dispatch), None)
    if dispatch is not None and step is None:  # in either workspace: the id at fault, exit 2
        raise UserError(f"{spec_id}: --dispatch {dispatch:02d}: no such dispatch")
    repo = workspace.describe_repo(str(config.workdir))
    if not where.get("branch") or not repo["repository"]:
        return (f"{spec_id} works in the shared workdir {config.workdir} (no branch of its own), so there is no diff"
                " of its own to show: its agents changed the workdir itself (`git -C <workdir> status` and `log`"
                " show what is there)\n")
    branch = where["branch"]
    tip = workspace.branch_head(repo["toplevel"], branch) or where.get("head")
    flags = ["--stat"] if stat else ["--no-color"]
    if step is not None:
        if not step.get("commit_sha"):
            return f"{spec_id} dispatch {dispatch:02d} ({step['role']}) made no commit: it changed nothing\n"
        sha = step["commit_sha"]
        return _git(repo["toplevel"], ["diff", *flags, f"{sha}^", sha])
    base = where.get("base_commit")
    if not base or not tip:
        raise UserError(f"{spec_id}: no base commit or branch {branch} recorded yet: nothing to compare")
    return _git(repo["toplevel"], ["diff", *flags, base, tip])


def _git(repo: str, args: list[str]) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)} in {repo}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout


def diff(config: Config, args) -> int:
    print(diff_text(config, args.spec_id, args.dispatch, args.stat), end="")
    return 0


def timeline(config: Config, attempt: dict) -> list:
    """The attempt's tool calls (ToolEvents), read from its stdout by its agent kind."""
    path = Path(attempt["run_dir"] or "") / "stdout"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    kind = attempt.get("agent") or agents.kind_of(config, "builder")
    try:
        return list(agents.build(config, kind).tool_events(text))
    except Exception:  # a kind this build does not know, output it cannot read: no timeline
        return []


def tool_counts(config: Config, attempt: dict) -> dict:
    """How many tool calls the attempt made, which failed and which were denied (from its timeline)."""
    events = timeline(config, attempt)
    failed = [event.tool for event in events if event.status == "failed"]
    denied = [f"{event.tool}({event.input[:60]})" for event in events if event.status == "denied"]
    return {"calls": len(events), "failed": len(failed), "failed_tools": failed, "denied": len(denied),
            "denied_tools": denied}


def event_line(step: int, role: str, attempt: int, event) -> str:
    at = (event.at or "")[11:19] or "--:--:--"
    mark = {"ok": "", "failed": " FAILED", "denied": " DENIED", "running": " …"}.get(event.status, "")
    return f"{step:02d} {role} #{attempt} {at} {event.tool}: {event.input}{mark}" + (
        f" -> {event.result}" if event.result else "")


def logs(config: Config, args) -> int:
    """The running (or last) attempt's tool calls as lines; with --follow, new ones as they come,
    until that attempt ends."""
    _, steps, attempts = _spec(config, args.spec_id)
    if not attempts:
        print(f"{args.spec_id}: no agent has run yet")
        return 0
    roles = {s["step"]: s["role"] for s in steps}
    attempt = attempts[-1]
    shown = 0
    while True:
        events = timeline(config, attempt)
        for event in events[shown:]:
            print(event_line(attempt["step"], roles.get(attempt["step"], "?"), attempt["attempt"], event), flush=True)
        shown = len(events)
        if not args.follow or attempt["finished_at"]:
            break
        time.sleep(FOLLOW_S)
        _, _, attempts = _spec(config, args.spec_id)
        attempt = next(a for a in attempts if (a["step"], a["attempt"]) == (attempt["step"], attempt["attempt"]))
    if not shown:
        print(f"{args.spec_id}: dispatch {attempt['step']:02d} attempt {attempt['attempt']} made no tool calls")
    return 0
