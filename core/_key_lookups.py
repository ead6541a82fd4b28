"""API-key lookups that a flood of unknown keys cannot turn into database reads.

``APIKeys`` (``core.auth``) reads a key's row by its id. ``KeyLookups`` stands in front of
that read. Once ``known`` holds the ids of every live key (``load``: the tenant watch loads
them at start and again whenever the change counter moves, which every new key bumps), an
id outside it is refused without a read, however many fresh random ids a client tries.
Before that (or if loading failed), a key id the store does not know is remembered as
unknown for ``seconds`` (at most ``size`` of them, least recently used first out), so
asking again costs nothing; and concurrent lookups of one id share one read. Found rows
are not kept here: what a verified key is remembered for, and how revocation reaches it,
stays ``APIKeys``' business.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from qgate.core.interfaces import ITenantStore

#: (tenant, secret hash) of a key, as ``ITenantStore.find_key`` answers.
KeyRow = tuple[str, str]


class KeyLookups:
    """``find_key`` with a bounded negative cache and one read per id in flight."""

    def __init__(
        self, store: ITenantStore, clock: IReactorTime, seconds: float, size: int = 10_000
    ) -> None:
        self._store = store
        self._clock = clock
        self._seconds = seconds
        self._size = size
        self._unknown: OrderedDict[str, float] = OrderedDict()  # key id -> until
        self._reading: dict[str, list[Deferred[KeyRow | None]]] = {}
        #: The ids of every live key as last loaded; None: not loaded (read each id).
        self.known: frozenset[str] | None = None
        #: Store reads made (for tests and stats).
        self.reads = 0

    async def load(self) -> int:
        """Read the ids of every live key; -> how many. A key made since the last load
        is refused until the next one (the tenant watch loads within a second)."""
        self.known = frozenset(await self._store.key_ids())
        return len(self.known)

    def find(self, key_id: str) -> Deferred[KeyRow | None]:
        if self.known is not None and key_id not in self.known:
            return succeed(None)  # no such key: no read
        until = self._unknown.get(key_id)
        if until is not None:
            if until > self._clock.seconds():
                self._unknown.move_to_end(key_id)
                return succeed(None)
            del self._unknown[key_id]
        waiters = self._reading.get(key_id)
        mine: Deferred[KeyRow | None] = Deferred()
        if waiters is not None:
            waiters.append(mine)
            return mine
        self._reading[key_id] = [mine]
        self.reads += 1
        self._store.find_key(key_id).addBoth(self._read, key_id)
        return mine

    def _read(self, result: KeyRow | None | Failure, key_id: str) -> None:
        waiters = self._reading.pop(key_id, [])
        if result is None:
            self._unknown[key_id] = self._clock.seconds() + self._seconds
            self._unknown.move_to_end(key_id)
            while len(self._unknown) > self._size:
                self._unknown.popitem(last=False)
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def forget(self, key_id: str) -> None:
        """``key_id`` may exist now (a key was just made under it)."""
        self._unknown.pop(key_id, None)

    def __len__(self) -> int:
        return len(self._unknown)
