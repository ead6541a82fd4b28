"""A queue's bounds as decisions: which publishes a bounded queue takes, and which of its
oldest messages ``drop_oldest`` drops to make room.

Pure functions of plain values (the queue's options, how many messages and bytes it holds,
the batches asked for); every store calls them and keeps only its own I/O, so memory and
SQL refuse and drop the same messages with the same errors.

The rules: a batch is all or nothing. A batch larger than the bound itself is refused
whatever the overflow policy (no policy can make room for it). Under ``reject`` a batch
that would take the queue past a bound is refused (``max_messages`` named first); under
``drop_oldest`` it is taken and the oldest messages make room for it. ``max_post_bytes``
(TooLarge) comes before the bounds. Counts include expired messages not yet reaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qgate.core.errors import QGateError, QueueFull, TooLarge
from qgate.core.limits import check_post_size
from qgate.core.model import NewMessage, Overflow, QueueOptions


def bounded(options: QueueOptions) -> bool:
    """Whether the queue caps its messages or bytes."""
    return options.max_messages is not None or options.max_bytes is not None


def counts_fill(options: QueueOptions) -> bool:
    """Whether ``admit`` looks at what the queue holds (a bounded queue that rejects);
    otherwise a store need not count its messages and bytes to publish."""
    return options.overflow is Overflow.REJECT and bounded(options)


def drops_oldest(options: QueueOptions) -> bool:
    """Whether a publish may make the queue drop its oldest messages."""
    return options.overflow is Overflow.DROP_OLDEST and bounded(options)


def admit(
    name: str,
    options: QueueOptions,
    count: int,
    size: int,
    batches: Sequence[Sequence[NewMessage]],
) -> list[QGateError | None]:
    """For each batch, in order, None when queue ``name`` takes it, else the error refusing
    it. ``count`` and ``size`` are the messages and bytes the queue holds before the first
    batch (read only when ``counts_fill``); each batch taken counts toward the next."""
    max_messages, max_bytes = options.max_messages, options.max_bytes
    if max_messages is None and max_bytes is None and options.max_post_bytes is None:
        return [None] * len(batches)  # the common queue: nothing to check
    reject = options.overflow is Overflow.REJECT
    out: list[QGateError | None] = []
    for batch in batches:
        try:
            check_post_size(name, options, batch)
        except TooLarge as e:
            out.append(e)
            continue
        n = len(batch)
        nbytes = sum(len(msg.body) for msg in batch) if max_bytes is not None else 0
        if max_messages is not None and n > max_messages:
            out.append(QueueFull(name, f"a batch of {n} exceeds max_messages"))
        elif max_bytes is not None and nbytes > max_bytes:
            out.append(QueueFull(name, f"a batch of {nbytes} bytes exceeds max_bytes"))
        elif reject and max_messages is not None and count + n > max_messages:
            out.append(QueueFull(name, "max_messages reached"))
        elif reject and max_bytes is not None and size + nbytes > max_bytes:
            out.append(QueueFull(name, "max_bytes reached"))
        else:
            out.append(None)
            count += n
            size += nbytes
    return out


def excess(options: QueueOptions, count: int, size: int) -> tuple[int, int]:
    """(messages, bytes) by which a queue holding ``count`` messages of ``size`` bytes is
    over its bounds; (0, 0) within them."""
    over_count = max(0, count - options.max_messages) if options.max_messages is not None else 0
    over_bytes = max(0, size - options.max_bytes) if options.max_bytes is not None else 0
    return over_count, over_bytes


def oldest_to_drop(over: tuple[int, int], oldest_first: Iterable[tuple[int, int]]) -> list[int]:
    """The markers to drop, from ``(marker, size)`` of the queue's messages oldest first,
    until both parts of ``over`` (from ``excess``) are freed: as few as that takes, and
    never more (``oldest_first`` is read no further than needed)."""
    over_count, over_bytes = over
    doomed: list[int] = []
    freed = 0
    if not over_count and not over_bytes:
        return doomed
    for marker, msg_size in oldest_first:
        doomed.append(marker)
        freed += msg_size
        if len(doomed) >= over_count and freed >= over_bytes:
            break
    return doomed
