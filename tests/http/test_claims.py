"""Claims over HTTP: create, query, renew, release, expiry and dead-lettering."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from qgate.core.service import QueueService
from tests.support.http import Api, Reply


def claim_id_of(reply: Reply) -> str:
    location = reply.header("Location")
    assert location is not None
    return location.rsplit("/", 1)[1]


@pytest_twisted.ensureDeferred
async def test_claim_answers_201_with_the_claimed_messages(api: Api) -> None:
    await api.post_messages("jobs", "a", "b", "c")
    reply = await api.post("/v2/queues/jobs/claims?limit=2", {"ttl": 120, "grace": 60})
    assert reply.status == 201
    claim_id = claim_id_of(reply)
    assert reply.header("Location") == f"/v2/queues/jobs/claims/{claim_id}"
    messages = reply.json["messages"]
    assert [m["body"] for m in messages] == ["a", "b"]
    assert all(m["href"].endswith(f"?claim_id={claim_id}") for m in messages)
    # python-zaqarclient takes the claim id from the first href, after the last "=".
    assert messages[0]["href"].split("=")[-1] == claim_id


@pytest_twisted.ensureDeferred
async def test_claim_answers_204_when_nothing_is_available(api: Api) -> None:
    assert (await api.post("/v2/queues/nope/claims", {"ttl": 60, "grace": 60})).status == 204
    await api.post_messages("jobs", "a")
    await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})
    again = await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})
    assert again.status == 204
    assert again.body == b""


@pytest_twisted.ensureDeferred
async def test_a_claim_without_a_body_takes_zaqars_defaults(api: Api) -> None:
    await api.post_messages("jobs", "a")
    reply = await api.post("/v2/queues/jobs/claims")
    assert reply.status == 201
    claim = await api.get(reply.header("Location") or "")
    assert (claim.json["ttl"], claim.json["grace"]) == (300, 60)


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", {"ttl": 59, "grace": 60}),
        ("", {"ttl": 43201, "grace": 60}),
        ("", {"ttl": 60, "grace": 59}),
        ("", {"ttl": None, "grace": 60}),
        ("", {"ttl": "60", "grace": 60}),
        ("", [60]),
        ("?limit=0", {"ttl": 60, "grace": 60}),
        ("?limit=21", {"ttl": 60, "grace": 60}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_claims_are_a_400_and_claim_nothing(api: Api, query: str, body: object) -> None:
    await api.post_messages("jobs", "a")
    reply = await api.post(f"/v2/queues/jobs/claims{query}", body)
    assert reply.status == 400
    assert (await api.get("/v2/queues/jobs/stats")).json["messages"]["claimed"] == 0


@pytest_twisted.ensureDeferred
async def test_get_claim_shows_its_state_and_messages(api: Api, clock: Clock) -> None:
    await api.post_messages("jobs", "a")
    created = await api.post("/v2/queues/jobs/claims", {"ttl": 100, "grace": 60})
    claim_id = claim_id_of(created)
    clock.advance(5)
    reply = await api.get(f"/v2/queues/jobs/claims/{claim_id}")
    assert reply.status == 200
    assert reply.json["age"] == 5
    assert reply.json["ttl"] == 100
    assert reply.json["grace"] == 60
    assert reply.json["href"] == f"/v2/queues/jobs/claims/{claim_id}"
    [message] = reply.json["messages"]
    assert message["href"] == f"/v2/queues/jobs/messages/1?claim_id={claim_id}"


@pytest_twisted.ensureDeferred
async def test_unknown_claims_are_404(api: Api) -> None:
    await api.put("/v2/queues/jobs")
    assert (await api.get("/v2/queues/jobs/claims/feedface")).status == 404
    renew = await api.request("PATCH", "/v2/queues/jobs/claims/feedface", {"ttl": 60})
    assert renew.status == 404
    assert (await api.get("/v2/queues/nope/claims/feedface")).status == 404


@pytest_twisted.ensureDeferred
async def test_a_claim_expires_on_the_clock_and_renewal_extends_it(api: Api, clock: Clock) -> None:
    await api.post_messages("jobs", "a")
    claim_id = claim_id_of(await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60}))
    clock.advance(50)
    renew = await api.request(
        "PATCH", f"/v2/queues/jobs/claims/{claim_id}", {"ttl": 120, "grace": 60}
    )
    assert renew.status == 204
    clock.advance(60)
    assert (await api.get(f"/v2/queues/jobs/claims/{claim_id}")).json["ttl"] == 120
    assert (await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})).status == 204
    clock.advance(61)
    assert (await api.get(f"/v2/queues/jobs/claims/{claim_id}")).status == 404
    again = await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})
    assert again.status == 201
    assert again.json["messages"][0]["claim_count"] == 2


@pytest_twisted.ensureDeferred
async def test_renewal_needs_a_body_and_a_valid_ttl(api: Api) -> None:
    await api.post_messages("jobs", "a")
    claim_id = claim_id_of(await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60}))
    path = f"/v2/queues/jobs/claims/{claim_id}"
    assert (await api.request("PATCH", path)).status == 400
    assert (await api.request("PATCH", path, {"ttl": 10})).status == 400


@pytest_twisted.ensureDeferred
async def test_deleting_a_claim_releases_its_messages(api: Api) -> None:
    await api.post_messages("jobs", "a")
    claim_id = claim_id_of(await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60}))
    assert (await api.delete(f"/v2/queues/jobs/claims/{claim_id}")).status == 204
    again = await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})
    assert again.bodies == ["a"]
    assert (await api.delete("/v2/queues/jobs/claims/feedface")).status == 204
    assert (await api.delete("/v2/queues/nope/claims/feedface")).status == 204


@pytest_twisted.ensureDeferred
async def test_messages_claimed_too_often_move_to_the_dead_letter_queue(
    api: Api, service: QueueService, clock: Clock
) -> None:
    await api.put(
        "/v2/queues/jobs",
        {
            "_max_claim_count": 1,
            "_dead_letter_queue": "dead",
            "_dead_letter_queue_messages_ttl": 600,
        },
    )
    await api.post_messages("jobs", "poison")
    await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})
    clock.advance(61)
    assert (await api.post("/v2/queues/jobs/claims", {"ttl": 60, "grace": 60})).status == 204
    dead = await api.get("/v2/queues/dead/messages?echo=true")
    [message] = dead.json["messages"]
    assert message["body"] == "poison"
    assert message["ttl"] >= 600
