"""python-zaqarclient's whole queue, message and claim surface, unmodified, against a real
listening socket: every public operation of its v2 ``Queue``, ``Message`` and ``Claim``
(and the client's listing, health and home document), checked by what a user would read
back. Signed URLs are in ``test_zaqarclient_signed.py``; subscriptions are not here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted

from tests.support.core import memory_service
from tests.support.http import CLIENT, HTTP_TEST_CONFIG, OTHER_CLIENT, drive_listener, make_ctx

AUTH = {"auth_opts": {"backend": "noauth", "options": {"os_project_id": "p1"}}}


def md5_of(body: Any) -> str:
    return "MD5:" + hashlib.md5(json.dumps(body).encode(), usedforsecurity=False).hexdigest()


def drive_queue(c: Any, seen: dict[str, Any]) -> None:
    """Existence, metadata (set, replace, clear), stats and purge of one queue."""
    queue = c.queue("work", force_create=True)
    seen["exists"] = (queue.exists(), c.queue("absent", auto_create=False).exists())
    queue.metadata(new_meta={"team": "ops", "_default_message_ttl": 120})
    # A new Queue object reads the server, not the first one's cache.
    seen["meta_set"] = c.queue("work", auto_create=False).metadata()
    queue.post({"body": "default ttl"})  # no ttl: the queue's _default_message_ttl
    seen["default_ttl"] = [m.ttl for m in queue.messages(echo=True)]
    # The client sends a JSON patch: replace team, remove every other key it read.
    queue.metadata(new_meta={"team": "dev"})
    seen["meta_replaced"] = c.queue("work", auto_create=False).metadata_dict
    queue.post([{"body": i, "ttl": 300} for i in range(3)])
    seen["stats_before_purge"] = queue.stats["messages"]
    queue.purge()
    seen["stats_after_purge"] = queue.stats["messages"]
    seen["listed_after_purge"] = list(queue.messages(echo=True, include_claimed=True))
    seen["meta_after_purge"] = queue.metadata(force_reload=True)["team"]
    queue.post({"body": "again", "ttl": 300})
    queue.purge(resource_types=["messages"])
    seen["purged_by_type"] = queue.stats["messages"]["total"]
    queue.metadata(new_meta={})
    seen["meta_cleared"] = c.queue("work", auto_create=False).metadata()
    seen["missing_stats"] = c.queue("absent", auto_create=False).stats


def drive_messages(c: Any, other: Any, seen: dict[str, Any]) -> None:
    """Post (one, a batch), list (echo, pages through ``next``), get by id and by ids,
    delete (one, by ids) and pop."""
    from zaqarclient.transport import errors

    queue = c.queue("mail", force_create=True)
    seen["post_one"] = queue.post({"body": {"n": 0}, "ttl": 300})
    seen["post_batch"] = queue.post([{"body": {"n": n}, "ttl": 300} for n in range(1, 7)])
    seen["stats"] = queue.stats["messages"]
    # echo is off by default: a client does not list its own messages; another does.
    seen["own_without_echo"] = list(queue.messages())
    seen["other_lists"] = [m.body["n"] for m in other.queue("mail").messages(limit=3)]
    seen["first_page"] = [m.id for m in queue.messages(echo=True, limit=2)]
    seen["all_pages"] = [m.body["n"] for m in queue.messages(echo=True, limit=2).stream()]
    one = queue.message("2")
    seen["one"] = (one.id, one.body, one.ttl, one.age, one.claim_id, one.checksum)
    seen["many"] = sorted(m.body["n"] for m in queue.messages("1", "3", "999"))
    one.delete()
    try:
        queue.message("2")
    except errors.ResourceNotFound as e:
        seen["deleted_one"] = str(e)
    queue.delete_messages("3", "4", "999")
    try:
        queue.messages("3", "4")
    except errors.ResourceNotFound as e:
        seen["deleted_many"] = str(e)
    seen["popped"] = [(m.id, m.body) for m in queue.pop(count=2)]
    seen["left_after_pop"] = [m.body["n"] for m in queue.messages(echo=True).stream()]
    seen["pop_more_than_left"] = [m.body["n"] for m in queue.pop(count=10)]
    seen["pop_empty"] = list(queue.pop(count=1))


def drive_claims(c: Any, other: Any, seen: dict[str, Any]) -> None:
    """Claims: create, read back (get/query), renew, release; claimed messages are hidden
    from other claims, deleted by their claim or in bulk by ids."""
    from zaqarclient.transport import errors

    queue = c.queue("jobs", force_create=True)
    queue.post([{"body": f"job-{n}", "ttl": 300} for n in range(5)])
    first = queue.claim(ttl=60, grace=60, limit=2)
    held = list(first)
    seen["first"] = [(m.body, m.claim_id == first.id) for m in held]
    second = other.queue("jobs").claim(ttl=60, grace=60, limit=10)
    seen["second"] = [m.body for m in second]
    third = queue.claim(ttl=60, grace=60)
    seen["third"] = (third.id, list(third))
    seen["stats_claimed"] = queue.stats["messages"]
    again = queue.claim(id=first.id)
    seen["queried"] = (again.ttl, again.age, [(m.body, m.claim_id) for m in again])
    first.update(ttl=120, grace=90)
    seen["renewed_ttl"] = queue.claim(id=first.id).ttl
    # python-zaqarclient's delete_messages sends ids only, never claim_ids: as Zaqar does
    # by default, the claimed messages are deleted all the same (a consumer's batch ack).
    second_held = list(queue.claim(id=second.id))
    queue.delete_messages(*(m.id for m in second_held[:2]))
    seen["after_bulk"] = queue.stats["messages"]["total"]
    for message in queue.claim(id=second.id):
        message.delete()  # with its claim's id, from the href
    seen["after_claim_deletes"] = sorted(
        m.body for m in queue.messages(echo=True, include_claimed=True)
    )
    first.delete()
    try:
        queue.claim(id=first.id).ttl  # noqa: B018 (a GET of the claim)
    except errors.ResourceNotFound:
        seen["released_claim"] = "gone"
    # Released, its messages are free again: the next claim gets them.
    seen["reclaimed"] = sorted(m.body for m in other.queue("jobs").claim(ttl=60, grace=60))
    try:
        first.update(ttl=60)
    except errors.ResourceNotFound:
        seen["renew_released"] = "gone"
    try:
        held[0].delete()  # its href names the released claim, another holds it now
    except errors.ForbiddenError as e:
        seen["stale_claim_delete"] = str(e)


def drive_listing(c: Any, seen: dict[str, Any]) -> None:
    """The client's queue listing (pages, count, details), health, home, queue delete."""
    for name in ("a-1", "a-2", "a-3"):
        c.queue(name, force_create=True)
    c.queue("a-2", auto_create=False).metadata(new_meta={"tier": "gold"})
    listing, count = c.queues(limit=2, with_count=True)
    seen["queue_pages"] = ([q.name for q in listing.stream()], count)
    detailed, _ = c.queues(detailed=True, marker="a-1", limit=1)
    seen["detailed"] = [(q.name, q.metadata()["tier"]) for q in detailed]
    seen["health"] = c.health()["catalog_reachable"]
    seen["home_has_messages"] = "rel/messages" in c.homedoc()["resources"]
    for name in ("a-1", "a-2", "a-3", "work", "mail", "jobs"):
        c.queue(name, auto_create=False).delete()
    c.queue("never-created", auto_create=False).delete()
    seen["after_delete"] = [q.name for q in c.queues()[0]]


def drive_client(url: str) -> dict[str, Any]:
    """Both clients' sides, blocking (run in a thread): what each step saw."""
    from zaqarclient.queues.v2.client import Client

    c = Client(url, version=2, conf={**AUTH, "client_uuid": CLIENT})
    other = Client(url, version=2, conf={**AUTH, "client_uuid": OTHER_CLIENT})
    seen: dict[str, Any] = {}
    drive_queue(c, seen)
    drive_messages(c, other, seen)
    drive_claims(c, other, seen)
    drive_listing(c, seen)
    # noauth without a project: the client sends its own placeholder project id.
    bare = Client(url, version=2, conf={"auth_opts": {"backend": "noauth"}})
    bare.queue("bare", force_create=True).post({"body": "mine", "ttl": 300})
    seen["bare"] = [m.body for m in bare.queue("bare").messages(echo=True)]
    return seen


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_every_queue_message_and_claim_operation_of_python_zaqarclient(
    reactor: Any,
) -> None:
    service = memory_service(reactor)
    ctx = make_ctx(service, http=replace(HTTP_TEST_CONFIG, enable_checksum=True), reactor=reactor)
    seen = await drive_listener(reactor, ctx, drive_client)

    # Queues: existence, metadata round trips, stats, purge.
    assert seen["exists"] == (True, False)
    assert seen["meta_set"]["team"] == "ops"
    assert seen["meta_set"]["_default_message_ttl"] == 120
    assert seen["default_ttl"] == [120]
    replaced = seen["meta_replaced"]
    assert replaced["team"] == "dev"
    assert replaced["_default_message_ttl"] == 3600  # removed: the default again
    assert seen["stats_before_purge"]["total"] == 4
    assert seen["stats_after_purge"] == {"claimed": 0, "free": 0, "delayed": 0, "total": 0}
    assert seen["listed_after_purge"] == []
    assert seen["meta_after_purge"] == "dev"  # a purge keeps the queue and its metadata
    assert seen["purged_by_type"] == 0
    assert "team" not in seen["meta_cleared"]
    assert seen["missing_stats"] == {"messages": {"claimed": 0, "free": 0, "total": 0}}

    # Messages.
    assert seen["post_one"] == {"resources": ["/v2/queues/mail/messages/1"]}
    assert seen["post_batch"]["resources"] == [f"/v2/queues/mail/messages/{n}" for n in range(2, 8)]
    assert (seen["stats"]["total"], seen["stats"]["free"], seen["stats"]["claimed"]) == (7, 7, 0)
    assert seen["own_without_echo"] == []
    assert seen["other_lists"] == [0, 1, 2]
    assert seen["first_page"] == ["1", "2"]
    assert seen["all_pages"] == [0, 1, 2, 3, 4, 5, 6]
    assert seen["one"] == ("2", {"n": 1}, 300, 0, None, md5_of({"n": 1}))
    assert seen["many"] == [0, 2]
    assert "Code: 404." in seen["deleted_one"]
    assert (
        "Description: No messages with IDs: ['3', '4'] found in the queue mail for project p1.."
        in seen["deleted_many"]
    )
    assert seen["popped"] == [("1", {"n": 0}), ("5", {"n": 4})]
    assert seen["left_after_pop"] == [5, 6]
    assert seen["pop_more_than_left"] == [5, 6]
    assert seen["pop_empty"] == []

    # Claims.
    assert seen["first"] == [("job-0", True), ("job-1", True)]
    assert seen["second"] == ["job-2", "job-3", "job-4"]  # none of the first claim's
    assert seen["third"] == (None, [])  # nothing left to claim: a 204
    claimed = seen["stats_claimed"]
    assert (claimed["total"], claimed["claimed"], claimed["free"]) == (5, 5, 0)
    ttl, age, messages = seen["queried"]
    assert (ttl, age) == (60, 0)
    assert [body for body, _ in messages] == ["job-0", "job-1"]
    assert len({claim_id for _, claim_id in messages}) == 1
    assert seen["renewed_ttl"] == 120
    assert seen["after_bulk"] == 3
    assert seen["after_claim_deletes"] == ["job-0", "job-1"]
    assert seen["released_claim"] == "gone"
    assert seen["reclaimed"] == ["job-0", "job-1"]
    assert seen["renew_released"] == "gone"
    assert "Code: 403. Title: Unable to delete." in seen["stale_claim_delete"]

    # The queue listing, health, home, deletes.
    assert seen["queue_pages"] == (["a-1", "a-2", "a-3", "jobs", "mail", "work"], 6)
    assert seen["detailed"] == [("a-2", "gold")]
    assert seen["health"] is True
    assert seen["home_has_messages"] is True
    assert seen["after_delete"] == []
    assert await service.list_queues("p1") == []
    assert seen["bare"] == ["mine"]
    assert (await service.queue_stats("fake_project_id_for_noauth", "bare")).total == 1
