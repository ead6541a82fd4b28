"""A flood of unknown API keys costs no database read per attempt: unknown key ids are
remembered (bounded, for ``cache_seconds``) and concurrent lookups share one read."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from qgate.core._key_lookups import KeyLookups
from qgate.core.auth import APIKeys, TenantAdmin
from qgate.core.errors import Unauthorized
from qgate.storage.memory import MemoryStorage
from tests.support.deferreds import fired

UNKNOWN = "qg_0123456789abcdef_" + "s" * 43


def _refused(d: Deferred[Any]) -> None:
    with pytest.raises(Unauthorized):
        fired(d)


def test_one_unknown_key_tried_again_and_again_costs_one_read(clock: Clock) -> None:
    auth = APIKeys(MemoryStorage(), clock, cache_seconds=30)
    for _ in range(1000):
        _refused(auth.authenticate(None, UNKNOWN))
    assert auth.lookups.reads == 1
    clock.advance(31)  # remembered for cache_seconds, then asked again
    _refused(auth.authenticate(None, UNKNOWN))
    assert auth.lookups.reads == 2


def test_other_secrets_under_one_unknown_key_id_cost_no_more_reads(clock: Clock) -> None:
    auth = APIKeys(MemoryStorage(), clock, cache_seconds=30)
    for i in range(100):
        _refused(auth.authenticate(None, f"qg_0123456789abcdef_secret{i}"))
    assert auth.lookups.reads == 1


def test_known_keys_still_authenticate_beside_the_negative_cache(clock: Clock) -> None:
    store = MemoryStorage()
    admin = TenantAdmin(store, clock)
    fired(Deferred.fromCoroutine(admin.create_tenant("acme")))
    token = fired(Deferred.fromCoroutine(admin.create_key("acme")))
    auth = APIKeys(store, clock, cache_seconds=30)
    _refused(auth.authenticate(None, UNKNOWN))
    assert fired(auth.authenticate(None, token)) == "acme"


def test_the_unknown_keys_remembered_are_bounded(clock: Clock) -> None:
    auth = APIKeys(MemoryStorage(), clock, cache_seconds=30, cache_size=10)
    for i in range(100):
        _refused(auth.authenticate(None, f"qg_{i:016x}_secret"))
    assert len(auth.lookups) == 10


class _SlowKeys:
    """A tenant store whose key reads answer only when the test says."""

    def __init__(self) -> None:
        self.reads: list[Deferred[Any]] = []

    def find_key(self, key_id: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.reads.append(d)
        return d


def test_concurrent_lookups_of_one_key_id_share_one_read(clock: Clock) -> None:
    store = _SlowKeys()
    lookups = KeyLookups(store, clock, seconds=30)  # type: ignore[arg-type]
    waiting = [lookups.find("k") for _ in range(20)]
    assert len(store.reads) == 1
    store.reads[0].callback(None)
    assert [fired(d) for d in waiting] == [None] * 20
    assert fired(lookups.find("k")) is None and len(store.reads) == 1
