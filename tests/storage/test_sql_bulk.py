"""Bulk work in SQL in bounded slices: a purge and the sweep of a deleted queue's messages
delete at most ``bulk_slice`` messages per transaction, each its own write, so other
tenants' writes commit between the slices; queue ids are never reused, so a queue made
again under a deleted one's name never sees its messages; and a sweep cut short (a crash)
is finished by the reaper."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import sqlalchemy as sa

from qgate.core.model import NewMessage, QueueOptions
from qgate.storage.sql import queues
from qgate.storage.sql.schema import claims, deleted_queues, messages
from qgate.storage.sql.statements import Statements
from qgate.storage.sql.store import SQLStorage
from tests.storage.base import NOW, T, make_queue, put
from tests.support.stores import clean_pg, sqlite_url

VICTIM = "tenant-b"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("pg_database")
    clean_pg(url)
    return url


@pytest.fixture
def open_store(reactor: Any, sql_url: str) -> Iterator[Any]:
    opened: list[SQLStorage] = []

    def open_(**kw: Any) -> SQLStorage:
        store = SQLStorage(reactor, sql_url, synchronous="NORMAL", **kw)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        pytest_twisted.blockon(store.close())


class MessageDeletes:
    """How many messages each DELETE of ``messages`` on the store's writer deleted."""

    def __init__(self, store: SQLStorage) -> None:
        self.counts: list[int] = []
        sa.event.listen(store.write_engine, "after_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM MESSAGES"):
            self.counts.append(cursor.rowcount)


def count(store: SQLStorage, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def fill(store: SQLStorage, n: int, name: str = "q") -> list[int]:
    await make_queue(store, name)
    return await put(store, *[b"m%d" % i for i in range(n)], queue=name)


@pytest_twisted.ensureDeferred
async def test_a_purge_deletes_a_slice_per_transaction_and_other_tenants_write_between(
    open_store,
):
    """10 messages, slices of 3: four transactions (3, 3, 3, 1); a publish of another
    tenant submitted after the purge commits before the purge's last slice."""
    store = open_store(bulk_slice=3)
    await fill(store, 10)
    await make_queue(store, "v", tenant=VICTIM)
    deletes = MessageDeletes(store)
    purged = store.purge_queue(T, "q")
    victim = store.publish(VICTIM, "v", [NewMessage(b"v")], NOW, None)
    await victim
    assert not purged.called
    assert await purged == 10
    assert deletes.counts == [3, 3, 3, 1]
    assert count(store, messages) == 1  # the victim's


@pytest_twisted.ensureDeferred
async def test_a_purge_keeps_messages_published_while_it_runs(open_store):
    """The purge deletes what the queue held when it started: a message published after
    its first slice stays, and is not counted."""
    store = open_store(bulk_slice=2)
    await fill(store, 6)
    purged = store.purge_queue(T, "q")
    later = await put(store, b"later")  # commits after the first slice, before the last
    assert not purged.called
    assert await purged == 6
    with store.engine.connect() as conn:
        left = conn.execute(sa.select(messages.c.marker, messages.c.body)).all()
    assert [tuple(row) for row in left] == [(later[0], b"later")]


@pytest_twisted.ensureDeferred
async def test_a_purge_of_a_slice_unlimited_is_one_delete(open_store):
    store = open_store(bulk_slice=None)
    await fill(store, 10)
    deletes = MessageDeletes(store)
    assert await store.purge_queue(T, "q") == 10
    assert deletes.counts == [10]


@pytest_twisted.ensureDeferred
async def test_a_deleted_queue_is_gone_at_once_and_its_messages_go_in_slices(open_store):
    """The delete answers once the queue's row is gone; its 40 messages are swept 4 per
    transaction afterwards, and another tenant's write commits between the slices."""
    store = open_store(bulk_slice=4)
    await fill(store, 40)
    await make_queue(store, "v", tenant=VICTIM)
    deletes = MessageDeletes(store)
    assert await store.delete_queue(T, "q") is True
    victim = store.publish(VICTIM, "v", [NewMessage(b"v")], NOW, None)
    sweeping = victim.addCallback(lambda _: not store.swept().called)
    assert await sweeping  # the victim's publish came back while the sweep went on
    assert await store.get_queue(T, "q") is None
    await store.swept()
    assert deletes.counts == [4] * 10 + [0]
    assert count(store, messages) == 1  # the victim's
    assert count(store, deleted_queues) == 0


@pytest_twisted.ensureDeferred
async def test_a_queue_made_again_after_a_crash_mid_sweep_sees_no_old_message(open_store):
    """The state a crash leaves right after a delete committed: the queue's row gone, its
    messages not yet swept. The queue made again under the name gets a new id (SQLite
    would hand out the deleted highest id again without AUTOINCREMENT) and sees none of
    them; the reaper's next round sweeps them."""
    store = open_store()
    await fill(store, 5, "first")
    await fill(store, 5)  # the highest id: the one SQLite would reuse
    sql = Statements(store.dialect, "test")
    with store.write_engine.begin() as conn:
        assert queues.delete_queue(conn, [(sql, T, "q")]) != [None]
    assert count(store, messages) == 10
    await store.create_queue(T, "q", QueueOptions(), {}, NOW)
    assert (await store.queue_stats(T, "q", NOW)).total == 0
    assert await put(store, b"new") == [1]
    depths = await store.queue_depths(NOW, 1)  # "first", and the rest: "q" alone
    assert [(d.name, d.available) for d in depths.queues] == [("first", 5)]
    assert (depths.others.available, depths.count) == (1, 2)
    assert await store.reap(NOW, 100) == 0
    await store.swept()
    assert count(store, messages) == 6
    assert count(store, deleted_queues) == 0


@pytest_twisted.ensureDeferred
async def test_queue_ids_are_never_reused(open_store):
    store = open_store()
    await make_queue(store, "a")
    await make_queue(store, "b")
    with store.engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT max(id) FROM queues").scalar_one()
    await store.delete_queue(T, "b")
    await make_queue(store, "c")
    with store.engine.connect() as conn:
        after = conn.exec_driver_sql("SELECT id FROM queues WHERE name = 'c'").scalar_one()
    assert after > before


@pytest_twisted.ensureDeferred
async def test_reaping_deletes_at_most_a_batch_of_each_kind_per_transaction(open_store):
    """Expired messages and expired claims, 3 of each per transaction at most."""
    store = open_store()
    await make_queue(store, "q", default_ttl=100.0)
    await put(store, *[b"m%d" % i for i in range(7)])
    for i in range(5):
        await store.claim(T, "q", f"c{i}", 1, 10.0, 0.0, NOW)
    deletes = MessageDeletes(store)
    assert await store.reap(NOW + 20, 3) == 0  # the claims expired, the messages not yet
    assert count(store, claims) == 2
    assert await store.reap(NOW + 200, 3) == 3
    assert count(store, claims) == 0
    assert await store.reap(NOW + 200, 3) == 3
    assert await store.reap(NOW + 200, 3) == 1
    assert deletes.counts == [0, 3, 3, 1]
