"""A flood of unknown API keys costs no database read per attempt: the ids of live keys
are kept in memory (loaded by the tenant watch), and before they are, unknown key ids are
remembered (bounded, for ``cache_seconds``) and concurrent lookups share one read."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from qgate.core._key_lookups import KeyLookups
from qgate.core.auth import APIKeys, TenantAdmin
from qgate.core.errors import Unauthorized
from qgate.core.guard import TenantGuard
from qgate.core.quotas import TenantQuotas
from qgate.core.tenant_watch import WATCH_INTERVAL, TenantWatch
from qgate.storage.memory import MemoryStorage
from tests.support.core import memory_service
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


class _CountingStore(MemoryStorage):
    """The memory store, counting the reads of key rows."""

    def __init__(self) -> None:
        super().__init__()
        self.key_reads = 0

    def find_key(self, key_id: str) -> Deferred[Any]:
        self.key_reads += 1
        return super().find_key(key_id)


def test_once_the_key_ids_are_loaded_fresh_random_ids_cost_no_read(clock: Clock) -> None:
    store = _CountingStore()
    admin = TenantAdmin(store, clock)
    fired(Deferred.fromCoroutine(admin.create_tenant("acme")))
    token = fired(Deferred.fromCoroutine(admin.create_key("acme")))
    auth = APIKeys(store, clock, cache_seconds=30)
    assert fired(Deferred.fromCoroutine(auth.load_keys())) == 1
    for _ in range(1000):
        _refused(auth.authenticate(None, f"qg_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"))
    assert store.key_reads == 0 and len(auth.lookups) == 0  # nothing read, nothing remembered
    assert fired(auth.authenticate(None, token)) == "acme"
    assert store.key_reads == 1


def test_a_key_made_in_another_process_works_once_the_watch_has_seen_the_counter_move(
    clock: Clock,
) -> None:
    store = _CountingStore()
    admin = TenantAdmin(store, clock)
    fired(Deferred.fromCoroutine(admin.create_tenant("acme")))
    auth = APIKeys(store, clock, cache_seconds=30)
    watch = TenantWatch(clock, store, TenantQuotas(), auth)
    watch.start()
    assert auth.lookups.known == frozenset()
    token = fired(Deferred.fromCoroutine(admin.create_key("acme")))  # the CLI, elsewhere
    _refused(auth.authenticate(None, token))  # not known here yet ...
    clock.advance(WATCH_INTERVAL)
    assert fired(auth.authenticate(None, token)) == "acme"  # ... within one watch round
    fired(Deferred.fromCoroutine(admin.revoke_key(token)))
    clock.advance(WATCH_INTERVAL)
    assert auth.lookups.known == frozenset()
    _refused(auth.authenticate(None, token))
    watch.stop()


def test_a_revoked_keys_sessions_are_closed_from_the_loaded_ids_without_a_read_per_key(
    clock: Clock,
) -> None:
    store = _CountingStore()
    admin = TenantAdmin(store, clock)
    fired(Deferred.fromCoroutine(admin.create_tenant("acme")))
    tokens = [fired(Deferred.fromCoroutine(admin.create_key("acme"))) for _ in range(3)]
    auth = APIKeys(store, clock, cache_seconds=30)
    guard = TenantGuard(memory_service(clock), clock, TenantQuotas(), store)
    watch = TenantWatch(clock, store, guard.quotas, auth, guard)
    watch.start()
    closed: list[str] = []
    for token in tokens:
        guard.open_session(fired(auth.authenticate(None, token)), closed.append)
    reads = store.key_reads
    fired(Deferred.fromCoroutine(admin.revoke_key(tokens[0])))
    clock.advance(WATCH_INTERVAL)
    assert len(closed) == 1 and "revoked" in closed[0]
    assert store.key_reads == reads  # the three open keys were not read again
    watch.stop()
