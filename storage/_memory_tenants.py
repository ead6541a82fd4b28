"""Tenants, their API keys and their quota overrides in memory (``ITenantStore``), the
half of ``MemoryStorage`` the queues do not need."""

from __future__ import annotations

from dataclasses import dataclass

from qgate.core.model import Tenant
from qgate.storage._fired import fired


@dataclass(frozen=True, slots=True)
class _Key:
    tenant: str
    secret_hash: str
    queues: str | None
    ops: str | None
    revoked: bool = False


class MemoryTenants:
    """Tenants, keys (by id), quota overrides, and the change counter."""

    def _init_tenants(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, _Key] = {}
        self._quotas: dict[str, dict[str, float]] = {}
        self._tenant_version = 0

    @fired
    def create_tenant(self, name: str, now: float) -> tuple[Tenant, bool]:
        if name in self._tenants:
            return self._tenants[name], False
        tenant = self._tenants[name] = Tenant(name, now)
        return tenant, True

    @fired
    def get_tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    @fired
    def list_tenants(self) -> list[Tenant]:
        return [self._tenants[n] for n in sorted(self._tenants)]

    @fired
    def add_key(
        self,
        tenant: str,
        key_id: str,
        secret_hash: str,
        now: float,
        queues: str | None = None,
        ops: str | None = None,
    ) -> None:
        self._keys[key_id] = _Key(tenant, secret_hash, queues, ops)
        self._tenant_version += 1

    @fired
    def key_ids(self) -> list[str]:
        return [k for k, found in self._keys.items() if not found.revoked]

    @fired
    def find_key(self, key_id: str) -> tuple[str, str] | None:
        found = self._keys.get(key_id)
        if found is None or found.revoked:
            return None
        return found.tenant, found.secret_hash

    @fired
    def find_key_scope(self, key_id: str) -> tuple[str | None, str | None] | None:
        found = self._keys.get(key_id)
        if found is None or found.revoked:
            return None
        return found.queues, found.ops

    @fired
    def revoke_key(self, key_id: str, now: float) -> bool:
        found = self._keys.get(key_id)
        if found is None or found.revoked:
            return False
        self._keys[key_id] = _Key(found.tenant, found.secret_hash, found.queues, found.ops, True)
        self._tenant_version += 1
        return True

    @fired
    def set_quota(self, tenant: str, key: str, value: float | None) -> None:
        own = self._quotas.setdefault(tenant, {})
        if value is None:
            own.pop(key, None)
            if not own:
                del self._quotas[tenant]
        else:
            own[key] = value
        self._tenant_version += 1

    @fired
    def quota_overrides(self) -> dict[str, dict[str, float]]:
        return {t: dict(v) for t, v in self._quotas.items()}

    @fired
    def tenant_version(self) -> int:
        return self._tenant_version
