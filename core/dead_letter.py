"""The dead-letter policy as decisions: which messages a claim takes out of the queue
instead of leasing them, and how they arrive in the dead-letter queue.

Pure functions of plain values; every store calls them and keeps only its own I/O. The
rules: a claim that meets a message already claimed ``max_claim_count`` times does not
lease it; it moves it to the queue's ``dead_letter_queue`` (or drops it when there is
none) and takes the next one in its place. The moved messages arrive in the order the
claim met them (``claim_order``), available at once and unclaimed, keeping their body,
headers, producer, priority, created time and claim count. A dead-letter queue that does
not exist yet is created on demand in the same store, so as durable as the queue it serves.
"""

from __future__ import annotations

from qgate.core.model import QueueOptions

#: The least a moved message has left to live without a ``dead_letter_ttl``: long enough
#: for someone to see it, however close to its end the source queue let it come.
MIN_DEAD_LIFE = 1.0


def is_dead(options: QueueOptions, claim_count: int) -> bool:
    """Whether a claim candidate claimed ``claim_count`` times is moved, not leased."""
    return options.max_claim_count is not None and claim_count >= options.max_claim_count


def claim_order(priority: int, marker: int) -> tuple[int, int]:
    """The sort key of the order a claim meets messages: highest priority first, then
    oldest (lowest marker) first. Dead messages move in this order too."""
    return -priority, marker


def dead_letter_options(source: QueueOptions) -> QueueOptions:
    """The options of a dead-letter queue created on demand for a queue with ``source``:
    the defaults, in the source queue's store (the same durability)."""
    return QueueOptions(durable=source.durable)


def dead_letter_expiry(options: QueueOptions, expires_at: float, now: float) -> float:
    """When a message expiring at ``expires_at`` in its queue expires once moved at
    ``now``: ``dead_letter_ttl`` from now when the queue sets one, else its own expiry
    but at least ``MIN_DEAD_LIFE`` from now."""
    if options.dead_letter_ttl:  # None; 0 is refused by check_options
        return now + options.dead_letter_ttl
    return max(expires_at, now + MIN_DEAD_LIFE)
