"""The dead-letter policy as decisions (core.dead_letter): what memory and SQL both move."""

from __future__ import annotations

from qgate.core.dead_letter import (
    MIN_DEAD_LIFE,
    claim_order,
    dead_letter_expiry,
    dead_letter_options,
    is_dead,
)
from qgate.core.model import QueueOptions

NOW = 1_000_000.0


def test_a_message_claimed_exactly_max_claim_count_times_is_dead():
    options = QueueOptions(max_claim_count=3)
    assert [is_dead(options, n) for n in (0, 1, 2, 3, 4)] == [False, False, False, True, True]


def test_without_max_claim_count_nothing_is_ever_dead():
    assert not is_dead(QueueOptions(), 10**9)


def test_with_a_dead_letter_ttl_a_moved_message_lives_that_long_from_now():
    options = QueueOptions(dead_letter_ttl=500.0)
    assert dead_letter_expiry(options, NOW + 10_000, NOW) == NOW + 500
    assert dead_letter_expiry(options, NOW + 0.1, NOW) == NOW + 500


def test_without_a_dead_letter_ttl_a_moved_message_keeps_its_own_expiry():
    options = QueueOptions()
    assert dead_letter_expiry(options, NOW + 1000, NOW) == NOW + 1000
    assert dead_letter_expiry(options, NOW + MIN_DEAD_LIFE, NOW) == NOW + MIN_DEAD_LIFE


def test_without_a_dead_letter_ttl_a_moved_message_has_at_least_a_second_to_live():
    assert MIN_DEAD_LIFE == 1.0
    assert dead_letter_expiry(QueueOptions(), NOW + 0.5, NOW) == NOW + 1.0
    assert dead_letter_expiry(QueueOptions(), NOW - 5, NOW) == NOW + 1.0


def test_a_dead_letter_queue_made_on_demand_has_the_defaults_and_the_source_durability():
    source = QueueOptions(
        durable=False, default_ttl=60.0, max_messages=5, max_claim_count=2, dead_letter_queue="d"
    )
    assert dead_letter_options(source) == QueueOptions(durable=False)
    assert dead_letter_options(QueueOptions(durable=True)) == QueueOptions(durable=True)


def test_claims_meet_the_highest_priority_first_then_the_oldest():
    met = [(1, 5), (9, 7), (4, 2), (9, 3), (4, 1)]  # (priority, marker)
    ordered = sorted(met, key=lambda pm: claim_order(*pm))
    assert ordered == [(9, 3), (9, 7), (4, 1), (4, 2), (1, 5)]
