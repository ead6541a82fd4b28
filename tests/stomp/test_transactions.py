"""A transaction alone: what COMMIT hands to the core, in which calls and in which order."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from qgate.core.model import NewMessage
from qgate.protocols.stomp.errors import StompError
from qgate.protocols.stomp.transactions import (
    PendingAck,
    PendingNack,
    PendingSend,
    Transactions,
)
from tests.support.deferreds import fired


class Recorder:
    """The core side of a commit: every publish and settle, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def publish(
        self, kind: str, name: str, messages: list[NewMessage], options: Any
    ) -> Deferred[Any]:
        self.calls.append(("publish", kind, name, [m.body for m in messages], options))
        return succeed(None)

    def settle(self, tag: str, positive: bool) -> Deferred[None]:
        self.calls.append(("ack" if positive else "nack", tag))
        return succeed(None)


def _send(name: str, body: bytes, kind: str = "queue", options: Any = None) -> PendingSend:
    return PendingSend(kind, name, NewMessage(body), options)


def test_commit_batches_consecutive_sends_to_one_destination_and_keeps_the_order():
    core = Recorder()
    txs = Transactions(max_batch=2)
    txs.begin("t")
    tx = txs.find("t")
    for op in (
        _send("a", b"1"),
        _send("a", b"2", options="transient"),
        _send("a", b"3"),  # past max_batch: a second publish
        _send("b", b"4"),
        PendingAck("7"),
        _send("b", b"5"),
        PendingNack("8"),
        _send("b", b"6", kind="topic"),  # same name, another destination
    ):
        tx.add(op)
    fired(txs.commit("t", core.publish, core.settle))
    assert core.calls == [
        ("publish", "queue", "a", [b"1", b"2"], "transient"),
        ("publish", "queue", "a", [b"3"], None),
        ("publish", "queue", "b", [b"4"], None),
        ("ack", "7"),
        ("publish", "queue", "b", [b"5"], None),
        ("nack", "8"),
        ("publish", "topic", "b", [b"6"], None),
    ]
    with pytest.raises(StompError, match="unknown transaction"):
        txs.find("t")


def test_abort_and_clear_drop_what_was_kept():
    core = Recorder()
    txs = Transactions(max_batch=10)
    for name in ("a", "b"):
        txs.begin(name)
        txs.find(name).add(_send("q", b"x"))
    txs.abort("a")
    txs.clear()
    for name in ("a", "b"):
        with pytest.raises(StompError, match="unknown transaction"):
            txs.commit(name, core.publish, core.settle)
    assert core.calls == []


def test_a_transaction_cannot_be_opened_twice():
    txs = Transactions(max_batch=10)
    txs.begin("t")
    with pytest.raises(StompError, match="already open"):
        txs.begin("t")
