"""Human gates: record an answer, refuse a wrong one, wake the waiting spec, listen for answers.

One answer path for the shell and every notifier. An answer is a row first (store/gates.py:
the gate is the spec's current one, open, before its deadline; the first answer wins), then
a wake-up:

* from the shell (`approve` / `reject` / `revise`, daemon running or not): the row, then a
  poke of the running daemon (SIGUSR1, sent only to the process holding `daemon.lock`); on
  Postgres also a NOTIFY that every worker hears. No DBOS import: an answer is a small write.
* in the daemon (a notifier's button or reply, or a poke): `Gates.answer` records it and the
  daemon's `wake` sends the waiting workflow a DBOS message on the gate's own topic and wakes
  its recv at once. A sweep at start and every WAKE_SWEEP_S catches answers given while the
  daemon was down or whose poke was lost.

The durable deadline and the timeout policy are the loop's (loop.py).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
import time
from pathlib import Path
from typing import Awaitable, Callable

from iwo_lite.config import Config
from iwo_lite.errors import UserError
from iwo_lite.home import Home, daemon_pid
from iwo_lite.roles import ANSWERS
from iwo_lite.store import AsyncStore, Store, checkpoints
from iwo_lite.store import gates as gate_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.store.locks import spec_lock

log = logging.getLogger("iwo_lite")
WAKE_SWEEP_S = 30.0  # safety net: wake answered gates even if a poke (SIGUSR1, NOTIFY) was lost
WakeFn = Callable[[str, str], Awaitable[None]]  # (gate id, spec id)


def check_answer(answer: str, note: str, spec_id: str) -> None:
    if answer not in ANSWERS:
        raise UserError(f"answer {answer!r}: expected one of {', '.join(ANSWERS)}")
    if answer == "revise" and not note.strip():
        raise UserError(f"{spec_id}: revise needs the instructions for the builder: -m TEXT")


def answer_from_shell(config: Config, spec_id: str, answer: str, note: str, *, by: str | None = None,
                      via: str = "cli") -> str:
    """Record `answer` on the gate the spec waits on now and return its id; UserError if impossible."""
    check_answer(answer, note, spec_id)
    db_path = config.db_path
    if db_path is not None and not db_path.exists():
        raise UserError(f"{spec_id}: no such spec (no database at {db_path})")
    with spec_lock(config.database_url, config.home, spec_id), Store.open(config.database_url) as store:
        spec = store.run(spec_rows.current_gate(spec_id))
        if spec is None:
            raise UserError(f"{spec_id}: no such spec")
        if spec["state"] != "waiting" or not spec["gate_id"]:
            raise UserError(f"{spec_id}: not waiting for an answer (state {spec['state']})")
        gate_id = spec["gate_id"]
        if store.has_table("workflow_status"):
            elsewhere = store.run(checkpoints.run_elsewhere(spec_id))
            if elsewhere is not None:
                raise UserError(elsewhere)
        refused = store.run(gate_rows.answer(gate_id, answer, note, by or _user(), via))
        if refused is not None:
            raise UserError(refused)
        store.run(gate_rows.announce_answer(gate_id))
    poke_daemon(Home(config.home).lock)
    return gate_id


def poke_daemon(lock_path: Path) -> bool:
    """Tell a running daemon to look at the database now; False when no daemon holds the lock."""
    pid = daemon_pid(lock_path)
    if pid is None:
        return False  # the daemon looks when it starts
    try:
        os.kill(pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Gates:
    """The daemon's side: answers from notifiers, and waking the workflows of answered gates."""

    def __init__(self, store: AsyncStore, wake: WakeFn):
        self.store = store
        self._wake_fn = wake
        self._woken: dict[str, float] = {}
        self._kick = asyncio.Event()

    async def answer(self, gate_id: str, answer: str, note: str, by: str, via: str) -> str | None:
        """Record a notifier's answer; None when recorded (and the spec woken), else why not."""
        elsewhere = await self.store.run(checkpoints.run_elsewhere(gate_rows.spec_of(gate_id)))
        if elsewhere is not None:
            return elsewhere
        refused = await self.store.run(gate_rows.answer(gate_id, answer, note, by, via))
        if refused is None:
            await self._wake(gate_id, gate_rows.spec_of(gate_id))
        return refused

    def poke(self) -> None:
        self._kick.set()

    async def sweep_forever(self) -> None:
        while True:
            try:
                for gate_id, spec_id in await self.store.run(gate_rows.answered_waiting()):
                    if time.monotonic() - self._woken.get(gate_id, -1e9) > WAKE_SWEEP_S * 2:
                        await self._wake(gate_id, spec_id)
            except Exception as error:  # a locked database for a moment: the next sweep retries
                log.warning("waking answered gates failed: %s", error)
            try:
                await asyncio.wait_for(self._kick.wait(), WAKE_SWEEP_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def listen_forever(self, database_url: str) -> None:
        """Postgres: an answer recorded on any machine (NOTIFY iwo_answers) wakes its gate now."""
        from iwo_lite.store import pg

        await pg.listen_forever(database_url, gate_rows.ANSWER_CHANNEL, self.poke, "answers", WAKE_SWEEP_S)

    async def _wake(self, gate_id: str, spec_id: str) -> None:
        self._woken[gate_id] = time.monotonic()
        await self._wake_fn(gate_id, spec_id)
