"""The queue service's contract on memory, SQLite and PostgreSQL: what the service adds
to storage (ids, argument checks, routing between the transient and durable stores, waiting
and waking, reaping, stopping). What each store does itself is tests/storage.

Each test runs once per backend (the ``service`` fixture); time comes from a task.Clock.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError

from qgate.core.errors import (
    ClaimNotFound,
    InvalidArgument,
    MessageClaimed,
    MessageNotFound,
    QueueNotFound,
    TooLarge,
)
from qgate.core.model import NewMessage, QueueOptions
from tests.support.core import msgs
from tests.support.deferreds import until

T = "tenant-a"


async def bodies_of(service, queue: str, **kw: object) -> list[bytes]:
    found = await service.observe(T, queue, limit=100, **kw)
    return [m.body for m in found]


# -- queues ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_get_update_delete_queue(service):
    queue, created = await service.create_queue(T, "q", metadata={"colour": "red"})
    assert created and queue.name == "q" and queue.metadata == {"colour": "red"}
    again, created = await service.create_queue(T, "q")
    assert not created and again.metadata == {"colour": "red"}
    options = QueueOptions(default_ttl=120.0, max_claim_count=3, dead_letter_queue="dead")
    updated = await service.update_queue(T, "q", options=options, metadata={"a": 1})
    assert updated.options.max_claim_count == 3
    fetched = await service.get_queue(T, "q")
    assert fetched.options == options and fetched.metadata == {"a": 1}
    assert await service.delete_queue(T, "q") is True
    assert await service.delete_queue(T, "q") is False
    with pytest.raises(QueueNotFound):
        await service.get_queue(T, "q")


@pytest_twisted.ensureDeferred
async def test_durability_is_fixed_at_creation(service):
    await service.create_queue(T, "q")
    with pytest.raises(InvalidArgument) as e:
        await service.update_queue(T, "q", options=QueueOptions(durable=False))
    assert e.value.field == "durable"


@pytest_twisted.ensureDeferred
async def test_transient_and_durable_queues_list_together_by_name(service):
    await service.create_queue(T, "b-durable")
    await service.create_queue(T, "a-transient", options=QueueOptions(durable=False))
    await service.create_queue(T, "c-transient", options=QueueOptions(durable=False))
    first = await service.list_queues(T, limit=2)
    assert [q.name for q in first] == ["a-transient", "b-durable"]
    rest = await service.list_queues(T, marker="b-durable", limit=2)
    assert [q.name for q in rest] == ["c-transient"]
    assert [q.options.durable for q in first] == [False, True]


@pytest_twisted.ensureDeferred
async def test_a_name_cannot_be_both_transient_and_durable(service):
    await service.create_queue(T, "q")
    queue, created = await service.create_queue(T, "q", options=QueueOptions(durable=False))
    assert not created and queue.options.durable


@pytest.mark.parametrize("bad", ["", "a" * 65, "has space", "slash/name", "ünï"])
@pytest_twisted.ensureDeferred
async def test_bad_queue_names_are_rejected_naming_the_field(service, bad):
    with pytest.raises(InvalidArgument) as e:
        await service.create_queue(T, bad)
    assert e.value.field == "queue_name"


@pytest_twisted.ensureDeferred
async def test_tenants_never_see_each_others_queues(service):
    await service.publish("alice", "shared-name", msgs(b"alice's"))
    await service.publish("bob", "shared-name", msgs(b"bob's"))
    await service.create_queue("alice", "only-alice")
    assert [q.name for q in await service.list_queues("bob")] == ["shared-name"]
    claim = await service.claim("bob", "shared-name", limit=10)
    assert [m.body for m in claim.messages] == [b"bob's"]
    with pytest.raises(QueueNotFound):
        await service.queue_stats("bob", "only-alice")
    assert (await service.queue_stats("alice", "shared-name")).available == 1


# -- publishing ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_publish_to_a_missing_queue_creates_it_unless_told_not_to(service):
    await service.publish(T, "lazy", msgs(b"x"))
    assert (await service.get_queue(T, "lazy")).options.durable
    with pytest.raises(QueueNotFound):
        await service.publish(T, "strict", msgs(b"x"), create=False)


@pytest_twisted.ensureDeferred
async def test_a_rejected_batch_stores_nothing(service, clock):
    await service.create_queue(T, "q")
    limit = service.limits.max_body
    bad_batches = [
        (msgs(b"ok", b"x" * (limit + 1)), TooLarge, "messages[1].body"),
        ([NewMessage(b"ok"), NewMessage(b"bad", ttl=0)], InvalidArgument, "messages[1].ttl"),
        (
            [NewMessage(b"ok"), NewMessage(b"bad", priority=10)],
            InvalidArgument,
            "messages[1].priority",
        ),
        (msgs(*[b"m"] * (service.limits.max_batch + 1)), TooLarge, "messages"),
        ([], InvalidArgument, "messages"),
    ]
    for batch, error, field in bad_batches:
        with pytest.raises(error) as e:
            await service.publish(T, "q", batch)
        assert e.value.field == field
    assert (await service.queue_stats(T, "q")).total == 0


# -- reading, deleting -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_message_and_missing_ids(service):
    ids = await service.publish(T, "q", msgs(b"a"))
    assert (await service.get_message(T, "q", ids[0])).body == b"a"
    for missing in ("999", "not-a-number", "-1"):
        with pytest.raises(MessageNotFound):
            await service.get_message(T, "q", missing)
    assert await service.get_messages(T, "q", ["999", ids[0], "junk"]) != []


@pytest_twisted.ensureDeferred
async def test_observe_reads_after_a_marker_without_changing_anything(service):
    ids = await service.publish(T, "q", msgs(b"a", b"b", b"c", b"d"))
    page = await service.observe(T, "q", limit=2)
    assert [m.body for m in page] == [b"a", b"b"]
    page2 = await service.observe(T, "q", after=page[-1].id, limit=2)
    assert [m.body for m in page2] == [b"c", b"d"]
    assert await service.observe(T, "q", after=ids[-1]) == []
    # Every observer sees everything: nothing was consumed.
    assert await bodies_of(service, "q") == [b"a", b"b", b"c", b"d"]


@pytest_twisted.ensureDeferred
async def test_delete_by_ids_and_claimed_messages_need_their_claim(service):
    ids = await service.publish(T, "q", msgs(b"a", b"b", b"c"))
    claim = await service.claim(T, "q", limit=1)
    claimed_id = claim.messages[0].id
    with pytest.raises(MessageClaimed):
        await service.delete_messages(T, "q", [claimed_id])
    assert await service.delete_messages(T, "q", [claimed_id], claim_id="wrong") == []
    assert await service.delete_messages(T, "q", [claimed_id], claim_id=claim.id) == [claimed_id]
    assert await service.delete_messages(T, "q", ids[1:] + ["404"]) == ids[1:]
    assert (await service.queue_stats(T, "q")).total == 0


# -- claims ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_claimed_message_is_invisible_to_other_claimers_until_the_lease_ends(
    service, clock
):
    await service.publish(T, "q", msgs(b"job"))
    first = await service.claim(T, "q", limit=5, ttl=30)
    assert [m.body for m in first.messages] == [b"job"]
    assert first.messages[0].claim_count == 1
    assert await service.claim(T, "q") is None
    stats = await service.queue_stats(T, "q")
    assert (stats.total, stats.claimed, stats.available) == (1, 1, 0)
    clock.advance(29)
    assert await service.claim(T, "q") is None
    clock.advance(1)
    second = await service.claim(T, "q", ttl=30)
    assert [m.body for m in second.messages] == [b"job"]
    assert second.messages[0].claim_count == 2
    # The first claim's lease is over: its ack no longer deletes the message.
    assert await service.ack(T, "q", first.id, [first.messages[0].id]) == []
    assert await service.ack(T, "q", second.id, [second.messages[0].id]) == [second.messages[0].id]
    assert (await service.queue_stats(T, "q")).total == 0


@pytest_twisted.ensureDeferred
async def test_get_renew_and_release_a_claim(service, clock):
    await service.publish(T, "q", msgs(b"a", b"b"))
    claim = await service.claim(T, "q", limit=2, ttl=20)
    got = await service.get_claim(T, "q", claim.id)
    assert [m.body for m in got.messages] == [b"a", b"b"] and got.ttl == 20
    clock.advance(15)
    await service.renew_claim(T, "q", claim.id, ttl=20)
    clock.advance(15)
    assert await service.claim(T, "q") is None  # renewed lease still holds
    assert await service.release(T, "q", claim.id, ids=[claim.messages[0].id]) == 1
    again = await service.claim(T, "q")
    assert [m.body for m in again.messages] == [b"a"]
    assert await service.release(T, "q", claim.id) == 1
    with pytest.raises(ClaimNotFound):
        await service.get_claim(T, "q", claim.id)
    with pytest.raises(ClaimNotFound):
        await service.renew_claim(T, "q", claim.id, ttl=20)


@pytest_twisted.ensureDeferred
async def test_over_claimed_messages_move_to_the_dead_letter_queue(service):
    options = QueueOptions(max_claim_count=2, dead_letter_queue="dead", dead_letter_ttl=500)
    await service.create_queue(T, "q", options=options)
    await service.publish(T, "q", msgs(b"poison", b"fine"))
    for _ in range(2):
        claim = await service.claim(T, "q", limit=1)
        assert claim.messages[0].body == b"poison"
        await service.release(T, "q", claim.id)
    third = await service.claim(T, "q", limit=1)
    assert [m.body for m in third.messages] == [b"fine"]
    dead = await service.observe(T, "dead", limit=10)
    assert [m.body for m in dead] == [b"poison"]
    assert dead[0].expires_at == pytest.approx(service.clock.seconds() + 500)
    assert (await service.queue_stats(T, "q")).total == 1


@pytest_twisted.ensureDeferred
async def test_claim_arguments_are_checked(service):
    await service.create_queue(T, "q")
    for kwargs, field in [
        ({"limit": 0}, "limit"),
        ({"limit": service.limits.max_claim + 1}, "limit"),
        ({"ttl": 0}, "ttl"),
        ({"grace": -1}, "grace"),
        ({"wait": -1}, "wait"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            await service.claim(T, "q", **kwargs)
        assert e.value.field == field


# -- time ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_time_is_the_clock_and_reap_clears_both_stores(service, clock):
    await service.create_queue(T, "t", options=QueueOptions(durable=False))
    await service.publish(T, "q", [NewMessage(b"durable", ttl=10)])
    await service.publish(T, "t", [NewMessage(b"transient", ttl=10)])
    clock.advance(9.999)
    assert await bodies_of(service, "q") == [b"durable"]
    assert await bodies_of(service, "t") == [b"transient"]
    clock.advance(0.001)
    assert await bodies_of(service, "q") == [] and await bodies_of(service, "t") == []
    assert await service.reap() == 2
    assert await service.reap() == 0
    assert await service.claim(T, "q") is None


# -- waiting ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_waiting_claim_wakes_on_publish(service):
    await service.create_queue(T, "q")
    d = service.claim(T, "q", wait=30)
    await until(lambda: service.waiting(T, "q") == 1)
    assert not d.called
    await service.publish(T, "q", msgs(b"wake"))
    claim = await d
    assert [m.body for m in claim.messages] == [b"wake"]
    assert service.waiting(T, "q") == 0


@pytest_twisted.ensureDeferred
async def test_a_waiting_observe_wakes_on_publish_and_times_out_on_the_clock(service, clock):
    await service.create_queue(T, "q")
    d = service.observe(T, "q", wait=10)
    await until(lambda: service.waiting(T, "q") == 1)
    await service.publish(T, "q", msgs(b"seen"))
    assert [m.body for m in await d] == [b"seen"]
    d2 = service.observe(T, "q", after=(await service.observe(T, "q"))[-1].id, wait=10)
    await until(lambda: service.waiting(T, "q") == 1)
    clock.advance(10)
    assert await d2 == []


@pytest_twisted.ensureDeferred
async def test_a_waiting_claim_wakes_when_a_delay_or_lease_ends(service, clock):
    await service.publish(T, "q", [NewMessage(b"delayed", delay=5)])
    d = service.claim(T, "q", wait=30, ttl=20)
    await until(lambda: service.waiting(T, "q") == 1)
    clock.advance(5)
    claim = await d
    assert [m.body for m in claim.messages] == [b"delayed"]
    d2 = service.claim(T, "q", wait=100)
    await until(lambda: service.waiting(T, "q") == 1)
    clock.advance(20)  # the first lease ends
    assert [m.body for m in (await d2).messages] == [b"delayed"]


@pytest_twisted.ensureDeferred
async def test_a_waiting_claim_times_out_with_nothing(service, clock):
    await service.create_queue(T, "q")
    d = service.claim(T, "q", wait=3)
    await until(lambda: service.waiting(T, "q") == 1)
    clock.advance(3)
    assert await d is None
    assert service.waiting(T, "q") == 0


@pytest_twisted.ensureDeferred
async def test_cancelling_a_wait_frees_it_at_once(service, clock):
    await service.create_queue(T, "q")
    d = service.claim(T, "q", wait=30)
    await until(lambda: service.waiting(T, "q") == 1)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert service.waiting(T, "q") == 0
    assert clock.getDelayedCalls() == []
    # The message published afterwards is still there for the next claimer.
    await service.publish(T, "q", msgs(b"kept"))
    assert (await service.claim(T, "q")).messages[0].body == b"kept"


@pytest_twisted.ensureDeferred
async def test_a_waiting_pop_wakes_on_publish_and_leaves_nothing_claimed(service):
    d = service.pop_messages(T, "not-yet", 5, wait=30)  # its first publish creates it
    await until(lambda: service.waiting(T, "not-yet") == 1)
    assert not d.called
    await service.publish(T, "not-yet", msgs(b"a", b"b"))
    assert [m.body for m in await d] == [b"a", b"b"]
    stats = await service.queue_stats(T, "not-yet")
    assert (stats.total, stats.claimed) == (0, 0)
    assert service.waiting(T, "not-yet") == 0


@pytest_twisted.ensureDeferred
async def test_a_waiting_pop_times_out_empty_and_a_cancelled_one_takes_nothing(service, clock):
    await service.create_queue(T, "q")
    d = service.pop_messages(T, "q", 5, wait=3)
    await until(lambda: service.waiting(T, "q") == 1)
    clock.advance(3)
    assert await d == []
    d = service.pop_messages(T, "q", 5, wait=30)
    await until(lambda: service.waiting(T, "q") == 1)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert service.waiting(T, "q") == 0
    assert clock.getDelayedCalls() == []
    await service.publish(T, "q", msgs(b"kept"))
    assert [m.body for m in await service.pop_messages(T, "q", 5)] == [b"kept"]


@pytest.mark.parametrize("dead_exists", [True, False], ids=["existing-dlq", "dlq-on-demand"])
@pytest_twisted.ensureDeferred
async def test_a_waiter_on_the_dead_letter_queue_wakes_when_a_claim_moves_a_message_there(
    service, clock, dead_exists
):
    """The claim that dead-letters a message is a publish to the dead-letter queue: its
    waiters answer as soon as that claim completes, not at their timeout."""
    options = QueueOptions(max_claim_count=1, dead_letter_queue="dead")
    await service.create_queue(T, "q", options=options)
    if dead_exists:
        await service.create_queue(T, "dead")
    await service.publish(T, "q", msgs(b"poison"))
    first = await service.claim(T, "q", limit=1)
    await service.release(T, "q", first.id)
    waiting = service.claim(T, "dead", wait=30)
    await until(lambda: service.waiting(T, "dead") == 1)
    assert await service.claim(T, "q", limit=1) is None  # this claim moves "poison"
    await until(lambda: waiting.called, timeout=2)  # the clock never moves
    claim = await waiting
    assert [m.body for m in claim.messages] == [b"poison"]
    assert service.waiting(T, "dead") == 0


# -- durable subscriptions -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscription_cursors_are_stored_per_queue(service):
    ids = await service.publish(T, "topic", msgs(b"a", b"b"))
    assert await service.get_cursor(T, "topic", "sub-1") is None
    await service.set_cursor(T, "topic", "sub-1", ids[0])
    await service.set_cursor(T, "topic", "sub-1", ids[1])
    await service.set_cursor(T, "topic", "sub-2", ids[0])
    assert await service.get_cursor(T, "topic", "sub-1") == ids[1]
    assert await service.get_cursor(T, "topic", "sub-2") == ids[0]
    await service.set_cursor(T, "topic", "sub-1", None)
    assert await service.get_cursor(T, "topic", "sub-1") is None


@pytest_twisted.ensureDeferred
async def test_a_waiter_may_wait_for_a_queue_that_its_first_publish_creates(service):
    observed = service.observe(T, "not-yet", wait=30)
    claimed = service.claim(T, "not-yet-either", wait=30)
    await until(lambda: service.waiting(T, "not-yet") == 1)
    await until(lambda: service.waiting(T, "not-yet-either") == 1)
    await service.publish(T, "not-yet", msgs(b"first"))
    await service.publish(T, "not-yet-either", msgs(b"job"))
    assert [m.body for m in await observed] == [b"first"]
    assert [m.body for m in (await claimed).messages] == [b"job"]
    with pytest.raises(QueueNotFound):
        await service.observe(T, "still-missing")


@pytest_twisted.ensureDeferred
async def test_ping_says_whether_storage_answers(service):
    assert await service.ping() is True


@pytest_twisted.ensureDeferred
async def test_stopping_answers_parked_waiters_at_once(service):
    await service.create_queue(T, "q")
    d = service.claim(T, "q", wait=60)
    await until(lambda: service.waiting(T, "q") == 1)
    await service.stop()
    assert await d is None


