"""The storage contract, part two: publishing (markers, bounds, all or nothing) and reading
(get, observe, delete, pop, purge, stats)."""

from __future__ import annotations

import pytest
import pytest_twisted

from qgate.core import jsonsafe
from qgate.core.errors import MessageClaimed, QueueFull, TooLarge
from qgate.core.model import Message, NewMessage, ObserveQuery, Overflow
from tests.storage.base import NOW, T, bodies, everything, lease, look, make_queue, put


class MessageContract:
    # -- publishing ------------------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_a_body_jsonsafe_wrote_is_stored_and_read_back_as_plain_bytes(self, store):
        await make_queue(store)
        body = jsonsafe.dumps({"event": "click", "n": 1})
        assert type(body) is jsonsafe.StrictJSON
        [marker] = await put(store, NewMessage(body, content_type="application/json"))
        [got] = await store.get_messages(T, "q", [marker], NOW)
        assert got.body == b'{"event":"click","n":1}' and isinstance(got.body, bytes)

    @pytest_twisted.ensureDeferred
    async def test_a_publish_stores_every_field_and_returns_increasing_markers(self, store):
        await make_queue(store, default_ttl=100.0, default_delay=5.0)
        first = await put(
            store,
            NewMessage(
                b"\x00binary\xff",
                content_type="application/x-thing",
                headers={"k": "v", "ü": "ñ"},
                producer="p1",
                priority=7,
                ttl=50.0,
                delay=0.0,
            ),
            NewMessage(b"defaults"),
        )
        second = await put(store, b"later", now=NOW + 1)
        assert first[0] < first[1] < second[0]
        got = await store.get_messages(T, "q", first, NOW + 5)
        assert got == [
            Message(
                first[0],
                b"\x00binary\xff",
                "application/x-thing",
                {"k": "v", "ü": "ñ"},
                "p1",
                7,
                NOW,
                NOW + 50,
                NOW,
                None,
                None,
                0,
            ),
            Message(
                first[1],
                b"defaults",
                "application/octet-stream",
                {},
                None,
                4,
                NOW,
                NOW + 100,  # the queue's default ttl
                NOW + 5,  # and its default delay
                None,
                None,
                0,
            ),
        ]

    @pytest_twisted.ensureDeferred
    async def test_a_bounded_queue_rejects_a_whole_batch_that_does_not_fit(self, store):
        await make_queue(store, max_messages=3)
        await put(store, b"1", b"2")
        with pytest.raises(QueueFull):
            await put(store, b"3", b"4")
        assert await everything(store) == [b"1", b"2"]
        [third] = await put(store, b"3")
        with pytest.raises(QueueFull):
            await put(store, b"4")
        assert await everything(store) == [b"1", b"2", b"3"]
        await store.delete_messages(T, "q", [third], None, NOW)
        [fourth] = await put(store, b"4")
        assert fourth > third  # refused publishes never make markers go back

    @pytest_twisted.ensureDeferred
    async def test_a_queue_bounded_by_bytes_rejects_what_does_not_fit(self, store):
        await make_queue(store, max_bytes=10)
        await put(store, b"12345", b"67890")
        with pytest.raises(QueueFull):
            await put(store, b"!")
        await make_queue(store, "roomy", max_bytes=10, overflow=Overflow.DROP_OLDEST)
        with pytest.raises(QueueFull):  # larger than the bound itself: no policy helps
            await put(store, b"x" * 11, queue="roomy")
        assert await everything(store) == [b"12345", b"67890"]
        assert await everything(store, "roomy") == []

    @pytest_twisted.ensureDeferred
    async def test_drop_oldest_makes_room_for_the_newest(self, store):
        await make_queue(store, max_messages=3, overflow=Overflow.DROP_OLDEST)
        for body in (b"1", b"2", b"3", b"4"):
            await put(store, body)
        await put(store, b"5", b"6")
        assert await everything(store) == [b"4", b"5", b"6"]
        await make_queue(store, "bytes", max_bytes=6, overflow=Overflow.DROP_OLDEST)
        await put(store, b"aa", b"bb", b"cc", queue="bytes")
        await put(store, b"ddd", queue="bytes")
        assert await everything(store, "bytes") == [b"cc", b"ddd"]
        with pytest.raises(QueueFull):
            await put(store, b"a", b"b", b"c", b"d", queue="q")  # a batch over the bound
        assert await everything(store) == [b"4", b"5", b"6"]

    @pytest_twisted.ensureDeferred
    async def test_a_publish_over_max_post_bytes_is_too_large_and_stores_nothing(self, store):
        await make_queue(store, max_post_bytes=10)
        with pytest.raises(TooLarge) as e:
            await put(store, b"123456", b"78901")
        assert e.value.field == "messages" and "max_post_bytes 10" in str(e.value)
        assert await everything(store) == []
        await put(store, b"12345", b"67890")
        assert await everything(store) == [b"12345", b"67890"]

    # -- reading ---------------------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_get_messages_returns_live_ones_in_the_order_asked(self, store):
        await make_queue(store)
        a, b, c = await put(store, b"a", NewMessage(b"b", ttl=5.0), b"c")
        got = await store.get_messages(T, "q", [c, 999, a, b], NOW)
        assert [m.body for m in got] == [b"c", b"a", b"b"]
        later = await store.get_messages(T, "q", [c, a, b], NOW + 5)
        assert [m.body for m in later] == [b"c", b"a"]
        assert await store.get_messages(T, "q", [], NOW) == []

    @pytest_twisted.ensureDeferred
    async def test_observe_pages_after_a_marker_and_changes_nothing(self, store):
        await make_queue(store)
        markers = await put(store, b"a", b"b", b"c", b"d")
        page = await store.observe(T, "q", ObserveQuery(2), NOW)
        assert [m.body for m in page] == [b"a", b"b"]
        rest = await store.observe(T, "q", ObserveQuery(2, after=page[-1].marker), NOW)
        assert [m.body for m in rest] == [b"c", b"d"]
        assert await look(store, after=markers[-1]) == []
        assert await bodies(store, after=0) == [b"a", b"b", b"c", b"d"]
        stats = await store.queue_stats(T, "q", NOW)
        assert (stats.total, stats.available) == (4, 4)

    @pytest_twisted.ensureDeferred
    async def test_observe_leaves_out_claimed_delayed_and_excluded_messages_unless_asked(
        self, store
    ):
        await make_queue(store)
        await put(
            store,
            NewMessage(b"mine", producer="me"),
            NewMessage(b"theirs", producer="them"),
            NewMessage(b"nobody's"),
            NewMessage(b"later", delay=30.0),
            NewMessage(b"claimed", priority=9),
        )
        await lease(store, "c1", 1, ttl=10.0)
        visible = [b"mine", b"theirs", b"nobody's"]
        assert await bodies(store) == visible
        assert await bodies(store, claimed=True) == [*visible, b"claimed"]
        assert await bodies(store, delayed=True) == [*visible, b"later"]
        assert await bodies(store, claimed=True, delayed=True) == [*visible, b"later", b"claimed"]
        assert await bodies(store, exclude="me") == [b"theirs", b"nobody's"]
        # Once the lease is over the claimed one is plainly visible; after the delay, later.
        assert await bodies(store, now=NOW + 10) == [*visible, b"claimed"]
        assert await bodies(store, now=NOW + 30) == [*visible, b"later", b"claimed"]

    @pytest_twisted.ensureDeferred
    async def test_a_claimed_message_is_deleted_only_with_its_claim(self, store):
        await make_queue(store)
        a, b, c = await put(store, b"a", b"b", b"c")
        [held] = await lease(store, "c1", 1)
        with pytest.raises(MessageClaimed):
            await store.delete_messages(T, "q", [b, a, c], None, NOW)
        assert await everything(store) == [b"a", b"b", b"c"]  # the call changed nothing
        assert await store.delete_messages(T, "q", [a, b], "c2", NOW) == []
        assert await store.delete_messages(T, "q", [c, a, b], "c1", NOW) == [held.marker]
        assert await store.delete_messages(T, "q", [c, 404, b, c], None, NOW) == [b, c]
        assert await everything(store) == []

    @pytest_twisted.ensureDeferred
    async def test_a_message_whose_lease_ended_is_deleted_without_a_claim(self, store):
        await make_queue(store)
        [a] = await put(store, b"a")
        await lease(store, "c1", ttl=10.0)
        assert await store.delete_messages(T, "q", [a], None, NOW + 10) == [a]

    @pytest_twisted.ensureDeferred
    async def test_pop_takes_and_deletes_in_claim_order(self, store):
        await make_queue(store)
        await put(
            store,
            NewMessage(b"low", priority=1),
            NewMessage(b"high", priority=8),
            NewMessage(b"delayed", priority=9, delay=10.0),
            b"mid",
            b"mid-2",
        )
        await lease(store, "c1", 1)  # takes "high"
        popped = await store.pop_messages(T, "q", 2, NOW)
        assert [m.body for m in popped] == [b"mid", b"mid-2"]
        assert all(m.claim_id is None for m in popped)
        assert await everything(store) == [b"low", b"high", b"delayed"]
        assert [m.body for m in await store.pop_messages(T, "q", 5, NOW + 10)] == [
            b"delayed",
            b"low",
        ]

    @pytest_twisted.ensureDeferred
    async def test_purge_empties_a_queue_and_keeps_it_its_cursors_and_its_markers(self, store):
        await make_queue(store)
        markers = await put(store, b"a", b"b", b"c")
        await lease(store, "c1", 1)
        await store.set_cursor(T, "q", "sub", markers[1])
        assert await store.purge_queue(T, "q") == 3
        assert await everything(store) == []
        assert await store.get_claim(T, "q", "c1", NOW) is None
        assert await store.get_cursor(T, "q", "sub") == markers[1]
        assert await store.get_queue(T, "q") is not None
        [after] = await put(store, b"d")
        assert after > markers[-1]  # markers never go back, not even after a purge
        assert await store.purge_queue(T, "q") == 1

    @pytest_twisted.ensureDeferred
    async def test_a_queue_deleted_and_made_again_holds_none_of_the_old_messages(self, store):
        """Whether or not the old messages are swept yet (SQL sweeps them after the
        delete has answered), the new queue under the name sees only its own."""
        await make_queue(store, "other")
        await make_queue(store)
        await put(store, b"old-1", b"old-2")
        await lease(store, "c1", 1)
        assert await store.delete_queue(T, "q") is True
        await make_queue(store)
        assert await everything(store) == []
        assert await store.get_claim(T, "q", "c1", NOW) is None
        await put(store, b"new")
        assert await everything(store) == [b"new"]
        assert await store.purge_queue(T, "q") == 1
        assert (await store.tenant_usage(T, NOW)).messages == 0

    @pytest_twisted.ensureDeferred
    async def test_stats_count_each_live_message_once(self, store):
        await make_queue(store)
        stats = await store.queue_stats(T, "q", NOW)
        assert (stats.total, stats.oldest, stats.newest) == (0, None, None)
        first, *_ = await put(
            store,
            b"available",
            NewMessage(b"delayed", delay=20.0),
            NewMessage(b"claimed", priority=9),
            NewMessage(b"short-lived", ttl=5.0),
        )
        [last] = await put(store, b"newest", now=NOW + 1)
        await lease(store, "c1", 1, ttl=10.0, now=NOW + 1)
        stats = await store.queue_stats(T, "q", NOW + 1)
        assert (stats.total, stats.available, stats.claimed, stats.delayed) == (5, 3, 1, 1)
        assert (stats.oldest.marker, stats.newest.marker) == (first, last)
        later = await store.queue_stats(T, "q", NOW + 11)  # short-lived gone, lease over
        assert (later.total, later.available, later.claimed, later.delayed) == (4, 3, 0, 1)
        assert later.oldest.body == b"available"
