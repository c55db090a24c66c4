"""The daemon (`iwo-lite run`): one asyncio process that owns the home while it runs.

Owns: the exclusive lock on `<home>/daemon.lock` (one launched DBOS per database file),
preparing the database, wiring the pieces (store, gates, notifiers, agent kind, dispatcher,
the loop's runtime), launching DBOS inside the running loop (which recovers unfinished
specs), the background tasks, and a clean stop on SIGINT/SIGTERM/SIGHUP.

Background tasks, each woken by an event rather than a fast timer (the daemon is quiet when
idle; each has a slow sweep as a safety net, say its constant):

    Starter    starts the workflow of each queued spec (oldest first, while this worker has
               agent capacity), and hands back a workflow left PENDING with nothing running it.
               Woken by a poke: SIGUSR1 from `submit` and the answers, the inbox, the loop (a
               spec ended, parked at a gate or paused), and on Postgres NOTIFY iwo_specs.
               Sweep: STARTER_SWEEP_S.
    Gates      wakes the workflows of answered gates (gates.py). Woken by the same pokes and
               NOTIFY iwo_answers. Sweep: gates.WAKE_SWEEP_S.
    Courier    sends the outbox (gate questions, reminders, answered marks, spec events) to
               the notifiers, on the worker holding the `notifier` lease. Woken by the loop.
               Sweep: COURIER_SWEEP_S (and the lease's renewal).
    Inbox      inbox.py (inotify on Linux, a slow poll elsewhere).
    Workers    Postgres only: heartbeats, takeover of silent workers (workers.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from iwo_lite import agents, durable, loop, notify, sandbox, workers, workspace
from iwo_lite.config import Config, database_secret_env, in_config_file, unreadable_prompt_files, workdir_problem
from iwo_lite.cancel import cancel_spec
from iwo_lite.errors import UserError
from iwo_lite.gates import Gates
from iwo_lite.home import Home
from iwo_lite.inbox import InboxWatcher
from iwo_lite.intake import Spec, queue, spec_from_text
from iwo_lite.runs.dispatcher import Dispatcher
from iwo_lite.store import AsyncStore, checkpoints
from iwo_lite.store import gates as gate_rows
from iwo_lite.store import outbox
from iwo_lite.store import specs as spec_rows
from iwo_lite.store import workers as worker_rows
from iwo_lite.times import iso_utc

log = logging.getLogger("iwo_lite")
LOCK_PATIENCE_S = 1.0
STARTER_SWEEP_S = 30.0  # safety net: start queued specs even if a poke was lost; look for stuck specs
COURIER_SWEEP_S = 30.0  # safety net: send the outbox even if a wake-up was lost
COURIER_RETRY_S = 2.0  # a notifier not ready yet (the bot still connecting): look again this soon,
COURIER_RETRY_MAX_S = 30.0  # then twice as late each time up to this (Telegram away for long: quiet)
OUTBOX_MAX_AGE_S = 3600.0  # events nobody sent for this long are not sent late (a bot just turned on)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def sweep_s() -> float:
    """STARTER_SWEEP_S, or $IWO_SWEEP_S (the tests' shorter sweep)."""
    try:
        return max(0.5, float(os.environ.get("IWO_SWEEP_S", STARTER_SWEEP_S)))
    except ValueError:
        return STARTER_SWEEP_S


def acquire_lock(lock_path: Path) -> int:
    """Hold an exclusive flock on the home for this process's lifetime; the fd is not inherited.

    Shell commands take a shared lock for a moment to see whether a daemon runs, so a busy
    lock is tried again for LOCK_PATIENCE_S before another daemon is assumed.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{lock_path}: another iwo-lite daemon (pid {holder}) is already running on this home")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_ready(config: Config) -> sandbox.Choice:
    """What would fail at the first dispatch, said at start-up (UserError, one line); the sandbox the agents get."""
    durable.check_sqlite(config)  # a Python + SQLite on which DBOS cannot write its tables
    workdir = workdir_problem(config)
    problems = ([in_config_file(config, workdir)] if workdir else []) + unreadable_prompt_files(config)
    if problems:
        raise UserError(problems[0])
    if config.agent.dispatch == "tmux" and shutil.which("tmux") is None:
        raise UserError('agent.dispatch = "tmux", but tmux is not installed (or not on PATH)')
    confined = sandbox.choose(config.agent.sandbox)
    if confined.error:
        raise UserError(confined.why)
    for kind, roles in agents.kinds_in_use(config).items():  # e.g. a "full" profile Claude Code refuses as root
        refused = agents.build(config, kind, roles).refused(config, roles)
        if refused:
            raise UserError(refused)
    if config.workspace == "worktree":
        repo = workspace.describe_repo(str(config.workdir))
        if not repo["repository"]:
            raise UserError(f'workspace = "worktree", but workdir {config.workdir} is not a git repository')
        if not repo["head"]:
            raise UserError(f'workspace = "worktree", but the repository at workdir {config.workdir} has no commit '
                            "yet: each spec's branch starts from one")
    return confined


async def serve(config: Config, *, stop: asyncio.Event | None = None, companions: list = ()) -> None:
    """Run until `stop` is set or SIGINT/SIGTERM/SIGHUP arrives. Each of `companions` (an async
    function of (config, stop), e.g. the dashboard's server) runs beside the loop until then."""
    home = Home(config.home)
    stop = stop or asyncio.Event()
    confined = check_ready(config)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a poke before we listen must not kill us
    lock_fd = acquire_lock(home.lock)
    running = asyncio.get_running_loop()

    def stop_on(sig: signal.Signals) -> None:
        log.info("%s received: stopping", sig.name)
        stop.set()

    for sig in STOP_SIGNALS:
        running.add_signal_handler(sig, stop_on, sig)
    store = None
    shared = False  # Postgres: one worker of several
    launched = False
    courier = None
    try:
        await asyncio.to_thread(durable.prepare_database, config)
        store = await AsyncStore.open(config.database_url)
        shared = store.dialect == "postgresql"
        if shared:
            await workers.register(store, config, home.root)
        await store.run(worker_rows.daemon_started(os.getpid(), config.executor_id))
        gates = Gates(store, wake_gate)
        starter = Starter(store, config)
        actions = DaemonActions(config, home, store, gates, starter)
        courier = Courier(store, config, notify.from_config(config, store, actions))

        def changed() -> None:  # the loop added to the outbox: a spec ended, waits or paused
            courier.wake()
            starter.poke()

        dispatcher = Dispatcher(config, home, store, agents.for_roles(config),
                                notify.secret_env_names(config) + database_secret_env(config))
        loop.install(loop.Runtime(config, home, store, dispatcher, changed))
        await durable.launch(config)
        launched = True
        if not shared:
            await _recover_other_executors(store, config)

        def poke() -> None:  # SIGUSR1 from the shell: an answer or a spec is in the database
            gates.poke()
            starter.poke()

        running.add_signal_handler(signal.SIGUSR1, poke)
        inbox = InboxWatcher(home.inbox, actions.submit_spec)
        background = [  # held here: the loop keeps only weak references to tasks
            asyncio.create_task(gates.sweep_forever(), name="iwo-wake-answered"),
            asyncio.create_task(starter.run_forever(), name="iwo-starter"),
            asyncio.create_task(inbox.run_forever(), name="iwo-inbox"),
            asyncio.create_task(courier.run_forever(), name="iwo-courier"),
            *(asyncio.create_task(run(config, stop), name=f"iwo-{getattr(run, '__name__', 'companion')}")
              for run in companions),
        ]
        if shared:
            background += [
                asyncio.create_task(workers.keep_watch(store, config, durable.Internals.recover_executors),
                                    name="iwo-workers"),
                asyncio.create_task(gates.listen_forever(config.database_url), name="iwo-answers"),
                asyncio.create_task(starter.listen_forever(config.database_url), name="iwo-specs"),
            ]
        log.info("daemon running on %s (pid %d, executor %s, %d background tasks)", home.root, os.getpid(),
                 config.executor_id, len(background))
        (log.info if confined.on or confined.mode == "off" else log.warning)("sandbox: %s", confined.why)  # "off" was asked for
        await _warn_of_other_replay_versions(store)
        await stop.wait()
        log.info("stopping: agent runs in flight continue detached and are re-attached on the next start")
    finally:
        if courier is not None:
            await courier.stop()
        await _cancel_other_tasks()
        if launched:
            durable.destroy()
        loop.install(None)
        if store is not None:
            if shared:
                await store.run(worker_rows.stopped(config.executor_id, os.getpid()))
            await store.close()
        for sig in (*STOP_SIGNALS, signal.SIGUSR1):
            running.remove_signal_handler(sig)
        os.close(lock_fd)


async def wake_gate(gate_id: str, spec_id: str) -> None:
    """Send the waiting workflow its answer's message, then wake its recv at once."""
    # Every worker may send this (each sweeps): the key makes it one message.
    await durable.send(spec_id, {"gate": gate_id}, topic=gate_id, idempotency_key=f"answer:{gate_id}")
    try:
        durable.Internals.wake_waiter(spec_id, gate_id)
    except Exception as error:  # DBOS moved its internals: the poll still delivers the answer
        log.warning("waking the gate's waiter at once failed (%s); DBOS's poll delivers it", error)


async def _recover_other_executors(store: AsyncStore, config: Config) -> None:
    """SQLite: the daemon holding the home's lock owns every unfinished spec in the file, also those
    started under another executor id (the default id is the hostname, which a laptop may change)."""
    others = await store.run(checkpoints.pending_executors(config.executor_id))
    if others:
        handles = await asyncio.to_thread(durable.Internals.recover_executors, others)
        log.warning("recovered %d unfinished spec(s) started under executor id(s) %s (this daemon is %s)",
                    len(handles), ", ".join(others), config.executor_id)


async def _warn_of_other_replay_versions(store: AsyncStore) -> None:
    """Unfinished specs started by a build with another REPLAY_VERSION: this daemon leaves them be."""
    for version, count in await store.run(checkpoints.other_versions()):
        log.warning("%d unfinished spec(s) were started by a build with replay version %s; this build (%s) "
                    "will not run them: see `iwo-lite doctor`", count, version, checkpoints.REPLAY_VERSION)


async def _cancel_other_tasks() -> None:
    """Cancel the workflow tasks DBOS started on this loop; their steps stay unrecorded and resume."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=5)


async def _wait_or(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    event.clear()


class Starter:
    """Starts the workflows of queued specs: oldest first, while this worker has agent capacity.

    A spec is claimed (one guarded UPDATE: with several workers exactly one starts it), then its
    workflow is started under the spec's id. A crash between the two is repaired at start-up
    (a claimed spec without a workflow is started then)."""

    def __init__(self, store: AsyncStore, config: Config):
        self.store = store
        self.config = config
        self._kick = asyncio.Event()
        self._suspects: set[str] = set()

    def poke(self) -> None:
        self._kick.set()

    async def run_forever(self) -> None:
        me = self.config.executor_id
        for row in await self.store.run(checkpoints.launched_without_workflow(me)):
            await self._start(row)
        while True:
            try:
                await self.start_queued()
                await self.recover_stuck()
            except Exception as error:  # the database away for a moment: the next poke or sweep retries
                log.warning("starting queued specs failed: %s", error)
            await _wait_or(self._kick, sweep_s())

    async def recover_stuck(self) -> None:
        """A spec whose workflow is PENDING in the database while nothing here runs it (a step failed
        in a way that left no task behind: e.g. the disk was full when DBOS recorded the end) is handed
        back to be replayed from its checkpoints — no restart needed. Seen twice in a row first (a
        workflow being started is PENDING a moment before it runs)."""
        me = self.config.executor_id
        idle = set(await asyncio.to_thread(durable.Internals.idle_pending, me))
        for workflow_id in idle & self._suspects:
            if await asyncio.to_thread(durable.Internals.requeue, workflow_id, me):
                log.warning("spec %s: its workflow was left pending with nothing running it; replaying it from its "
                            "last checkpoint", workflow_id)
        self._suspects = idle

    async def start_queued(self) -> None:
        me = self.config.executor_id
        while True:
            room = self.config.agent.max_concurrent - await self.store.run(spec_rows.active_count(me))
            if room <= 0:
                return
            rows = await self.store.run(spec_rows.unlaunched(room))
            if not rows:
                return
            for row in rows:
                if await self.store.run(spec_rows.launched(row["id"], me)):
                    await self._start(row)

    async def _start(self, row: dict) -> None:
        spec = Spec(id=row["id"], title=row["title"], text=row["text"], source=row["source"])
        await durable.start_workflow(loop.spec_workflow, spec.workflow_input())
        log.info("started spec %s", spec.id)

    async def listen_forever(self, database_url: str) -> None:
        """Postgres: a spec submitted on any machine (NOTIFY iwo_specs) is looked at now."""
        from iwo_lite.store import pg

        await pg.listen_forever(database_url, spec_rows.SPEC_CHANNEL, self.poke, "submitted specs", STARTER_SWEEP_S)


class DaemonActions:
    """What a notifier (or the inbox) may ask of the daemon: answer, submit, cancel."""

    def __init__(self, config: Config, home: Home, store: AsyncStore, gates: Gates, starter: Starter):
        self.config = config
        self.home = home
        self.store = store
        self.answer = gates.answer
        self.starter = starter

    async def submit_spec(self, spec: Spec) -> bool:
        """Queue a spec (the inbox, a message) by the shell's path (intake.queue): False when its id
        already existed."""
        created = await asyncio.to_thread(queue, self.config, spec)
        self.starter.poke()
        return created

    async def submit_text(self, text: str, filename: str | None, by: str) -> tuple[str, bool]:
        spec = spec_from_text(text, filename, source=f"telegram:{by}")
        return spec.id, await self.submit_spec(spec)

    async def cancel(self, spec_id: str, by: str) -> str:
        """`/cancel` from a notifier: the shell's cancel (cancel.py), with this daemon's own DBOS."""
        running = asyncio.get_running_loop()

        def cancel_workflow(workflow_id: str) -> None:  # called in the worker thread, under the spec's lock
            asyncio.run_coroutine_threadsafe(durable.cancel(workflow_id), running).result()

        report, _ = await asyncio.to_thread(cancel_spec, self.config, spec_id, cancel_workflow)
        log.info("spec %s cancelled by %s", spec_id, by)
        return report


class Courier:
    """Sends the outbox to the notifiers: gate questions, reminders, answered marks, spec events.

    Only the worker holding the `notifier` lease runs its notifiers (on Postgres two bots polling
    one token would conflict; on SQLite the one daemon always holds it). Every worker with a
    notifier configured contends: the first to find the lease free (or expired) takes it. The
    holder renews it every worker_timeout / 3 for LEASE_SHARE x worker_timeout; the others look
    as often. So when the holder dies another worker with a notifier configured holds the lease
    within worker_timeout of the holder's last renewal, starts its notifiers, and sends what is
    left in the outbox (gates and events of specs on every worker); a holder that stops cleanly
    frees the lease at once. A row that could not be sent at all (the service down) stays in the
    outbox and is tried again. Sending is at-least-once: a crash between sending a row and
    marking it sent may send it twice.

    Woken by this worker's loop, and on Postgres by NOTIFY iwo_outbox (a row added by any worker)."""

    LEASE = "notifier"
    LEASE_SHARE = 2 / 3  # of worker_timeout: renewed every third, so one late renewal is not a loss

    def __init__(self, store: AsyncStore, config: Config, notifiers: list):
        self.store = store
        self.config = config
        self.notifiers = notifiers
        self._kick = asyncio.Event()
        for notifier in notifiers:  # a notifier that comes up wakes the courier (no waiting out a backoff)
            if hasattr(notifier, "on_ready"):
                notifier.on_ready = self.wake
        self.leading = False
        self._renewed = 0.0  # time.monotonic() of the last renewal
        self._listener: asyncio.Task | None = None
        self._warned = False

    def wake(self) -> None:
        self._kick.set()

    async def run_forever(self) -> None:
        if not self.notifiers:
            return
        if self.store.dialect == "postgresql":  # rows added on other workers
            self._listener = asyncio.create_task(self._listen_forever(), name="iwo-outbox")
        retry = COURIER_RETRY_S
        while True:
            wait = COURIER_SWEEP_S
            try:
                if not self.leading or self._renewal_due():
                    await self._lead()  # the lease is written only when it is due, not on every round
                if self.leading and not await self.deliver():
                    wait, retry = retry, min(retry * 2, COURIER_RETRY_MAX_S)
                else:
                    retry = COURIER_RETRY_S
            except Exception as error:  # the database or a notifier away for a moment: try again later
                log.warning("sending notifications failed: %s", error)
            await _wait_or(self._kick, min(wait, self._renew_every()))

    def _renew_every(self) -> float:
        return max(1.0, self.config.worker_timeout / 3)

    def _renewal_due(self) -> bool:
        """A renewal is due (with a margin: a wait of exactly _renew_every may wake a hair early)."""
        return time.monotonic() - self._renewed >= self._renew_every() * 0.9

    async def _lead(self) -> None:
        """Take or renew the lease; start the notifiers when it is won, stop them when it is lost."""
        now = time.time()
        holds = await self.store.run(worker_rows.leased(self.LEASE, self.config.executor_id, iso_utc(now),
                                                        iso_utc(now + self.config.worker_timeout * self.LEASE_SHARE)))
        if holds:
            self._renewed = time.monotonic()
        if holds and not self.leading:
            self.leading = True
            await self.store.run(outbox.skipped_before(iso_utc(now - OUTBOX_MAX_AGE_S)))
            for notifier in self.notifiers:
                notifier.start()
            log.info("notifiers on: this worker (%s) holds the notifier lease and sends the notifications",
                     self.config.executor_id)
        elif not holds and self.leading:
            await self._stop_notifiers()
            log.warning("the notifier lease went to another worker; this worker's notifiers are off")

    async def deliver(self) -> bool:
        """Send every unsent row; False when a notifier was not ready or a row could not be sent now
        (the rows wait for the next round)."""
        if not all(getattr(n, "is_ready", lambda: True)() for n in self.notifiers):
            return False
        while rows := await self.store.run(outbox.unsent()):
            for row in rows:
                if self._renewal_due():
                    await self._lead()  # a long delivery keeps the lease
                    if not self.leading:
                        return True
                try:
                    refs = await self._send(row)
                except Exception as error:  # e.g. Telegram down: the row stays, the next round tries again
                    if not self._warned:
                        log.warning("could not send %s now (%s); trying again", row["key"], error)
                        self._warned = True
                    return False
                self._warned = False
                await self.store.run(outbox.sent(row["key"], ", ".join(refs) or "nothing to send"))
        return True

    async def _send(self, row: dict) -> list[str]:
        refs: list[str] = []
        if row["gate_id"] is not None:
            gate = await self.store.run(gate_rows.row(row["gate_id"]))
            if gate is None:
                return refs
            gate["on_timeout"] = self.config.approvals.on_timeout
            for notifier in self.notifiers:
                if row["kind"] == "answered":
                    await notifier.mark_answered(gate)
                else:
                    refs += [f"{notifier.name}:{ref}" for ref in await notifier.send_gate(gate, row["kind"])]
            return refs
        specs, _ = await self.store.run(spec_rows.listed(spec_id=row["spec_id"]))
        if not specs:
            return refs
        event = dict(specs[0], kind=row["kind"], spec_id=row["spec_id"])
        for notifier in self.notifiers:
            refs += [f"{notifier.name}:{ref}" for ref in await notifier.send_event(event)]
        return refs

    async def _listen_forever(self) -> None:
        """Postgres: a row added to the outbox on any worker (NOTIFY iwo_outbox) is looked at now."""
        from iwo_lite.store import pg

        await pg.listen_forever(self.config.database_url, outbox.OUTBOX_CHANNEL, self.wake, "notifications to send",
                                COURIER_SWEEP_S)

    async def _stop_notifiers(self) -> None:
        self.leading = False
        for notifier in self.notifiers:
            await notifier.stop()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self.leading:
            await self._stop_notifiers()
            await self.store.run(worker_rows.released(self.LEASE, self.config.executor_id))
