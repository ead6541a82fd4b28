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
        #: Bytes of the SEND bodies it keeps.
        self.size = 0

    def add(self, op: Pending) -> None:
        self.pending.append(op)
        if isinstance(op, PendingSend):
            self.size += len(op.message.body)

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
    """A connection's open transactions by name, at most ``max_open`` of them keeping at
    most ``max_bytes`` of SEND bodies together (``[stomp] max_transactions`` and
    ``max_transaction_bytes``): what they keep is memory no flow control frees, since only
    a later COMMIT or ABORT does."""

    __slots__ = ("_open", "_max_batch", "_max_open", "_max_bytes", "_size")

    def __init__(
        self, max_batch: int, max_open: int = 16, max_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self._open: dict[str, Transaction] = {}
        #: Most SENDs one publish of a COMMIT stores.
        self._max_batch = max_batch
        self._max_open = max_open
        self._max_bytes = max_bytes
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes of SEND bodies every open transaction keeps."""
        return self._size

    def begin(self, name: str) -> None:
        if name in self._open:
            raise StompError(f"transaction {name[:80]!r} is already open")
        if len(self._open) >= self._max_open:
            raise StompError(
                f"too many open transactions on this connection (max_transactions {self._max_open})"
            )
        self._open[name] = Transaction(name)

    def keep(self, name: str, op: Pending) -> None:
        """Keep ``op`` in the open transaction ``name`` until COMMIT. Past the byte cap
        the transaction is aborted and the StompError says so."""
        tx = self.find(name)
        before = tx.size
        tx.add(op)
        self._size += tx.size - before
        if self._size > self._max_bytes:
            self.abort(name)
            raise StompError(
                f"transaction {name[:80]!r} aborted: open transactions keep more than "
                f"{self._max_bytes} bytes (max_transaction_bytes)"
            )

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
        self._size -= tx.size
        return Deferred.fromCoroutine(tx.apply(publish, settle, self._max_batch))

    def abort(self, name: str) -> None:
        """Close ``name``; nothing it kept takes effect."""
        tx = self.find(name)
        del self._open[name]
        self._size -= tx.size

    def clear(self) -> None:
        """The connection ends: every open transaction is aborted (STOMP 1.2)."""
        self._open.clear()
        self._size = 0
