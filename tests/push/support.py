"""What the push tests share: a scripted pusher (the HTTP side as a double), a dispatcher
on a memory service and a test clock, and short ways to publish and look."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from qgate.core.model import NewMessage
from qgate.protocols.push.client import IPusher, Outcome, PushRequest
from qgate.protocols.push.dispatcher import PushDispatcher
from qgate.protocols.push.settings import PushSettings
from tests.support.core import protocol_ctx

T = "tenant-a"
HOOK = "http://hooks.example/a"
FAST = PushSettings(scan_interval=1.0, lease=10.0, allow_private_targets=True)


@implementer(IPusher)
@dataclass
class ScriptedPusher:
    """Answers each request with ``answer(request)``: an Outcome, or a Deferred of one
    (left unfired: a stalled receiver). Every request is kept, in order."""

    answer: Callable[[PushRequest], Any] = lambda request: Outcome(204)
    sent: list[PushRequest] = field(default_factory=list)

    def push(self, request: PushRequest) -> defer.Deferred[Outcome]:
        self.sent.append(request)
        return defer.maybeDeferred(self.answer, request)

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def ids(self) -> list[str]:
        return [r.headers["X-Qgate-Message-Id"] for r in self.sent]

    def attempts(self) -> list[tuple[str, str]]:
        return [(r.headers["X-Qgate-Message-Id"], r.headers["X-Qgate-Attempt"]) for r in self.sent]


def dispatcher(
    service: Any,
    pusher: Any,
    settings: PushSettings = FAST,
    owner: str = "dispatcher-a",
    hooks: Any = (),
    reactor: Any = None,
    metrics: Any = None,
) -> PushDispatcher:
    ctx = protocol_ctx(service, settings, reactor=reactor)
    if metrics is not None:
        ctx = dataclasses.replace(ctx, metrics=metrics)
    return PushDispatcher(ctx, pusher=pusher, owner=owner, hooks=list(hooks))


def json_messages(*bodies: str, **kw: Any) -> list[NewMessage]:
    return [NewMessage(b.encode(), content_type="application/json", **kw) for b in bodies]
