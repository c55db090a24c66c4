"""The store on a real SQLite file: the state machine's guards, the answer rule, fork ids, migrations,
and the same operation giving the same result on the sync and the async face."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from iwo_lite import store
from iwo_lite.store import AsyncStore, Store, gates, schema, specs
from iwo_lite.times import iso_utc


@pytest.fixture
def url(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'iwo.sqlite'}"
    store.prepare(database_url)
    return database_url


@pytest.fixture
def db(url):
    with Store.open(url) as opened:
        yield opened


def waiting_gate(db, spec_id="s", deadline_in=3600.0):
    import time

    db.run(specs.queued(spec_id, "title", None))
    db.run(specs.admitted(spec_id, "title", None, None))
    gate_id = gates.gate_id_for(spec_id, 3)
    now = time.time()
    row = db.run(gates.opened(gate_id, spec_id, 3, "reviewer", "blocker", "Which?", iso_utc(now),
                              iso_utc(now + deadline_in)))
    db.run(specs.waiting(spec_id, gate_id, "Which?", row["deadline"]))
    return gate_id


def test_the_file_is_private_and_in_wal_mode(url, tmp_path):
    path = tmp_path / "iwo.sqlite"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_finished_or_cancelled_spec_is_never_moved_by_a_late_step(db):
    db.run(specs.queued("s", "t", None))
    db.run(specs.admitted("s", "t", None, None))
    assert db.run(specs.cancelled("s")) is True
    db.run(specs.at_step("s", 2, "builder"))  # a step still in flight after the cancel
    db.run(specs.finished("s", "done"))
    assert db.run(specs.state("s")) == "cancelled"
    assert db.run(specs.cancelled("s")) is False  # already final
    assert db.run(specs.resumed("s")) is True and db.run(specs.state("s")) == "queued"


def test_resuming_a_spec_cancelled_at_an_open_gate_waits_on_it_again(db):
    waiting_gate(db)
    db.run(specs.cancelled("s"))
    db.run(specs.resumed("s"))
    assert db.run(specs.state("s")) == "waiting"


def test_the_first_answer_wins_and_a_second_is_told_why(db):
    gate_id = waiting_gate(db)
    assert db.run(gates.answer(gate_id, "approve", "", "me", "cli")) is None
    refused = db.run(gates.answer(gate_id, "reject", "", "you", "telegram"))
    assert refused == f"gate {gate_id} was already answered: approve by me via cli"
    assert db.run(gates.timed_out(gate_id, "reject")) is False


def test_an_answer_after_the_deadline_or_to_another_gate_is_refused(db):
    gate_id = waiting_gate(db, deadline_in=-1)
    assert "closed at its deadline" in db.run(gates.answer(gate_id, "approve", "", "me", "cli"))
    assert db.run(gates.answer("s#99", "approve", "", "me", "cli")) == "gate s#99: no such gate"


def test_fork_ids_never_collide(db):
    db.run(specs.queued("p", "t", None))
    db.run(specs.queued("p-fork2", "taken by hand", None))
    assert db.run(specs.forked("p", "builder")) == "p-fork1"
    assert db.run(specs.forked("p", "builder")) == "p-fork3"
    assert db.run(specs.forked("missing", "builder")) is None


def test_both_faces_run_the_same_operations(url, db):
    gate_id = waiting_gate(db)

    async def read():
        async_db = await AsyncStore.open(url)
        try:
            return (await async_db.run(gates.row(gate_id)), await async_db.run(specs.listed(limit=50)))
        finally:
            await async_db.close()

    assert asyncio.run(read()) == (db.run(gates.row(gate_id)), db.run(specs.listed(limit=50)))


def test_migration_5_carries_telegram_messages_over(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    old = schema.MIGRATIONS
    try:
        schema.MIGRATIONS = old[:4]
        schema.migrate_sqlite(conn)
        conn.execute("INSERT INTO iwo_gate_messages VALUES (-100123, 42, 's#03', 'question', 'now')")
    finally:
        schema.MIGRATIONS = old
    assert schema.migrate_sqlite(conn) == len(old)
    assert conn.execute("SELECT notifier, ref, gate_id, kind FROM iwo_messages").fetchall() == [
        ("telegram", "-100123:42", "s#03", "question")]
