"""What only the SQL backend has: concurrent stores on one database, group commit,
migrations, and cross-process wakeups (PostgreSQL LISTEN/NOTIFY)."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from twisted.internet import defer, task
from twisted.internet.task import Clock

from qgate.core.errors import QueueNotFound
from qgate.core.model import NewMessage, ObserveQuery, QueueOptions, Subscription
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.migrate import current_revision, head_revision, upgrade
from qgate.storage.sql.schema import metadata
from qgate.storage.sql.store import SQLStorage, make_engine
from qgate.storage.sql.writer import FIRST_BACKOFF, GroupCommitWriter, each
from tests.support.core import EPOCH, TEST_LIMITS
from tests.support.deferreds import until
from tests.support.stores import clean_pg, sqlite_url

T = "t"


def hold(writer: GroupCommitWriter) -> tuple[threading.Event, defer.Deferred[None]]:
    """Keep ``writer`` busy with a batch that waits until the returned event is set: what
    is submitted meanwhile queues behind it and is taken as the next batch, together."""
    started, gate = threading.Event(), threading.Event()

    @each
    def block(conn: sa.Connection) -> None:
        started.set()
        gate.wait(5)

    held = writer.submit(block)
    assert started.wait(5)
    return gate, held


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request, tmp_path):
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url = request.getfixturevalue("pg_database")
    clean_pg(url)
    return url


def make_service(reactor, url: str, clock: Clock | None = None) -> tuple[QueueService, SQLStorage]:
    store = SQLStorage(reactor, url, synchronous="NORMAL")
    service = QueueService(clock or Clock(), store, MemoryStorage(), limits=TEST_LIMITS)
    return service, store


@pytest_twisted.ensureDeferred
async def test_eight_concurrent_claimers_get_every_message_exactly_once(reactor, sql_url, clock):
    """Eight stores, each with its own writer connection, like eight qgate processes."""
    services = [make_service(reactor, sql_url, clock) for _ in range(8)]
    first = services[0][0]
    total = 10_000
    await first.create_queue(T, "jobs")
    for start in range(0, total, 100):
        await first.publish(T, "jobs", [NewMessage(b"%d" % i) for i in range(start, start + 100)])

    received: list[list[bytes]] = [[] for _ in services]

    async def consume(index: int, service: QueueService) -> None:
        while True:
            claim = await service.claim(T, "jobs", limit=50, ttl=600)
            if claim is None:
                return
            received[index] += [m.body for m in claim.messages]
            await service.ack(T, "jobs", claim.id, [m.id for m in claim.messages])

    try:
        await defer.gatherResults(
            [defer.ensureDeferred(consume(i, s)) for i, (s, _) in enumerate(services)],
            consumeErrors=True,
        )
    finally:
        for _, store in services:
            await store.close()
    everything = [body for part in received for body in part]
    assert len(everything) == total
    assert set(everything) == {b"%d" % i for i in range(total)}
    assert sum(1 for part in received if part) >= 2  # the work really was shared


@pytest_twisted.ensureDeferred
async def test_concurrent_publishes_share_commits(reactor, sql_url):
    service, store = make_service(reactor, sql_url)
    try:
        await service.create_queue(T, "q")
        before = store.writer.stats()
        ids = await defer.gatherResults(
            [service.publish(T, "q", [NewMessage(b"%d" % i)]) for i in range(200)]
        )
        done = store.writer.stats() - before
        assert done.operations == 200
        assert done.batches < 100  # many callers per transaction
        flat = [i for group in ids for i in group]
        assert len(set(flat)) == 200
        assert (await service.queue_stats(T, "q")).total == 200
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_the_writer_counts_its_batches_operations_and_statements(reactor, sql_url):
    """Publishes of one queue sharing a transaction are two statements, a marker UPDATE
    and one multi-row INSERT; a claim is three (the queue, the lease, the claim record),
    a lone ack one DELETE. SQLite's BEGIN IMMEDIATE is a statement too (psycopg2 begins
    by itself), and the writer's busy time grows with every batch."""
    store = SQLStorage(reactor, sql_url, synchronous="NORMAL")
    begin = 1 if store.dialect == "sqlite" else 0
    try:
        await store.create_queue(T, "q", QueueOptions(), {}, EPOCH)
        before = store.writer.stats()
        gate, held = hold(store.writer)  # the publishes below queue behind it
        publishes = [
            store.publish(T, "q", [NewMessage(b"%d" % i)] * 2, EPOCH, None) for i in range(5)
        ]
        gate.set()
        await held
        ids = sorted(await defer.gatherResults(publishes))
        assert ids == [[2 * i + 1, 2 * i + 2] for i in range(5)]
        published = store.writer.stats()
        done = published - before
        assert (done.batches, done.operations, done.statements) == (2, 6, 2 * begin + 2)
        assert done.busy_seconds > 0

        found = await store.claim(T, "q", "c1", 4, 60, 60, EPOCH + 1)
        claimed = store.writer.stats()
        done = claimed - published
        assert (done.batches, done.operations, done.statements) == (1, 1, begin + 3)

        markers = [msg.marker for msg in found]
        assert await store.ack(T, "q", "c1", markers, EPOCH + 2) == markers
        done = store.writer.stats() - claimed
        assert (done.batches, done.operations, done.statements) == (1, 1, begin + 1)
        assert done.busy_seconds > 0
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_publish_in_a_shared_transaction_fails_alone(reactor, sql_url):
    service, store = make_service(reactor, sql_url)
    try:
        await service.create_queue(T, "q")
        results = await defer.DeferredList(
            [
                service.publish(T, "q", [NewMessage(b"fine-1")]),
                service.publish(T, "missing", [NewMessage(b"lost")], create=False),
                service.publish(T, "q", [NewMessage(b"fine-2")]),
            ],
            consumeErrors=True,
        )
        assert [ok for ok, _ in results] == [True, False, True]
        assert results[1][1].check(QueueNotFound)
        bodies = [m.body for m in await service.observe(T, "q")]
        assert bodies == [b"fine-1", b"fine-2"]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_database_error_rolls_back_only_its_own_operation(reactor, tmp_path):
    url = f"sqlite:///{tmp_path}/w.db"
    engine = make_engine(url, writer=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(reactor, engine)

    @each
    def insert(conn: sa.Connection, x: int) -> int:
        conn.exec_driver_sql(f"INSERT INTO t VALUES ({x})")
        return x

    try:
        gate, held = hold(writer)  # so the next three share a batch
        ds = [writer.submit(insert, 1), writer.submit(insert, 1), writer.submit(insert, 2)]
        gate.set()
        await held
        results = await defer.DeferredList(ds, consumeErrors=True)
        assert [ok for ok, _ in results] == [True, False, True]
        assert results[1][1].check(sa.exc.IntegrityError)
        with engine.connect() as conn:
            assert [r[0] for r in conn.exec_driver_sql("SELECT x FROM t ORDER BY x")] == [1, 2]
    finally:
        await writer.close()
        engine.dispose()


def test_migrations_build_exactly_the_schema_the_code_uses(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    assert current_revision(url) == head_revision()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []
    upgrade(url)  # idempotent


def test_the_push_subscriptions_migration_keeps_the_durable_cursors(tmp_path):
    """0003 adds ``push_subscriptions`` beside the STOMP cursors' ``subscriptions``."""
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url, "0002")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO subscriptions VALUES (1, 's', 7)")
    upgrade(url)
    with engine.connect() as conn:
        cursors = conn.exec_driver_sql("SELECT queue_id, name, marker FROM subscriptions").all()
        pushed = conn.exec_driver_sql("SELECT count(*) FROM push_subscriptions").scalar()
    engine.dispose()
    assert [tuple(row) for row in cursors] == [(1, "s", 7)]
    assert pushed == 0


def test_the_queue_sweeps_migration_keeps_the_queues_and_never_reuses_their_ids(tmp_path):
    """0006 rebuilds ``queues`` on SQLite with AUTOINCREMENT: rows, ids and the unique
    name stay, and the highest id, once deleted, is not handed out again."""
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url, "0005")
    engine = sa.create_engine(url)
    insert = (
        "INSERT INTO queues (tenant, name, options, metadata, created_at, last_marker)"
        " VALUES ('t', '{0}', '{{}}', '{{}}', 0, 7)"
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(insert.format("a"))
        conn.exec_driver_sql(insert.format("b"))
    upgrade(url)
    with engine.begin() as conn:
        rows = conn.exec_driver_sql("SELECT id, name, last_marker FROM queues ORDER BY id")
        assert [tuple(row) for row in rows] == [(1, "a", 7), (2, "b", 7)]
        with pytest.raises(sa.exc.IntegrityError):
            with conn.begin_nested():
                conn.exec_driver_sql(insert.format("a"))
        conn.exec_driver_sql("DELETE FROM queues WHERE id = 2")
        conn.exec_driver_sql(insert.format("c"))
        assert conn.exec_driver_sql("SELECT id FROM queues WHERE name = 'c'").scalar() == 3
        assert conn.exec_driver_sql("SELECT count(*) FROM deleted_queues").scalar() == 0
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_push_subscriptions_and_their_positions_outlive_the_process(reactor, sql_url, clock):
    service, store = make_service(reactor, sql_url, clock)
    try:
        await service.publish(T, "q", [NewMessage(b"before")])
        sub, _ = await service.create_subscription(T, "q", "http://hooks.example/x", ttl=600)
        assert await store.advance_subscription(T, "q", sub.id, 5, clock.seconds()) == 5
    finally:
        await store.close()
    again, store = make_service(reactor, sql_url, clock)  # a new process, the same database
    try:
        found = await again.get_subscription(T, "q", sub.id)
    finally:
        await store.close()
    assert found == Subscription(
        sub.id, "q", "http://hooks.example/x", 600, {}, EPOCH, EPOCH + 600, False, 5
    )


@pytest.mark.postgres
def test_migrations_match_the_schema_on_postgresql(pg_database):
    from qgate.storage.sql.store import normalize_url

    engine = sa.create_engine(normalize_url(pg_database))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_a_publish_in_one_process_wakes_a_waiter_in_another(reactor, pg_database):
    clean_pg(pg_database)
    waiter, waiter_store = make_service(reactor, pg_database)
    publisher, publisher_store = make_service(reactor, pg_database)
    waiter.start()
    try:
        await publisher.create_queue(T, "q")
        await until(waiter_store.listen_ready.is_set)
        d = waiter.claim(T, "q", wait=60)
        await until(lambda: waiter.waiting(T, "q") == 1)
        # The waiter's clock never moves: only the NOTIFY can wake it.
        await publisher.publish(T, "q", [NewMessage(b"from-elsewhere")])
        claim = await d
        assert [m.body for m in claim.messages] == [b"from-elsewhere"]
    finally:
        await waiter.stop()
        await publisher_store.close()


@pytest_twisted.ensureDeferred
async def test_acks_sharing_a_transaction_delete_only_what_each_claim_holds(
    reactor, sql_url, clock
):
    service, store = make_service(reactor, sql_url, clock)
    try:
        await service.publish(T, "q", [NewMessage(b"%d" % i) for i in range(6)])
        stale = await service.claim(T, "q", limit=2, ttl=10)
        clock.advance(10)  # the stale claim's lease ends; a new claim takes its messages
        fresh = await service.claim(T, "q", limit=2, ttl=60)
        other = await service.claim(T, "q", limit=2, ttl=60)
        assert [m.id for m in fresh.messages] == [m.id for m in stale.messages]
        gate, held = hold(store.writer)  # so the three acks below share one transaction
        before = store.writer.stats().batches
        acks = [
            service.ack(T, "q", stale.id, [m.id for m in stale.messages]),  # too late
            service.ack(T, "q", other.id, [m.id for m in other.messages]),
            service.ack(T, "q", fresh.id, [fresh.messages[0].id]),
        ]
        gate.set()
        await held
        results = await defer.gatherResults(acks)
        assert results == [[], [m.id for m in other.messages], [fresh.messages[0].id]]
        # Whether or not the writer had already taken them with the blocker, the three acks
        # shared one transaction: at most the blocker's batch and one more.
        assert store.writer.stats().batches - before in (1, 2)
        left = await service.observe(T, "q", limit=10, include_claimed=True)
        assert [m.id for m in left] == [fresh.messages[1].id, "5", "6"]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_pop_is_one_statement_and_looks_for_the_queue_only_when_it_finds_nothing(
    reactor, sql_url
):
    store = SQLStorage(reactor, sql_url, synchronous="NORMAL")
    begin = 1 if store.dialect == "sqlite" else 0
    try:
        await store.create_queue(T, "q", QueueOptions(), {}, EPOCH)
        await store.publish(
            T, "q", [NewMessage(b"a", priority=1), NewMessage(b"b", priority=5)], EPOCH, None
        )
        before = store.writer.stats()
        popped = await store.pop_messages(T, "q", 10, EPOCH)
        assert [(m.body, m.headers, m.claim_count) for m in popped] == [
            (b"b", {}, 0),
            (b"a", {}, 0),
        ]
        popping = store.writer.stats() - before
        assert (popping.operations, popping.statements) == (1, begin + 1)
        assert await store.pop_messages(T, "q", 10, EPOCH) == []
        empty = store.writer.stats() - before - popping
        assert (empty.operations, empty.statements) == (1, begin + 2)
        with pytest.raises(QueueNotFound):
            await store.pop_messages(T, "gone", 10, EPOCH)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_prompt_pop_is_answered_while_its_commit_is_still_to_come(reactor, sql_url):
    store = SQLStorage(reactor, sql_url, synchronous="NORMAL")
    try:
        await store.create_queue(T, "q", QueueOptions(), {}, EPOCH)
        await store.publish(T, "q", [NewMessage(b"a"), NewMessage(b"b")], EPOCH, None)
        gate, released = threading.Event(), []

        def hold(conn: sa.Connection) -> None:
            released.append(gate.wait(5))

        sa.event.listen(store.write_engine, "commit", hold)
        try:
            [a] = await store.pop_messages(T, "q", 1, EPOCH, prompt=True)
            assert released == []  # the COMMIT still waits
            plain = store.pop_messages(T, "q", 1, EPOCH)
            gate.set()
            [b] = await plain
            assert released == [True, True]  # the plain pop answered after its commit
        finally:
            sa.event.remove(store.write_engine, "commit", hold)
        assert (a.body, b.body) == (b"a", b"b")
        assert await store.observe(T, "q", ObserveQuery(10), EPOCH) == []
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_what_a_prompt_pop_took_stays_stored_when_its_commit_fails(reactor, sql_url):
    """At-least-once: the popped message was delivered, and is delivered again."""
    store = SQLStorage(reactor, sql_url, synchronous="NORMAL")
    try:
        await store.create_queue(T, "q", QueueOptions(), {}, EPOCH)
        await store.publish(T, "q", [NewMessage(b"a")], EPOCH, None)

        failed = threading.Event()

        def fail(conn: sa.Connection) -> None:
            failed.set()
            raise sa.exc.OperationalError("COMMIT", {}, Exception("the disk is gone"))

        sa.event.listen(store.write_engine, "commit", fail)
        try:
            [a] = await store.pop_messages(T, "q", 1, EPOCH, prompt=True)
            await until(failed.is_set)  # the answer came first, the COMMIT fails after it
        finally:
            sa.event.remove(store.write_engine, "commit", fail)
        await task.deferLater(reactor, 2 * FIRST_BACKOFF, lambda: None)  # the writer's pause
        [again] = await store.pop_messages(T, "q", 1, EPOCH)
        assert (again.marker, again.body) == (a.marker, b"a")
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_acks_past_sqlites_parameter_limit_in_one_transaction_all_delete(reactor, sql_url):
    """1,200 single-message acks (STOMP's client-individual) of 12 claims sharing one
    transaction: SQLite's statements stay within its 999 bound parameters, PostgreSQL
    gets one; every ack deletes its message and nothing else."""
    store = SQLStorage(reactor, sql_url, synchronous="NORMAL", max_batch=2048)
    begin = 1 if store.dialect == "sqlite" else 0
    try:
        await store.create_queue(T, "q", QueueOptions(), {}, EPOCH)
        bodies = [NewMessage(b"%d" % i, headers={"n": str(i)}) for i in range(100)]
        for _ in range(13):
            await store.publish(T, "q", bodies, EPOCH, None)
        claims = [await store.claim(T, "q", f"c{i}", 100, 60, 60, EPOCH) for i in range(12)]
        assert claims[0][5].headers == {"n": "5"}
        before = store.writer.stats()
        gate, held = hold(store.writer)  # the acks below queue behind it
        acks = [
            store.ack(T, "q", f"c{i}", [msg.marker], EPOCH + 1)
            for i, found in enumerate(claims)
            for msg in found
        ]
        gate.set()
        await held
        assert await defer.gatherResults(acks) == [
            [msg.marker] for found in claims for msg in found
        ]
        done = store.writer.stats() - before
        assert done.batches == 2  # the blocker's, then every ack
        expected = 2 if store.dialect == "sqlite" else 1
        assert done.statements == 2 * begin + expected
        left = await store.claim(T, "q", "rest", 100, 60, 60, EPOCH + 1)
        assert [msg.marker for msg in left] == list(range(1201, 1301))
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_acks_sharing_a_transaction_on_a_missing_queue_fail_with_queue_not_found(
    reactor, sql_url
):
    store = SQLStorage(reactor, sql_url, synchronous="NORMAL")
    try:
        gate, held = hold(store.writer)  # so the two acks below share one transaction
        acks = [store.ack(T, "gone", "c1", [1], 0.0), store.ack(T, "gone", "c2", [2], 0.0)]
        gate.set()
        await held
        results = await defer.DeferredList(acks, consumeErrors=True)
        assert [ok for ok, _ in results] == [False, False]
        assert all(f.check(QueueNotFound) for _, f in results)
    finally:
        await store.close()
