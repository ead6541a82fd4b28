"""The worker <-> hub channel in memory: values and errors cross unchanged, calls and
cancellations reach the one core, a lost peer ends what was waiting on it."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyObject

from qgate.core import errors, jsonsafe, model
from qgate.core.interfaces import IQueueService, ITenantStore
from qgate.core.limits import Limits
from qgate.core.model import QueueOptions
from qgate.gateway.codec import RemoteError, packb, unpackb
from qgate.gateway.proxy import (
    SERVICE_METHODS,
    TENANT_METHODS,
    RemoteQueueService,
    RemoteTenantStore,
)
from qgate.gateway.rpc import SERVICE, TENANTS, HubChannel, WorkerChannel
from tests.support.core import make_clock, memory_service, msgs
from tests.support.deferreds import fired


class Pipe:
    """A worker channel and a hub channel joined by two StringTransports; ``pump`` moves
    what each wrote to the other, every frame of a turn in one read."""

    def __init__(self, hub_targets: dict[int, tuple[Any, frozenset[str]]]) -> None:
        self.lost = 0
        self.worker = WorkerChannel(on_lost=self._lost)
        self.hub = HubChannel(hub_targets)
        self.worker_transport = StringTransport()
        self.hub_transport = StringTransport()
        self.worker.makeConnection(self.worker_transport)
        self.hub.makeConnection(self.hub_transport)

    def _lost(self) -> None:
        self.lost += 1

    def pump(self) -> None:
        for _ in range(10):
            up, down = self.worker_transport.value(), self.hub_transport.value()
            if not up and not down:
                return
            self.worker_transport.clear()
            self.hub_transport.clear()
            if up:
                self.hub.dataReceived(up)
            if down:
                self.worker.dataReceived(down)


@pytest.fixture
def clock():
    return make_clock()


@pytest.fixture
def core(clock):
    return memory_service(clock)


def targets(core: Any, tenants: Any = None) -> dict[int, tuple[Any, frozenset[str]]]:
    return {SERVICE: (core, SERVICE_METHODS), TENANTS: (tenants, TENANT_METHODS)}


def remote(pipe: Pipe, clock: Any) -> RemoteQueueService:
    return RemoteQueueService(pipe.worker, clock, Limits(), QueueOptions())


def answer(pipe: Pipe, d: Any) -> Any:
    pipe.pump()
    return fired(d)


# -- the codec -------------------------------------------------------------------------


def test_every_core_value_comes_back_as_the_same_value():
    message = model.Message(
        7, b"\x00body", "text/plain", {"h": "v"}, "me", 4, 1.0, 61.0, 1.0, "c1", 31.0, 1
    )
    options = QueueOptions(max_messages=10, overflow=model.Overflow.DROP_OLDEST)
    values = [
        message,
        options,
        model.Queue("t", "q", options, {"a": [1, 2]}, 5.0),
        model.NewMessage(b"x", headers={"k": "v"}, ttl=None, delay=2.0),
        model.ObserveQuery(limit=5, after=3),
        model.Claim("c1", "q", 30.0, 0.0, 1.0, 31.0, (message, message)),
        model.QueueStats(1, 1, 0, 0, message, None),
        model.Subscription("s", "q", "http://x", 60, {"o": 1}, 1.0, 61.0),
        model.Tenant("t", 1.0),
        model.NewSubscription("s", "http://x", 60, {}),
        model.SubscriptionUpdate(None, 5, None, True),
        (message.id, True),
        [1, (2, 3), {4: b"four"}],
    ]
    for value in values:
        back = unpackb(packb(value))
        assert back == value and type(back) is type(value)
    assert type(unpackb(packb(options)).overflow) is model.Overflow


def test_every_value_type_of_the_core_model_crosses_the_channel():
    """A new dataclass in core.model needs no line in the codec (a push subscription's
    stats answered 500 through a worker before)."""
    import dataclasses

    from qgate.gateway.codec import _DATACLASSES

    for obj in vars(model).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            assert obj in _DATACLASSES, obj
    stats = model.PushStats(delivered=3, failed=1, last_error="503")
    assert unpackb(packb(stats)) == stats


def test_a_body_jsonsafe_wrote_stays_strict_json_so_the_hub_does_not_parse_it_again():
    """A worker's parsed-and-written JSON body keeps its mark across the channel; plain
    bytes stay plain (the hub's core checks those)."""
    strict = jsonsafe.dumps({"event": "click"})
    message = model.NewMessage(strict, content_type="application/json")
    back = unpackb(packb([message, b"plain"]))
    assert back == [message, b"plain"]
    assert type(back[0].body) is jsonsafe.StrictJSON
    assert type(back[1]) is bytes


def test_read_only_mappings_cross_as_dicts():
    assert unpackb(packb(MappingProxyType({"a": "b"}))) == {"a": "b"}


def test_qgate_errors_come_back_as_the_same_class_with_their_fields():
    for error in (
        errors.QueueNotFound("jobs"),
        errors.QueueFull("jobs", "max_messages"),
        errors.InvalidArgument("bad limit", field="limit"),
        errors.SchemaChanged("jobs", 12),
        errors.StorageUnavailable("database away"),
    ):
        back = unpackb(packb(error))
        assert type(back) is type(error)
        assert str(back) == str(error) and back.field == error.field
        assert vars(back) == vars(error)


def test_builtin_errors_keep_their_class_and_others_become_remote_errors():
    assert type(unpackb(packb(TimeoutError("slow")))) is TimeoutError

    class Odd(Exception):
        pass

    back = unpackb(packb(Odd("strange")))
    assert isinstance(back, RemoteError) and "strange" in str(back)


def test_a_value_that_cannot_cross_is_refused_by_name():
    with pytest.raises(TypeError, match="object"):
        packb(object())


# -- the proxy -------------------------------------------------------------------------


def test_the_proxies_provide_the_interfaces(clock):
    pipe = Pipe(targets(None))
    assert verifyObject(IQueueService, remote(pipe, clock))
    assert verifyObject(ITenantStore, RemoteTenantStore(pipe.worker))


def test_a_worker_publishes_and_claims_through_the_hubs_core(clock, core):
    pipe = Pipe(targets(core))
    service = remote(pipe, clock)
    ids = answer(pipe, service.publish("t", "q", msgs(b"a", b"b")))
    assert ids == ["1", "2"]
    claim = answer(pipe, service.claim("t", "q", limit=5, ttl=30, grace=10))
    assert isinstance(claim, model.Claim)
    assert [m.body for m in claim.messages] == [b"a", b"b"]
    assert claim.ttl == 30 and claim.grace == 10  # keywords pass through as given
    assert answer(pipe, service.ack("t", "q", claim.id, ["1", "2"])) == ["1", "2"]
    queue, created = answer(pipe, service.create_queue("t", "q"))
    assert created is False and queue.name == "q"


def test_a_core_error_is_raised_in_the_worker_as_in_one_process(clock, core):
    pipe = Pipe(targets(core))
    d = remote(pipe, clock).get_queue("t", "missing")
    pipe.pump()
    with pytest.raises(errors.QueueNotFound) as raised:
        fired(d)
    assert raised.value.name == "missing" and raised.value.field == "queue_name"


def test_calls_from_two_workers_meet_in_one_core(clock, core):
    """A consumer parked through one worker is woken by a publish through another."""
    one, two = Pipe(targets(core)), Pipe(targets(core))
    waiting = remote(one, clock).claim("t", "jobs", limit=1, ttl=30, wait=20)
    one.pump()
    answer(two, remote(two, clock).create_queue("t", "jobs"))
    assert core.waiting("t", "jobs") == 1
    answer(two, remote(two, clock).publish("t", "jobs", msgs(b"work")))
    one.pump()
    claim = fired(waiting)
    assert [m.body for m in claim.messages] == [b"work"]


def test_cancelling_a_wait_in_the_worker_ends_it_in_the_hub(clock, core):
    pipe = Pipe(targets(core))
    service = remote(pipe, clock)
    answer(pipe, service.create_queue("t", "jobs"))
    d = service.claim("t", "jobs", limit=1, ttl=30, wait=20)
    pipe.pump()
    assert core.waiting("t", "jobs") == 1
    d.cancel()
    pipe.pump()
    assert core.waiting("t", "jobs") == 0
    with pytest.raises(CancelledError):
        fired(d)
    assert pipe.worker.pending == 0


def test_a_lost_worker_ends_its_waits_in_the_hub(clock, core):
    pipe = Pipe(targets(core))
    service = remote(pipe, clock)
    answer(pipe, service.create_queue("t", "jobs"))
    service.observe("t", "jobs", wait=20).addErrback(lambda f: None)
    pipe.pump()
    assert core.waiting("t", "jobs") == 1
    pipe.hub.connectionLost()
    assert core.waiting("t", "jobs") == 0


def test_a_lost_hub_fails_pending_calls_as_unavailable_and_says_so(clock, core):
    pipe = Pipe(targets(core))
    service = remote(pipe, clock)
    d = service.claim("t", "jobs", limit=1, ttl=30, wait=20)
    pipe.worker.connectionLost()
    with pytest.raises(errors.StorageUnavailable):
        fired(d)
    assert pipe.lost == 1
    with pytest.raises(errors.StorageUnavailable):
        fired(service.ping())


def test_only_interface_methods_are_callable(clock, core):
    pipe = Pipe(targets(core))
    with pytest.raises(AttributeError):
        remote(pipe, clock).stop  # noqa: B018 - not an IQueueService method
    d = pipe.worker.call(SERVICE, "stop", (), {})
    pipe.pump()
    with pytest.raises(AttributeError, match="no remote method 'stop'"):
        fired(d)


def test_the_tenant_store_answers_key_lookups(clock):
    pipe = Pipe(targets(None, _Tenants()))
    assert answer(pipe, RemoteTenantStore(pipe.worker).find_key("k1")) == ("acme", "hash")


def test_parse_schema_is_answered_in_the_worker_from_one_cache(clock):
    service = remote(Pipe(targets(None)), clock)
    schema = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}'
    assert service.parse_schema(schema) is service.parse_schema(schema.encode())


class _Tenants:
    def find_key(self, key_id: str) -> tuple[str, str] | None:
        return ("acme", "hash") if key_id == "k1" else None
