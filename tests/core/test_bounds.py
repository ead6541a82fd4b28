"""A queue's bounds as decisions (core.bounds): what memory and SQL both refuse and drop."""

from __future__ import annotations

import pytest

from qgate.core.bounds import admit, bounded, counts_fill, drops_oldest, excess, oldest_to_drop
from qgate.core.errors import QueueFull, TooLarge
from qgate.core.model import NewMessage, Overflow, QueueOptions

REJECT = Overflow.REJECT
DROP = Overflow.DROP_OLDEST


def batch(*sizes: int) -> list[NewMessage]:
    return [NewMessage(b"x" * n) for n in sizes]


def why(refused: object) -> str:
    assert isinstance(refused, QueueFull)
    return str(refused)


def test_an_unbounded_queue_takes_every_batch_whatever_it_holds():
    options = QueueOptions()
    assert admit("q", options, 10**9, 10**12, [batch(1), batch(5, 5, 5)]) == [None, None]
    assert not bounded(options) and not counts_fill(options) and not drops_oldest(options)


def test_a_batch_exactly_at_max_messages_is_taken_and_one_more_is_refused():
    options = QueueOptions(max_messages=3)
    assert admit("q", options, 0, 0, [batch(1, 1, 1)]) == [None]
    assert admit("q", options, 2, 0, [batch(1)]) == [None]
    [refused] = admit("q", options, 3, 0, [batch(1)])
    assert why(refused) == "Queue 'q' is full: max_messages reached"


def test_a_batch_exactly_at_max_bytes_is_taken_and_one_byte_more_is_refused():
    options = QueueOptions(max_bytes=10)
    assert admit("q", options, 0, 4, [batch(3, 3)]) == [None]
    [refused] = admit("q", options, 0, 5, [batch(3, 3)])
    assert why(refused) == "Queue 'q' is full: max_bytes reached"


@pytest.mark.parametrize("overflow", [REJECT, DROP])
def test_a_batch_larger_than_the_bound_itself_is_refused_under_either_policy(overflow):
    by_count = QueueOptions(max_messages=2, overflow=overflow)
    [refused] = admit("q", by_count, 0, 0, [batch(1, 1, 1)])
    assert why(refused) == "Queue 'q' is full: a batch of 3 exceeds max_messages"
    by_bytes = QueueOptions(max_bytes=5, overflow=overflow)
    [refused] = admit("q", by_bytes, 0, 0, [batch(3, 3)])
    assert why(refused) == "Queue 'q' is full: a batch of 6 bytes exceeds max_bytes"


def test_drop_oldest_takes_what_fits_the_bound_however_full_the_queue_is():
    options = QueueOptions(max_messages=3, max_bytes=10, overflow=DROP)
    assert admit("q", options, 3, 10, [batch(5, 5), batch(1, 1, 1)]) == [None, None]
    assert drops_oldest(options) and not counts_fill(options)


def test_a_full_queue_names_max_messages_before_max_bytes():
    options = QueueOptions(max_messages=1, max_bytes=1)
    [refused] = admit("q", options, 1, 1, [batch(1)])
    assert why(refused) == "Queue 'q' is full: max_messages reached"


def test_each_batch_taken_counts_toward_the_next_and_a_refused_one_does_not():
    options = QueueOptions(max_messages=4)
    got = admit("q", options, 1, 0, [batch(1, 1), batch(1, 1), batch(1), batch(1)])
    assert got[0] is None and got[2] is None
    assert why(got[1]) == "Queue 'q' is full: max_messages reached"
    assert why(got[3]) == "Queue 'q' is full: max_messages reached"


def test_max_post_bytes_refuses_with_too_large_before_any_bound_is_counted():
    options = QueueOptions(max_post_bytes=4, max_messages=2)
    got = admit("q", options, 0, 0, [batch(5), batch(2, 2), batch(1)])
    assert isinstance(got[0], TooLarge) and "max_post_bytes 4" in str(got[0])
    assert got[1] is None
    assert why(got[2]) == "Queue 'q' is full: max_messages reached"
    assert admit("q", QueueOptions(max_post_bytes=4), 0, 0, [batch(4)]) == [None]


def test_excess_is_what_a_queue_holds_beyond_each_bound():
    options = QueueOptions(max_messages=3, max_bytes=10, overflow=DROP)
    assert excess(options, 3, 10) == (0, 0)
    assert excess(options, 5, 4) == (2, 0)
    assert excess(options, 2, 13) == (0, 3)
    assert excess(QueueOptions(max_bytes=10), 1000, 11) == (0, 1)


def test_drop_oldest_by_count_drops_just_the_excess_from_the_front():
    oldest = [(1, 1), (2, 1), (3, 1), (4, 1)]
    assert oldest_to_drop((2, 0), oldest) == [1, 2]
    assert oldest_to_drop((0, 0), oldest) == []


def test_drop_oldest_by_bytes_drops_until_enough_bytes_are_freed():
    oldest = [(1, 2), (2, 2), (3, 5), (4, 1)]
    assert oldest_to_drop((0, 3), oldest) == [1, 2]
    assert oldest_to_drop((0, 4), oldest) == [1, 2]
    assert oldest_to_drop((0, 5), oldest) == [1, 2, 3]
    assert oldest_to_drop((3, 1), oldest) == [1, 2, 3]  # both parts are freed


def test_drop_oldest_reads_no_further_than_it_drops():
    read: list[int] = []

    def oldest():
        for marker in range(1, 100):
            read.append(marker)
            yield marker, 1

    assert oldest_to_drop((2, 0), oldest()) == [1, 2]
    assert read == [1, 2]
    assert oldest_to_drop((0, 0), oldest()) == [] and read == [1, 2]


def test_drop_oldest_stops_when_the_queue_runs_out():
    assert oldest_to_drop((5, 100), [(7, 1), (8, 1)]) == [7, 8]
