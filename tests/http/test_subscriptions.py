"""Push subscriptions over HTTP, against Zaqar v2's api-ref samples and the statuses and
texts of Zaqar's own tests (``test_subscriptions.py``): create, list, show, update,
delete, confirm, expiry, purge."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from tests.support.http import Api, Reply

SUBS = "/v2/queues/test/subscriptions"

# The api-ref's request samples (subscription-*-request*.json).
CREATE_HTTP = {"subscriber": "http://10.229.49.117:5679", "ttl": 3600, "options": {}}
CREATE_MAIL = {
    "subscriber": "mailto:test@gmail.com",
    "ttl": 3600,
    "options": {"from": "Jack", "subject": "Hello"},
}
UPDATE = {"subscriber": "http://10.229.49.117:1234", "ttl": 360, "options": {"name": "test"}}
CONFIRM = {"confirmed": True}

UNSUPPORTED = "The subscriber type of subscription must be supported in the list ['http', 'https']."


async def create(api: Api, document: Any = None, path: str = SUBS, **kw: Any) -> str:
    reply = await api.post(path, CREATE_HTTP if document is None else document, **kw)
    assert reply.status == 201, reply.body
    sid: str = reply.json["subscription_id"]
    return sid


def refused(reply: Reply, status: int, description: str, title: str = "Invalid API request"):
    assert (reply.status, reply.json) == (status, {"title": title, "description": description})


# -- create ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_answers_201_with_the_id_and_show_answers_the_sample_fields(
    api: Api, clock: Clock
) -> None:
    reply = await api.post(SUBS, CREATE_HTTP)
    assert reply.status == 201
    assert list(reply.json) == ["subscription_id"]
    sid = reply.json["subscription_id"]
    assert isinstance(sid, str) and len(sid) == 24
    assert reply.header("Location") == SUBS
    clock.advance(1632)
    shown = await api.get(f"{SUBS}/{sid}")
    assert shown.status == 200
    # subscription-show-response.json's fields, plus "confirmed" as Zaqar's storage adds,
    # plus qgate's delivery counters.
    assert shown.json == {
        "age": 1632,
        "id": sid,
        "subscriber": "http://10.229.49.117:5679",
        "source": "test",
        "ttl": 3600,
        "options": {},
        "confirmed": False,
        "stats": {
            "delivered": 0,
            "failed_attempts": 0,
            "given_up": 0,
            "in_flight": 0,
            "lag": 0,
            "last_error": None,
        },
    }


async def queue_names(api: Api) -> list[str]:
    """The queues that exist: a never-created one reads as empty (as in Zaqar) on GET."""
    reply = await api.get("/v2/queues")
    return [] if reply.status == 204 else [q["name"] for q in reply.json["queues"]]


@pytest_twisted.ensureDeferred
async def test_a_subscription_creates_its_queue(api: Api) -> None:
    assert "test" not in await queue_names(api)
    await create(api)
    assert "test" in await queue_names(api)


@pytest.mark.parametrize(
    "subscriber", ["mailto:test@gmail.com", "trust+http://example.com", "trust+https://x", "fake"]
)
@pytest_twisted.ensureDeferred
async def test_mail_and_trust_subscribers_are_refused_as_unsupported_types(
    api: Api, subscriber: str
) -> None:
    reply = await api.post(SUBS, {**CREATE_MAIL, "subscriber": subscriber})
    refused(reply, 400, UNSUPPORTED)
    assert "test" not in await queue_names(api)  # nothing was made


@pytest_twisted.ensureDeferred
async def test_the_same_subscriber_again_answers_the_same_id_until_it_is_confirmed(
    api: Api,
) -> None:
    first = await create(api, {"subscriber": "http://CCC.com"})
    again = await api.post(SUBS, {"subscriber": "http://CCC.com", "ttl": 999})
    assert (again.status, again.json) == (201, {"subscription_id": first})
    assert (await api.get(f"{SUBS}/{first}")).json["ttl"] == 3600  # unchanged
    assert (await api.put(f"{SUBS}/{first}/confirm", CONFIRM)).status == 204
    conflict = await api.post(SUBS, {"subscriber": "http://CCC.com"})
    refused(
        conflict,
        409,
        "Such subscription already exists.Subscriptions are unique by project + queue "
        "+ subscriber URI.",
        title="Resource conflict",
    )
    assert conflict.header("Location") == SUBS
    other_queue = await api.post("/v2/queues/other/subscriptions", {"subscriber": "http://CCC.com"})
    assert other_queue.status == 201


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (None, "Missing parameter subscriber in body."),
        ({}, "Missing parameter subscriber in body."),
        ({"ttl": 600}, "Missing parameter subscriber in body."),
        ([1], "Subscriptions must be a dict."),
        ({"subscriber": None}, UNSUPPORTED),
        ({"subscriber": ""}, UNSUPPORTED),
        ({"subscriber": 7}, UNSUPPORTED),
        ({"subscriber": "email://fake"}, UNSUPPORTED),
        ({"subscriber": "http://x", "options": 1}, "Options must be a dict."),
        ({"subscriber": "http://x", "options": []}, "Options must be a dict."),
        ({"subscriber": "http://x", "ttl": "invalid"}, "TTL must be an integer."),
        ({"subscriber": "http://x", "ttl": 60.5}, "TTL must be an integer."),
        ({"subscriber": "http://x", "ttl": True}, "TTL must be an integer."),
        (
            {"subscriber": "http://x", "ttl": 59},
            "The TTL for a subscription must be at least 60 seconds long.",
        ),
        (
            {"subscriber": "http://x", "ttl": 0},
            "The TTL for a subscription must be at least 60 seconds long.",
        ),
        (
            {"subscriber": "http://x", "ttl": 2**62},
            "The TTL seconds for a subscription plus current time must be less than "
            "9999-12-31 23:59:59.999999.",
        ),
        (
            {"subscriber": "http://x", "options": {"_retry_policy": [1]}},
            "retry_policy must be a dict.",
        ),
        (
            {"subscriber": "http://x", "options": {"_retry_policy": {"minimum_delay": "1"}}},
            "Retry policy: minimum_delay must be a integer.",
        ),
        (
            {"subscriber": "http://x", "options": {"_retry_policy": {"minimum_delay": 40}}},
            "minimum_delay must less than maximum_delay.",
        ),
        (
            {"subscriber": "http://x", "options": {"_retry_policy": {"maximum_delay": 10}}},
            "invalid minimum_delay and maximum_delay.",
        ),
        (
            {
                "subscriber": "http://x",
                "options": {"_retry_policy": {"retry_backoff_function": "cubic"}},
            },
            "invalid retry_backoff_function.",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_subscription_is_refused_with_zaqars_text_and_changes_nothing(
    api: Api, body: Any, description: str
) -> None:
    if body is None:
        reply = await api.request("POST", SUBS)
    else:
        reply = await api.post(SUBS, body)
    refused(reply, 400, description)
    assert "test" not in await queue_names(api)


@pytest_twisted.ensureDeferred
async def test_a_body_that_is_not_json_cannot_be_parsed(api: Api) -> None:
    data = b'{"subscriber": "http://triger.me", "ttl": 600, "options": xxx}'
    reply = await api.request("POST", SUBS, data=data)
    assert reply.status == 400
    assert "body could not be parsed" in reply.json["description"]


@pytest_twisted.ensureDeferred
async def test_a_subscriber_qgate_cannot_deliver_to_is_refused_by_the_core(api: Api) -> None:
    reply = await api.post(SUBS, {"subscriber": "http://"})
    assert reply.status == 400
    assert "http:// or https:// URL with a host" in reply.json["description"]


@pytest_twisted.ensureDeferred
async def test_a_good_retry_policy_is_kept_in_the_options(api: Api) -> None:
    policy = {"minimum_delay": 1, "maximum_delay": 60, "retry_backoff_function": "linear"}
    sid = await create(api, {"subscriber": "http://x", "options": {"_retry_policy": policy}})
    assert (await api.get(f"{SUBS}/{sid}")).json["options"] == {"_retry_policy": policy}


# -- list ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_list_answers_the_sample_document_by_id(api: Api, clock: Clock) -> None:
    first = await create(api, {"subscriber": "http://10.229.49.117:5678", "ttl": 360})
    clock.advance(11)
    second = await create(api, {"subscriber": "http://10.229.49.117:5679", "ttl": 360})
    clock.advance(2)
    reply = await api.get(SUBS)
    assert reply.status == 200
    assert reply.json == {
        "links": [{"href": f"{SUBS}?marker={second}", "rel": "next"}],
        "subscriptions": [
            {
                "age": 13,
                "id": first,
                "subscriber": "http://10.229.49.117:5678",
                "source": "test",
                "ttl": 360,
                "options": {},
                "confirmed": False,
            },
            {
                "age": 2,
                "id": second,
                "subscriber": "http://10.229.49.117:5679",
                "source": "test",
                "ttl": 360,
                "options": {},
                "confirmed": False,
            },
        ],
    }


@pytest_twisted.ensureDeferred
async def test_an_empty_list_has_no_links_even_for_a_queue_that_is_not_there(api: Api) -> None:
    for path in (SUBS, "/v2/queues/nowhere/subscriptions"):
        reply = await api.get(path)
        assert (reply.status, reply.json) == (200, {"subscriptions": [], "links": []})


@pytest.mark.parametrize("limit", [1, 5, 10, 15])
@pytest_twisted.ensureDeferred
async def test_pages_follow_the_next_link_to_an_empty_page(
    api: Api, clock: Clock, limit: int
) -> None:
    made = []
    for i in range(15):
        made.append(await create(api, {"subscriber": f"http://{i}"}))
        clock.advance(0.01)
    seen: list[str] = []
    reply = await api.get(f"{SUBS}?limit={limit}")
    # Zaqar's order: the marker first when one was given, else appended to the limit.
    order = ["limit", "marker"]
    while reply.json["subscriptions"]:
        assert len(reply.json["subscriptions"]) <= limit
        seen += [s["id"] for s in reply.json["subscriptions"]]
        [link] = reply.json["links"]
        query = dict(parse_qsl(urlsplit(link["href"]).query))
        assert list(query) == order
        assert query == {"limit": str(limit), "marker": seen[-1]}
        reply = await api.get(link["href"])
        order = ["marker", "limit"]
    assert reply.json["links"] == []
    assert seen == made  # by id, which is by age


@pytest_twisted.ensureDeferred
async def test_a_given_marker_comes_first_in_the_next_link(api: Api, clock: Clock) -> None:
    ids = []
    for i in range(3):
        ids.append(await create(api, {"subscriber": f"http://{i}"}))
        clock.advance(0.01)
    reply = await api.get(f"{SUBS}?limit=1&marker={ids[0]}")
    assert [s["id"] for s in reply.json["subscriptions"]] == [ids[1]]
    assert reply.json["links"] == [{"rel": "next", "href": f"{SUBS}?marker={ids[1]}&limit=1"}]


@pytest.mark.parametrize("limit", ["0", "21", "-1"])
@pytest_twisted.ensureDeferred
async def test_a_limit_out_of_range_is_refused(api: Api, limit: str) -> None:
    reply = await api.get(f"{SUBS}?limit={limit}")
    refused(reply, 400, "Limit must be at least 1 and may not be greater than 20.")


@pytest_twisted.ensureDeferred
async def test_a_limit_that_is_not_a_number_is_an_invalid_parameter(api: Api) -> None:
    reply = await api.get(f"{SUBS}?limit=ten")
    refused(
        reply,
        400,
        'The "limit" parameter is invalid. The value must be an integer.',
        title="Invalid parameter",
    )


# -- show, update, delete --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_show_of_a_subscription_that_is_not_there_is_404(api: Api) -> None:
    await create(api)
    for path in (f"{SUBS}/fake", "/v2/queues/nowhere/subscriptions/fake"):
        refused(await api.get(path), 404, "Subscription fake does not exist", title="Not found")


@pytest_twisted.ensureDeferred
async def test_update_with_the_sample_changes_every_field_and_counts_the_ttl_from_now(
    api: Api, clock: Clock
) -> None:
    sid = await create(api, {**CREATE_HTTP, "ttl": 600})
    clock.advance(500)
    reply = await api.request("PATCH", f"{SUBS}/{sid}", UPDATE)
    assert (reply.status, reply.body) == (204, b"")
    assert reply.header("Location") == f"{SUBS}/{sid}"
    clock.advance(300)  # past the first ttl, within the new one (360 from the update)
    shown = (await api.get(f"{SUBS}/{sid}")).json
    assert {k: shown[k] for k in UPDATE} == UPDATE
    assert shown["age"] == 800
    clock.advance(60)
    assert (await api.get(f"{SUBS}/{sid}")).status == 404


@pytest_twisted.ensureDeferred
async def test_update_changes_only_the_fields_given(api: Api) -> None:
    sid = await create(api, {"subscriber": "http://triger.me", "ttl": 600, "options": {"a": 1}})
    assert (await api.request("PATCH", f"{SUBS}/{sid}", {"ttl": 300})).status == 204
    shown = (await api.get(f"{SUBS}/{sid}")).json
    assert (shown["ttl"], shown["subscriber"], shown["options"]) == (
        300,
        "http://triger.me",
        {"a": 1},
    )
    nulls = {"ttl": None, "options": {"b": 2}, "subscriber": None}
    assert (await api.request("PATCH", f"{SUBS}/{sid}", nulls)).status == 204
    shown = (await api.get(f"{SUBS}/{sid}")).json
    assert (shown["ttl"], shown["options"]) == (300, {"b": 2})


@pytest.mark.parametrize(
    ("body", "status", "title", "description"),
    [
        (None, 400, "Invalid API request", "No subscription to create."),
        ({}, 400, "Invalid API request", "No subscription to create."),
        ([1], 400, "Invalid API request", "Subscriptions must be a dict."),
        ({"ttl": "invalid"}, 400, "Invalid API request", "TTL must be an integer."),
        ({"subscriber": "mailto:a@b"}, 400, "Invalid API request", UNSUPPORTED),
        (
            {"unknown": 1},
            400,
            "Unable to update subscription",
            "Subscription {sid} could not be updated.",
        ),
        (
            {"ttl": None},
            400,
            "Unable to update subscription",
            "Subscription {sid} could not be updated.",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_update_is_refused_and_changes_nothing(
    api: Api, body: Any, status: int, title: str, description: str
) -> None:
    sid = await create(api)
    before = (await api.get(f"{SUBS}/{sid}")).json
    if body is None:
        reply = await api.request("PATCH", f"{SUBS}/{sid}")
    else:
        reply = await api.request("PATCH", f"{SUBS}/{sid}", body)
    refused(reply, status, description.format(sid=sid), title=title)
    assert (await api.get(f"{SUBS}/{sid}")).json == before


@pytest_twisted.ensureDeferred
async def test_update_of_a_subscription_that_is_not_there_is_404(api: Api) -> None:
    await create(api)
    for path in (f"{SUBS}/x", "/v2/queues/nowhere/subscriptions/x"):
        reply = await api.request("PATCH", path, {"ttl": 300})
        refused(reply, 404, "Subscription x does not exist", title="Not found")


@pytest_twisted.ensureDeferred
async def test_update_to_another_subscriptions_subscriber_is_409(api: Api) -> None:
    await create(api, {"subscriber": "http://triger.me"})
    other = await create(api, {"subscriber": "http://update.me"})
    reply = await api.request("PATCH", f"{SUBS}/{other}", {"subscriber": "http://triger.me"})
    refused(
        reply,
        409,
        "Such subscription already exists. Subscriptions are unique by project + queue "
        "+ subscriber URI.",
        title="Resource conflict",
    )
    assert (await api.get(f"{SUBS}/{other}")).json["subscriber"] == "http://update.me"


@pytest_twisted.ensureDeferred
async def test_delete_answers_204_whether_or_not_it_was_there(api: Api) -> None:
    sid = await create(api)
    assert (await api.get(f"{SUBS}/{sid}")).status == 200
    for _ in range(2):
        reply = await api.delete(f"{SUBS}/{sid}")
        assert (reply.status, reply.body) == (204, b"")
    assert (await api.get(f"{SUBS}/{sid}")).status == 404
    assert (await api.delete("/v2/queues/nowhere/subscriptions/x")).status == 204


# -- confirm ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_confirm_with_the_sample_answers_204_and_shows_confirmed(api: Api) -> None:
    sid = await create(api)
    reply = await api.put(f"{SUBS}/{sid}/confirm", CONFIRM)
    assert (reply.status, reply.body) == (204, b"")
    assert reply.header("Location") == f"{SUBS}/{sid}/confirm"
    assert (await api.get(f"{SUBS}/{sid}")).json["confirmed"] is True
    assert (await api.put(f"{SUBS}/{sid}/confirm", {"confirmed": False})).status == 204
    assert (await api.get(f"{SUBS}/{sid}")).json["confirmed"] is False


@pytest_twisted.ensureDeferred
async def test_confirm_refuses_what_is_not_a_boolean_and_what_is_not_there(api: Api) -> None:
    sid = await create(api)
    path = f"{SUBS}/{sid}/confirm"
    reply = await api.request("PUT", path, data=b"{confirmed:123}")
    assert reply.status == 400 and "body could not be parsed" in reply.json["description"]
    for body in ({"confirmed": 123}, {}, {"confirmed": None}):
        refused(await api.put(path, body), 400, "The 'confirmed' should be boolean.")
    refused(await api.request("PUT", path), 400, "The 'confirmed' should be boolean.")
    refused(
        await api.put(path, [True]),
        400,
        f"Subscription {sid} could not be confirmed.",
        title="Unable to confirm subscription",
    )
    refused(
        await api.put(f"{SUBS}/fake-id/confirm", CONFIRM),
        404,
        "Subscription fake-id does not exist",
        title="Not found",
    )
    assert (await api.post(path, CONFIRM)).status == 405  # Zaqar's code serves PUT only
    assert (await api.get(f"{SUBS}/{sid}")).json["confirmed"] is False


# -- expiry, purge, queue deletion -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_subscription_expires_with_its_ttl(api: Api, clock: Clock) -> None:
    sid = await create(api, {"subscriber": "http://x", "ttl": 60})
    clock.advance(59)
    assert (await api.get(f"{SUBS}/{sid}")).status == 200
    clock.advance(1)
    assert (await api.get(f"{SUBS}/{sid}")).status == 404
    assert (await api.get(SUBS)).json == {"subscriptions": [], "links": []}
    assert (await api.request("PATCH", f"{SUBS}/{sid}", {"ttl": 600})).status == 404
    assert (await api.put(f"{SUBS}/{sid}/confirm", CONFIRM)).status == 404
    # Its subscriber is free again.
    assert await create(api, {"subscriber": "http://x"}) != sid


@pytest.mark.parametrize(
    ("body", "messages_left", "subscriptions_left"),
    [
        ({"resource_types": ["subscriptions"]}, 1, 0),
        ({"resource_types": ["messages"]}, 0, 1),
        ({"resource_types": ["messages", "subscriptions"]}, 0, 0),
        (None, 0, 0),  # Zaqar's default: both
    ],
)
@pytest_twisted.ensureDeferred
async def test_purge_deletes_the_resource_types_it_names(
    api: Api, service: QueueService, body: Any, messages_left: int, subscriptions_left: int
) -> None:
    await api.post_messages("test", "m")
    await create(api)
    if body is None:
        reply = await api.request("POST", "/v2/queues/test/purge")
    else:
        reply = await api.post("/v2/queues/test/purge", body)
    assert reply.status == 204
    assert len(await service.observe("p1", "test", limit=10)) == messages_left
    assert len((await api.get(SUBS)).json["subscriptions"]) == subscriptions_left


@pytest_twisted.ensureDeferred
async def test_deleting_the_queue_deletes_its_subscriptions(api: Api) -> None:
    sid = await create(api)
    assert (await api.delete("/v2/queues/test")).status == 204
    await api.put("/v2/queues/test", {})
    assert (await api.get(SUBS)).json["subscriptions"] == []
    assert (await api.get(f"{SUBS}/{sid}")).status == 404


@pytest_twisted.ensureDeferred
async def test_tenants_never_see_each_others_subscriptions(api: Api) -> None:
    sid = await create(api)
    assert (await api.get(f"{SUBS}/{sid}", project="p2")).status == 404
    assert (await api.get(SUBS, project="p2")).json["subscriptions"] == []
    assert (await api.delete(f"{SUBS}/{sid}", project="p2")).status == 204
    assert (await api.get(f"{SUBS}/{sid}")).status == 200


@pytest_twisted.ensureDeferred
async def test_the_json_home_document_has_zaqars_subscription_entries(api: Api) -> None:
    resources = (await api.get("/v2")).json["resources"]
    assert resources["rel/subscriptions_get"] == {
        "href-template": "/v2/queues/{queue_name}/subscriptions{?marker,limit}",
        "href-vars": {
            "queue_name": "param/queue_name",
            "marker": "param/marker",
            "limit": "param/subscription_limit",
        },
        "hints": {"allow": ["GET"], "formats": {"application/json": {}}},
    }
    assert resources["rel/subscriptions_post"]["hints"] == {
        "allow": ["POST"],
        "formats": {"application/json": {}},
        "accept-post": ["application/json"],
    }
    item = "/v2/queues/{queue_name}/subscriptions/{subscriptions_id}"
    assert resources["rel/subscription"]["href-template"] == item
    assert resources["rel/subscription"]["hints"]["allow"] == ["GET", "DELETE"]
    assert resources["rel/subscription_patch"]["href-template"] == item
    assert resources["rel/subscription_patch"]["hints"]["allow"] == ["PATCH"]


# -- retry policies (push delivery) ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_queues_retry_policy_is_checked_as_zaqar_checks_it(api: Api) -> None:
    bad = {"_retry_policy": {"retry_backoff_function": "cubic"}}
    refused(await api.put("/v2/queues/rq", bad), 400, "invalid retry_backoff_function.")
    good = {"_retry_policy": {"retries_with_no_delay": 1, "task_retry_limit": 5}}
    assert (await api.put("/v2/queues/rq", good)).status == 201


@pytest_twisted.ensureDeferred
async def test_app_engine_retry_keys_that_cannot_be_used_are_refused(api: Api) -> None:
    for policy in ({"task_retry_limit": -1}, {"max_doublings": 1.5}, {"task_age_limit": "x"}):
        body = {"subscriber": "http://hooks.example/x", "options": {"_retry_policy": policy}}
        reply = await api.post(SUBS, body)
        assert reply.status == 400, policy
        assert "_retry_policy." in reply.json["description"]
