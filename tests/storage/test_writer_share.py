"""The group-commit writer's fair share: each batch is taken round-robin over the tenants
with operations queued, so one tenant's backlog never keeps another's single write out
of the next transaction, and each tenant's operations keep their order."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer

from qgate.storage.sql.store import make_engine
from qgate.storage.sql.writer import GroupCommitWriter, each


@pytest.fixture
def engine(tmp_path: Any) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/w.db", writer=True, synchronous="OFF")
    yield engine
    engine.dispose()


class Recorder:
    """A group that writes nothing and records, per transaction, the ops it served; and a
    blocker that holds the writer until released, so that a backlog can queue behind."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.started = threading.Event()
        self.gate = threading.Event()

        def record(conn: sa.Connection, batch: Sequence[tuple[Any, ...]]) -> list[Any]:
            self.batches.append([args[0] for args in batch])
            return [args[0] for args in batch]

        self.record = record

        @each
        def block(conn: sa.Connection) -> None:
            self.started.set()
            self.gate.wait(10)

        self.block = block

    def hold(self, writer: GroupCommitWriter) -> defer.Deferred[Any]:
        held = writer.submit(self.block, tenant="someone")
        assert self.started.wait(10)  # the blocker's batch is taken: what follows queues
        return held


@pytest_twisted.ensureDeferred
async def test_one_write_of_a_tenant_is_in_the_first_batch_behind_another_tenants_backlog(
    reactor, engine
):
    """5,000 operations of one tenant, then one of another: the victim's is in the first
    batch taken after them, and the backlog still fills every batch (512 a commit)."""
    rec = Recorder()
    writer = GroupCommitWriter(reactor, engine, max_batch=512)
    try:
        held = rec.hold(writer)
        backlog = [writer.submit(rec.record, ("heavy", i), tenant="heavy") for i in range(5000)]
        victim = writer.submit(rec.record, ("victim", 0), tenant="victim")
        rec.gate.set()
        await held
        assert await victim == ("victim", 0)
        await defer.gatherResults(backlog)
    finally:
        await writer.close()
    assert ("victim", 0) in rec.batches[0]
    assert [len(b) for b in rec.batches] == [512] * 9 + [5001 - 9 * 512]
    served = [op for batch in rec.batches for op in batch if op[0] == "heavy"]
    assert served == [("heavy", i) for i in range(5000)]  # the tenant's own order


@pytest_twisted.ensureDeferred
async def test_batches_take_tenants_in_turn_and_each_tenants_ops_in_order(reactor, engine):
    """One operation of each tenant with work queued, round after round; a round cut
    short by a full batch carries on in the next batch where it stopped."""
    rec = Recorder()
    writer = GroupCommitWriter(reactor, engine, max_batch=4)
    try:
        held = rec.hold(writer)
        ds = [writer.submit(rec.record, f"A{i}", tenant="A") for i in range(5)]
        ds += [writer.submit(rec.record, f"B{i}", tenant="B") for i in range(2)]
        ds += [writer.submit(rec.record, "C0", tenant="C")]
        rec.gate.set()
        await held
        await defer.gatherResults(ds)
    finally:
        await writer.close()
    assert rec.batches == [["A0", "B0", "C0", "A1"], ["B1", "A2", "A3", "A4"]]


@pytest_twisted.ensureDeferred
async def test_close_fires_after_every_tenants_queued_operation_is_committed(reactor, engine):
    """The stop mark comes after everything submitted before it, whichever lane it is in."""
    rec = Recorder()
    writer = GroupCommitWriter(reactor, engine, max_batch=3)
    held = rec.hold(writer)
    ds = [writer.submit(rec.record, f"{t}{i}", tenant=t) for i in range(4) for t in "XYZ"]
    closed = writer.close()
    rec.gate.set()
    await closed
    assert all(d.called for d in ds)
    await held
    assert sorted(await defer.gatherResults(ds)) == sorted(
        f"{t}{i}" for i in range(4) for t in "XYZ"
    )
    assert sum(len(b) for b in rec.batches) == 12
