"""Who is calling: tenants from trusted headers, or from per-tenant API keys.

Every protocol hands over what the client said (a claimed tenant such as ``X-Project-ID``
or a STOMP ``host``/``login``, and a token such as ``X-Auth-Token`` or a STOMP
``passcode``) and gets back the tenant the call is scoped to, or ``Unauthorized``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

from qgate.core._key_lookups import KeyLookups
from qgate.core.errors import InvalidArgument, Unauthorized
from qgate.core.interfaces import ITenantStore
from qgate.core.limits import check_tenant
from qgate.core.model import Tenant
from qgate.core.principal import EVERYTHING, Principal, Scope, check_scope
from qgate.core.quotas import check_quota

KEY_PREFIX = "qg"


class IAuthenticator(Interface):
    """How clients prove their tenant: the auth mode lives here, not in the protocols."""

    needs_token = Attribute(
        "True when a client proves its tenant with a token (an API key); False when the "
        "tenant it names is believed. Protocols choose which client field to pass by it."
    )

    def authenticate(tenant, token, assumed=None, peer=None):  # type: ignore[no-untyped-def]
        """-> Deferred[str]: the tenant to act as (a ``core.principal.Principal``); fails
        with Unauthorized.

        ``assumed`` is the tenant a protocol takes for a client that names none, where its
        own convention allows that (STOMP's default virtual host); a configured default
        tenant comes first. ``peer`` is the client's address (an IP address, or None),
        for throttling failures (``core.auth_throttle``)."""


@implementer(IAuthenticator)
class TrustedTenant:
    """``auth.mode = "none"``: the client names its tenant and is believed."""

    needs_token = False

    def __init__(self, default_tenant: str | None = None) -> None:
        self.default_tenant = default_tenant

    def authenticate(
        self,
        tenant: str | None,
        token: str | None,
        assumed: str | None = None,
        peer: str | None = None,
    ) -> Deferred[str]:
        chosen = tenant or self.default_tenant or assumed
        if not chosen:
            return fail(Unauthorized("a tenant (project id) is required", field="tenant"))
        try:
            return succeed(Principal(check_tenant(chosen)))
        except InvalidArgument as e:
            return fail(e)


def hash_secret(secret: str) -> str:
    """Keys are 256 random bits, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@implementer(IAuthenticator)
class APIKeys:
    """``auth.mode = "keys"``: a token ``qg_<key id>_<secret>`` names the tenant.

    Verified tokens are remembered for ``cache_seconds`` so a busy client does not cost a
    database read per request; the tenant watch (``core.tenant_watch``) makes it forget
    them (``forget_keys``) as soon as any key is revoked, so a revoked key stops working
    within a second. The ids of live keys are kept in memory (``KeyLookups``, loaded by
    the tenant watch through ``load_keys``), so an unknown key id costs no read at all.
    A claimed tenant that differs from the key's tenant is refused. The answer is a
    ``Principal``: the tenant, with the key's id and scope.
    """

    def __init__(
        self,
        store: ITenantStore,
        clock: IReactorTime,
        cache_seconds: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[str, float, str, Scope]] = OrderedDict()
        self.lookups = KeyLookups(store, clock, cache_seconds, cache_size)

    needs_token = True

    def authenticate(
        self,
        tenant: str | None,
        token: str | None,
        assumed: str | None = None,
        peer: str | None = None,
    ) -> Deferred[str]:
        if not token:
            return fail(Unauthorized("an API key is required (X-Auth-Token or passcode)"))
        digest = hash_secret(token)
        now = self._clock.seconds()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return self._check_claim(Principal(hit[0], hit[2], hit[3]), tenant)
        parts = split_token(token)
        if parts is None:
            return fail(Unauthorized("the API key is malformed or unknown"))
        key_id, secret = parts

        def verify(found: tuple[str, str] | None) -> Deferred[str]:
            if found is None or not hmac.compare_digest(found[1], hash_secret(secret)):
                return fail(Unauthorized("the API key is malformed or unknown"))
            return self._store.find_key_scope(key_id).addCallback(scoped, found[0])

        def scoped(texts: tuple[str | None, str | None] | None, owner: str) -> Deferred[str]:
            if texts is None:  # revoked between the two reads
                return fail(Unauthorized("the API key is malformed or unknown"))
            scope = Scope.from_text(*texts) if texts != (None, None) else EVERYTHING
            self._cache[digest] = (owner, now + self._cache_seconds, key_id, scope)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return self._check_claim(Principal(owner, key_id, scope), tenant)

        return self.lookups.find(key_id).addCallback(verify)

    async def load_keys(self) -> int:
        """Load the ids of every live key (the tenant watch calls this at start and when
        the change counter moves); -> how many."""
        return await self.lookups.load()

    @property
    def known_keys(self) -> frozenset[str] | None:
        """The ids of every live key as last loaded (None: not loaded)."""
        return self.lookups.known

    def forget_keys(self) -> None:
        """Verify every key again on its next use (a key was revoked somewhere)."""
        self._cache.clear()

    def _check_claim(self, owner: Principal, claimed: str | None) -> Deferred[str]:
        if claimed and claimed != owner:
            return fail(Unauthorized("the API key belongs to another tenant"))
        return succeed(owner)


class TenantAdmin:
    """The operations behind ``qgate tenant create`` and ``qgate key create/revoke``."""

    def __init__(self, store: ITenantStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock

    async def create_tenant(self, name: str) -> bool:
        _, created = await self._store.create_tenant(check_tenant(name), self._clock.seconds())
        return bool(created)

    async def list_tenants(self) -> list[Tenant]:
        return list(await self._store.list_tenants())

    async def create_key(
        self, tenant: str, queues: tuple[str, ...] = (), ops: tuple[str, ...] = ()
    ) -> str:
        """-> the token, shown once; only its hash is stored. ``queues`` (fnmatch globs)
        and ``ops`` (publish, consume, manage) limit what it may do (empty: anything)."""
        scope = check_scope(queues, ops)
        if await self._store.get_tenant(check_tenant(tenant)) is None:
            raise InvalidArgument(f"tenant {tenant!r} does not exist", field="tenant")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        queue_text, ops_text = scope.to_text()
        await self._store.add_key(
            tenant, key_id, hash_secret(secret), self._clock.seconds(), queue_text, ops_text
        )
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    async def set_quota(self, tenant: str, quota: str, value: float | None) -> None:
        """Override one quota of ``tenant`` (None: back to the ``[quotas]`` default); in
        force in every running process within a second (``core.tenant_watch``)."""
        if value is not None:
            quota, value = check_quota(quota, value)
        else:
            quota, _ = check_quota(quota, 0)
        # Any tenant name: with auth.mode = "none" tenants are not created beforehand.
        await self._store.set_quota(check_tenant(tenant), quota, value)

    async def quotas(self) -> dict[str, dict[str, float]]:
        return dict(await self._store.quota_overrides())

    async def revoke_key(self, key: str) -> bool:
        """Revoke by key id or by the whole token."""
        parts = split_token(key)
        key_id = parts[0] if parts else key
        return bool(await self._store.revoke_key(key_id, self._clock.seconds()))
