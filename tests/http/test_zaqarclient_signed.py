"""python-zaqarclient, unmodified, against a real listening socket in ``auth.mode = keys``:
one client with an API key signs a URL of a queue, a second client holding only that
signature (the client's ``signed-url`` auth backend) posts and lists messages."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted

from qgate.core.auth import APIKeys, TenantAdmin
from qgate.storage.memory import MemoryStorage
from tests.support.core import memory_service
from tests.support.http import HTTP_TEST_CONFIG, drive_listener, make_ctx


def drive_clients(url: str, token: str) -> dict[str, Any]:
    """Both clients' sides, blocking (run in a thread): what each step saw."""
    from zaqarclient.queues import client
    from zaqarclient.transport import errors

    owner = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "keystone", "options": {"os_auth_token": token}}},
    )
    seen: dict[str, Any] = {}
    owner.queue("jobs", force_create=True).post([{"body": "from the owner", "ttl": 300}])
    signed = owner.queue("jobs").signed_url(
        paths=["messages"], ttl_seconds=300, methods=["GET", "POST"]
    )
    seen["signed"] = signed
    options = {
        "paths": signed["paths"],
        "expires": signed["expires"],
        "methods": signed["methods"],
        "signature": signed["signature"],
        "os_project_id": signed["project"],
    }
    guest = client.Client(
        url, version=2, conf={"auth_opts": {"backend": "signed-url", "options": options}}
    )
    queue = guest.queue("jobs")
    seen["posted"] = queue.post([{"body": {"from": "the guest"}, "ttl": 300}])
    seen["listed"] = [m.body for m in queue.messages(echo=True)]
    try:
        queue.stats  # noqa: B018 (a GET of .../stats: not signed)
    except errors.ResourceNotFound:
        seen["stats"] = "refused"
    tokenless = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": "acme"}}},
    )
    try:
        list(tokenless.queue("jobs").messages(echo=True))
    except errors.UnauthorizedError:
        seen["tokenless"] = "refused"
    return seen


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_url_signed_by_one_zaqarclient_lets_another_post_and_list(reactor: Any) -> None:
    service = memory_service(reactor)
    tenants = MemoryStorage()
    admin = TenantAdmin(tenants, reactor)
    await admin.create_tenant("acme")
    token = await admin.create_key("acme")
    http = replace(HTTP_TEST_CONFIG, signed_url_secret_key="integration-secret")
    ctx = make_ctx(service, http=http, auth=APIKeys(tenants, reactor), reactor=reactor)
    seen = await drive_listener(reactor, ctx, lambda url: drive_clients(url, token))

    signed = seen["signed"]
    assert signed["project"] == "acme"
    assert signed["paths"] == ["/v2/queues/jobs/messages"]
    assert signed["methods"] == ["GET", "POST"]
    assert seen["posted"] == {"resources": ["/v2/queues/jobs/messages/2"]}
    assert seen["listed"] == ["from the owner", {"from": "the guest"}]
    assert seen["stats"] == "refused"
    assert seen["tokenless"] == "refused"
    assert (await service.queue_stats("acme", "jobs")).total == 2
