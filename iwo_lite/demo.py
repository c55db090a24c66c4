"""`iwo-lite demo`: the whole loop on a sample spec, offline, in a temporary home.

Owns the demo's script: make a temporary home whose config points the agent command at the
built-in offline agent (demo_agent.py), submit the sample spec before the daemon starts,
start the real daemon (`iwo-lite run`) as a child process, show live progress, answer the
deployer's gate for the user (never an agent_failed one: the demo stops there and says why),
stop the daemon, and print the final status. The home is kept so it can be explored with
`iwo-lite --home <dir> status`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iwo_lite.config import load_config
from iwo_lite.errors import UserError
from iwo_lite.roles import GATE_AGENT_FAILED
from iwo_lite.store import sqlite_compat
from iwo_lite.store.specs import FINAL_STATES

SAMPLE_SPEC = """# Greet people by name

Add `hello.py` with `greet(name)` returning "Hello, <name>!", with a test and a line of docs.
"""
DEMO_TIMEOUT_S = 120


def _python_path() -> str:
    return os.pathsep.join(p for p in sys.path if p)


def _write_config(home: Path) -> None:
    bootstrap = "from iwo_lite.demo_agent import main; main()"
    command = ", ".join(f'"{part}"' for part in (sys.executable, "-c", bootstrap))
    (home / "work").mkdir()
    (home / "config.toml").write_text(
        f'workdir = "{home / "work"}"\n\n[agent]\ncommand = [{command}]\ntimeout = "2m"\nretries = 1\n'
        '\n[approvals]\ntimeout = "10m"\nremind_every = ""\n',
        encoding="utf-8",
    )


def run_demo() -> int:
    from iwo_lite import output
    from rich.live import Live

    from iwo_lite.gates import answer_from_shell
    from iwo_lite.status import list_specs, spec_trace, specs_table, trace_view
    from iwo_lite.intake import load_spec, submit

    refused = sqlite_compat.refusal()  # the demo's daemon would not get far: say why before starting
    if refused:
        raise UserError(refused)
    console = output.console()
    me = output.command_name()  # runnable as printed (the README's install puts iwo-lite in .venv/bin)
    home = Path(tempfile.mkdtemp(prefix="iwo-lite-demo-"))
    _write_config(home)
    config = load_config(home)
    spec_file = home / "greet.md"
    spec_file.write_text(SAMPLE_SPEC, encoding="utf-8")
    console.print(f"[bold]iwo-lite demo[/] in a temporary home: {home}")
    spec = load_spec(spec_file, "demo-greet")
    submit(config, spec)
    console.print(f"submitted spec [bold]{spec.id}[/] (before the daemon runs: it waits in the queue)")
    env = dict(os.environ, PYTHONPATH=_python_path())
    daemon = subprocess.Popen(
        [sys.executable, "-c", "from iwo_lite.cli import main; raise SystemExit(main())",
         "--home", str(home), "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(home / "daemon.log", "wb"),
    )
    console.print(f"started the daemon (pid {daemon.pid}); its log: {home / 'daemon.log'}")
    answered: set[str] = set()
    failed = None  # an agent_failed gate: the demo does not approve past it
    state = "queued"
    deadline = time.time() + DEMO_TIMEOUT_S
    try:
        with Live(console=console, refresh_per_second=8, transient=True) as live:
            while time.time() < deadline and daemon.poll() is None:
                specs, _ = list_specs(config.database_url, spec_id=spec.id)
                if specs and len(spec_trace(config.database_url, spec.id)["steps"]):
                    trace = spec_trace(config.database_url, spec.id)
                    live.update(trace_view(trace))
                    state = trace["state"]
                    gate = next((g for g in trace["gates"] if g["answer"] is None), None)
                    gate_id = gate["id"] if gate else None
                    if state == "waiting" and gate and gate["reason"] == GATE_AGENT_FAILED:
                        failed = gate  # the demo's agent cannot fail: something here is broken; say so
                        break
                    if state == "waiting" and gate_id and gate_id not in answered:
                        time.sleep(1.0)
                        answered.add(answer_from_shell(config, spec.id, "approve", "approved by the demo",
                                                   by="demo", via="cli"))
                        live.console.print(f"[magenta]the {trace['role']} asked: {output.safe_markup(trace['question'] or '')} "
                                           f"— the demo answers for you: {me} approve "
                                           f"{spec.id}[/]")
                    if state in FINAL_STATES:
                        break
                time.sleep(0.2)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
    console.print(specs_table(*list_specs(config.database_url)))
    console.print(trace_view(spec_trace(config.database_url, spec.id)))
    console.print(f"handoffs: {home / 'specs' / spec.id / 'handoffs'}")
    console.print(f"explore:  {me} --home {home} status {spec.id}")
    if failed is not None:
        why = (failed["question"] or f"The {failed['role']} agent failed.").split(" Approve to continue")[0]
        console.print(f"[red]demo failed: {output.safe_markup(why)} Its runs: {home / 'runs' / spec.id}[/]")
        return 1
    if state != "done":
        console.print(f"[red]demo did not finish: state {state}; see {home / 'daemon.log'}[/]")
        return 1
    console.print("[green]demo finished: all six roles ran, with one rework and one human gate.[/]")
    return 0
