from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.auth import APIKeys, TenantAdmin, TrustedTenant, hash_secret
from qgate.core.errors import InvalidArgument, Unauthorized


@pytest_twisted.ensureDeferred
async def test_trusted_tenant_believes_the_client_but_checks_the_name():
    auth = TrustedTenant()
    assert await auth.authenticate("project-1", None) == "project-1"
    with pytest.raises(Unauthorized):
        await auth.authenticate(None, None)
    with pytest.raises(InvalidArgument):
        await auth.authenticate("bad tenant/name", None)
    assert await TrustedTenant("default").authenticate(None, None) == "default"


@pytest_twisted.ensureDeferred
async def test_api_keys_authenticate_their_tenant_and_stop_after_revocation(durable):
    clock = Clock()
    admin = TenantAdmin(durable, clock)
    assert await admin.create_tenant("acme") is True
    assert await admin.create_tenant("acme") is False
    token = await admin.create_key("acme")
    auth = APIKeys(durable, clock, cache_seconds=30)
    assert await auth.authenticate(None, token) == "acme"
    assert await auth.authenticate("acme", token) == "acme"
    with pytest.raises(Unauthorized):
        await auth.authenticate("other-tenant", token)
    for bad in (None, "", "qg_x", token + "x", token.replace("qg_", "zz_")):
        with pytest.raises(Unauthorized):
            await auth.authenticate(None, bad)
    assert await admin.revoke_key(token) is True
    assert await admin.revoke_key(token) is False
    clock.advance(31)  # past the verified-key cache
    with pytest.raises(Unauthorized):
        await auth.authenticate(None, token)


@pytest_twisted.ensureDeferred
async def test_only_a_hash_of_the_secret_is_stored(durable):
    admin = TenantAdmin(durable, Clock())
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    _, key_id, secret = token.split("_", 2)
    tenant, stored = await durable.find_key(key_id)
    assert tenant == "acme" and stored == hash_secret(secret) and secret not in stored


@pytest_twisted.ensureDeferred
async def test_keys_need_an_existing_tenant(durable):
    with pytest.raises(InvalidArgument):
        await TenantAdmin(durable, Clock()).create_key("nobody")


@pytest_twisted.ensureDeferred
async def test_failed_authentications_are_throttled_per_client_address(durable):
    from qgate.core.auth_throttle import ThrottledAuth
    from qgate.core.errors import RateLimited

    clock = Clock()
    admin = TenantAdmin(durable, clock)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    auth = ThrottledAuth(APIKeys(durable, clock), clock, rate=1, burst=3)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await auth.authenticate(None, "qg_guess_guess", peer="10.0.0.1")
    with pytest.raises(RateLimited) as e:
        await auth.authenticate(None, token, peer="10.0.0.1")  # even a good key, for now
    assert e.value.retry_after == pytest.approx(1)
    assert await auth.authenticate(None, token, peer="10.0.0.2") == "acme"
    assert await auth.authenticate(None, token) == "acme"  # no address: not throttled
    clock.advance(1)
    assert await auth.authenticate(None, token, peer="10.0.0.1") == "acme"
