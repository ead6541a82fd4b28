"""The channel between a worker and the hub: calls, cancellations and answers as
length-prefixed msgpack frames over one Unix stream socket.

A worker sends ``[CALL, id, target, method, args, kwargs]``; the hub answers
``[RESULT, id, value]`` or ``[ERROR, id, exception]``. Cancelling the worker's Deferred
(a client left a long poll) sends ``[CANCEL, id]`` and the hub cancels its own, so the
wait in the core ends at once. Many frames can arrive in one read and are all handled;
writes within one reactor turn leave in one ``send``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface.interface import InterfaceClass, Method

from qgate.core.errors import StorageUnavailable
from qgate.gateway.codec import packb, unpackb

CALL, CANCEL, RESULT, ERROR = 0, 1, 2, 3
#: Targets of calls: the core, the tenant store, the hub's metrics (workers' counts), the
#: tenants' rates and live counts across workers (``core.shared_limits``).
SERVICE, TENANTS, METRICS, LIMITS = 0, 1, 2, 3
#: Largest frame: a publish of max_batch bodies of max_body bytes fits many times over.
MAX_FRAME = 1 << 30

log = Logger()


def method_names(interface: InterfaceClass) -> frozenset[str]:
    """The methods ``interface`` declares (with those of the interfaces it extends)."""
    return frozenset(
        name for name in interface.names(all=True) if isinstance(interface[name], Method)
    )


class _Framed(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def send(self, frame: list[Any]) -> None:
        self.sendString(packb(frame))

    def stringReceived(self, string: bytes) -> None:
        self.frame_received(unpackb(string))

    def frame_received(self, frame: list[Any]) -> None:
        raise NotImplementedError

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("rpc: a frame of {length} bytes is too long; closing", length=length)
        if self.transport is not None:
            self.transport.loseConnection()


class HubChannel(_Framed):
    """The hub's end of one worker's channel: runs its calls on the real objects."""

    def __init__(self, targets: Mapping[int, tuple[Any, frozenset[str]]]) -> None:
        #: target -> (object, the method names a worker may call on it).
        self._targets = targets
        self._running: dict[int, Deferred[Any]] = {}

    def frame_received(self, frame: list[Any]) -> None:
        kind, call_id = frame[0], frame[1]
        if kind == CANCEL:
            running = self._running.pop(call_id, None)
            if running is not None:
                running.cancel()  # its answer still goes out; the worker ignores it
            return
        _, _, target, method, args, kwargs = frame
        found = self._targets.get(target)
        if found is None or found[0] is None or method not in found[1]:
            self._send_answer(ERROR, call_id, AttributeError(f"no remote method {method!r}"))
            return
        d = maybeDeferred(getattr(found[0], method), *args, **kwargs)
        if not d.called:
            self._running[call_id] = d
        d.addCallbacks(
            lambda value: self._send_answer(RESULT, call_id, value),
            lambda failure: self._send_answer(ERROR, call_id, failure.value),
        )

    def _send_answer(self, kind: int, call_id: int, value: Any) -> None:
        self._running.pop(call_id, None)
        try:
            frame = packb([kind, call_id, value])
        except (TypeError, ValueError, OverflowError) as e:
            frame = packb([ERROR, call_id, e])
        self.sendString(frame)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The worker is gone: what it was waiting for is of no use to anyone."""
        running, self._running = self._running, {}
        for d in running.values():
            d.cancel()


class WorkerChannel(_Framed):
    """A worker's end: each call is a Deferred answered by the hub."""

    def __init__(self, on_lost: Callable[[], None] = lambda: None) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Deferred[Any]] = {}
        self._on_lost = on_lost
        self.connected_to_hub = True

    def call(
        self, target: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Deferred[Any]:
        """``method(*args, **kwargs)`` on the hub's ``target``; cancelling it cancels the
        hub's call."""
        if not self.connected_to_hub:
            return fail(StorageUnavailable("the hub process is gone"))
        call_id = next(self._ids)

        def cancel(_: Deferred[Any]) -> None:
            if self._pending.pop(call_id, None) is not None and self.connected_to_hub:
                self.send([CANCEL, call_id])

        d: Deferred[Any] = Deferred(cancel)
        self._pending[call_id] = d
        self.send([CALL, call_id, target, method, list(args), kwargs])
        return d

    @property
    def pending(self) -> int:
        """How many calls are waiting for the hub's answer."""
        return len(self._pending)

    def frame_received(self, frame: list[Any]) -> None:
        kind, call_id, value = frame
        d = self._pending.pop(call_id, None)
        if d is None:
            return  # cancelled meanwhile
        if kind == RESULT:
            d.callback(value)
        else:
            d.errback(Failure(value))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The hub is gone: ``on_lost`` first (a worker process ends there), then every
        call still waiting fails as the storage being unavailable."""
        self.connected_to_hub = False
        self._on_lost()
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(Failure(StorageUnavailable("the hub process is gone")))
