"""STOMP transactions: BEGIN opens one, SENDs and ACK/NACKs that name it are kept (STOMP
1.2: they take effect on COMMIT), COMMIT applies them in order, ABORT drops them, and
transactions still open when the connection ends are aborted.

What a transaction keeps is typed (``PendingSend``, ``PendingAck``, ``PendingNack``): the
SEND's message is already parsed and checked, so COMMIT fails only where the core does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from qgate.core.model import NewMessage, QueueOptions
from qgate.protocols.stomp.errors import StompError


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A SEND to ``kind``/``name`` (a destination): published at once, or on COMMIT when
    it is in a transaction."""

    kind: str
    name: str
    message: NewMessage
    options: QueueOptions | None


@dataclass(frozen=True, slots=True)
class PendingAck:
    """An ACK of the delivery ``tag``, settled on COMMIT."""

    tag: str


@dataclass(frozen=True, slots=True)
class PendingNack:
    """A NACK of the delivery ``tag``, settled on COMMIT."""

    tag: str


Pending = PendingSend | PendingAck | PendingNack

#: ``(kind, name, messages, options)``: publish a batch; fires once it is stored.
Publish = Callable[[str, str, list[NewMessage], QueueOptions | None], Deferred[Any]]
#: ``(tag, positive)``: ACK (True) or NACK a delivery; fires once that took effect.
Settle = Callable[[str, bool], Deferred[None]]


class Transaction:
    """One open transaction: what its frames asked for, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[Pending] = []

    def add(self, op: Pending) -> None:
        self.pending.append(op)

    async def apply(self, publish: Publish, settle: Settle, max_batch: int) -> None:
        """COMMIT: consecutive SENDs to one destination go in one publish batch (stored
        whole or not at all, at most ``max_batch``); ACK/NACKs follow in order."""
        ops = self.pending
        i = 0
        while i < len(ops):
            op = ops[i]
            if not isinstance(op, PendingSend):
                await settle(op.tag, isinstance(op, PendingAck))
                i += 1
                continue
            kind, name, options = op.kind, op.name, op.options
            batch: list[NewMessage] = []
            while i < len(ops) and len(batch) < max_batch:
                send = ops[i]
                if not (isinstance(send, PendingSend) and send.kind == kind and send.name == name):
                    break
                batch.append(send.message)
                options = options or send.options
                i += 1
            await publish(kind, name, batch, options)


class Transactions:
    """A connection's open transactions by name."""

    __slots__ = ("_open", "_max_batch")

    def __init__(self, max_batch: int) -> None:
        self._open: dict[str, Transaction] = {}
        #: Most SENDs one publish of a COMMIT stores.
        self._max_batch = max_batch

    def begin(self, name: str) -> None:
        if name in self._open:
            raise StompError(f"transaction {name[:80]!r} is already open")
        self._open[name] = Transaction(name)

    def find(self, name: str) -> Transaction:
        """The open transaction a SEND, ACK or NACK names."""
        tx = self._open.get(name)
        if tx is None:
            raise StompError(f"unknown transaction {name[:80]!r}")
        return tx

    def commit(self, name: str, publish: Publish, settle: Settle) -> Deferred[None]:
        """Apply ``name`` through ``publish`` and ``settle``, and close it; fires once
        everything it kept has taken effect."""
        tx = self.find(name)
        del self._open[name]
        return Deferred.fromCoroutine(tx.apply(publish, settle, self._max_batch))

    def abort(self, name: str) -> None:
        """Close ``name``; nothing it kept takes effect."""
        self.find(name)
        del self._open[name]

    def clear(self) -> None:
        """The connection ends: every open transaction is aborted (STOMP 1.2)."""
        self._open.clear()
