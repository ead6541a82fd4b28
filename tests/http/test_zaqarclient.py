"""python-zaqarclient, unmodified, against a real listening socket: the wire format is
Zaqar v2 as a real client understands it."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from qgate.core.service import QueueService
from tests.support.core import memory_service
from tests.support.http import drive_listener, make_ctx


def drive_client(url: str) -> dict[str, Any]:
    """The client's side, blocking (run in a thread): what each step saw."""
    from zaqarclient.queues import client
    from zaqarclient.transport import errors

    c = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": "p1"}}},
    )
    seen: dict[str, Any] = {"ping": c.ping()}
    # A queue never created reads as an empty one (Zaqar's lazy queues); nothing is created.
    seen["lazy_metadata"] = c.queue("never-created").metadata()
    try:
        # Over the listener's max_request_body: refused before it is read, as a 400.
        c.queue("big").post([{"body": "x" * (600 * 1024), "ttl": 300}])
    except errors.MalformedRequest as e:
        seen["too_large"] = str(e)
    queue = c.queue("jobs", force_create=True)
    seen["exists"] = queue.exists()
    seen["posted"] = queue.post([{"body": {"n": 1}, "ttl": 300}, {"body": "two", "ttl": 300}])
    seen["listed"] = [(m.id, m.body) for m in queue.messages(echo=True)]
    claim = queue.claim(ttl=60, grace=60)
    claimed = list(claim)
    seen["claim_id"] = claim.id
    seen["claimed"] = [(m.id, m.claim_id) for m in claimed]
    claimed[0].delete()
    seen["stats"] = queue.stats
    queue.metadata(new_meta={"team": "ops"})
    seen["metadata"] = queue.metadata(force_reload=True)
    listing, count = c.queues(with_count=True)
    seen["queues"] = ([q.name for q in listing], count)
    queue.delete()
    seen["exists_after_delete"] = queue.exists()
    return seen


def drive_subscriptions(url: str) -> dict[str, Any]:
    """The client's subscription calls, blocking (run in a thread): what each step saw."""
    from zaqarclient.queues import client
    from zaqarclient.transport.errors import ResourceNotFound

    c = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": "p1"}}},
    )
    made = c.subscription("jobs", subscriber="http://hooks.example/a", ttl=600, options={"a": 1})
    other = c.subscription("jobs", subscriber="https://hooks.example/b", ttl=3600)
    seen: dict[str, Any] = {"ids": (made.id, other.id)}
    seen["made"] = (made.subscriber, made.ttl, made.options, made.confirmed, made.age)
    got = c.subscription("jobs", id=made.id)
    seen["got"] = (got.id, got.subscriber, got.ttl, got.options)
    got.update({"subscriber": "http://hooks.example/c", "ttl": 300, "options": {"b": 2}})
    again = c.subscription("jobs", id=made.id)
    seen["updated"] = (again.subscriber, again.ttl, again.options)
    queue = c.queue("jobs", auto_create=False)
    seen["listed"] = [(s.id, s.queue_name, s.subscriber) for s in queue.subscriptions()]
    seen["paged"] = [s.id for s in c.subscriptions("jobs", limit=1).stream()]
    got.delete()
    try:
        c.subscription("jobs", id=made.id)
    except ResourceNotFound:
        seen["after_delete"] = "not found"
    seen["left"] = [s.id for s in queue.subscriptions()]
    return seen


async def run_client(reactor: Any, drive: Any) -> tuple[QueueService, dict[str, Any]]:
    """``drive(url)`` in a thread against a real listener over a memory-only service."""
    service = memory_service(reactor)
    seen = await drive_listener(reactor, make_ctx(service, reactor=reactor), drive)
    return service, seen


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_python_zaqarclient_manages_subscriptions(reactor: Any) -> None:
    service, seen = await run_client(reactor, drive_subscriptions)
    first, second = seen["ids"]
    assert seen["made"] == ("http://hooks.example/a", 600, {"a": 1}, False, 0)
    assert seen["got"] == (first, "http://hooks.example/a", 600, {"a": 1})
    assert seen["updated"] == ("http://hooks.example/c", 300, {"b": 2})
    assert sorted(seen["listed"]) == sorted(
        [(first, "jobs", "http://hooks.example/c"), (second, "jobs", "https://hooks.example/b")]
    )
    assert seen["paged"] == [first, second]  # a stream follows the next links, by id
    assert seen["after_delete"] == "not found"
    assert seen["left"] == [second]
    assert [s.id for s in await service.list_subscriptions("p1", "jobs")] == [second]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_python_zaqarclient_works_unmodified(reactor: Any) -> None:
    service, seen = await run_client(reactor, drive_client)

    assert seen["ping"] is True
    assert seen["lazy_metadata"]["_default_message_ttl"] == 3600
    assert "Message collection size is too large" in seen["too_large"]
    assert seen["exists"] is True
    assert seen["posted"] == {
        "resources": ["/v2/queues/jobs/messages/1", "/v2/queues/jobs/messages/2"]
    }
    assert seen["listed"] == [("1", {"n": 1}), ("2", "two")]
    assert seen["claimed"] == [("1", seen["claim_id"]), ("2", seen["claim_id"])]
    stats = seen["stats"]["messages"]
    assert (stats["total"], stats["claimed"], stats["free"]) == (1, 1, 0)
    assert seen["metadata"]["team"] == "ops"
    assert seen["queues"] == (["jobs"], 1)
    assert seen["exists_after_delete"] is False
    assert await service.list_queues("p1") == []
