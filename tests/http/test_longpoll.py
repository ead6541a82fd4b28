"""Long polling (``wait=``): answers on publish, times out on the clock, and gives up its
wait at once when the client hangs up."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.web.client import ResponseNeverReceived

from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from tests.support.deferreds import fired, has_result
from tests.support.http import OTHER_CLIENT, Api


@pytest.fixture(autouse=True)
def jobs(service: QueueService) -> None:
    """The queue ``jobs`` the waits here are on exists (``fresh`` does not)."""
    fired(service.create_queue("p1", "jobs"))


@pytest_twisted.ensureDeferred
async def test_a_waiting_listing_answers_as_soon_as_a_message_arrives(
    api: Api, service: QueueService, clock: Clock
) -> None:
    poll = api.start("GET", "/v2/queues/jobs/messages?wait=20")
    assert not has_result(poll)
    assert service.waiting("p1", "jobs") == 1
    clock.advance(5)
    await api.post_messages("jobs", "hello", client=OTHER_CLIENT)
    api.flush()
    assert has_result(poll)
    reply = await poll
    assert reply.status == 200
    assert reply.bodies == ["hello"]
    assert service.waiting("p1", "jobs") == 0


@pytest_twisted.ensureDeferred
async def test_a_waiting_listing_ignores_its_own_messages_without_echo(
    api: Api, clock: Clock
) -> None:
    poll = api.start("GET", "/v2/queues/jobs/messages?wait=20")
    await api.post_messages("jobs", "mine")
    api.flush()
    assert not has_result(poll)
    clock.advance(20)
    api.flush()
    reply = await poll
    assert reply.json == {"messages": [], "links": []}


@pytest_twisted.ensureDeferred
async def test_a_waiting_listing_times_out_with_the_empty_answer(api: Api, clock: Clock) -> None:
    poll = api.start("GET", "/v2/queues/jobs/messages?wait=10")
    clock.advance(9.9)
    api.flush()
    assert not has_result(poll)
    clock.advance(0.1)
    api.flush()
    reply = await poll
    assert reply.status == 200
    assert reply.json == {"messages": [], "links": []}
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_waiting_listing_of_a_missing_queue_answers_on_its_first_message(
    api: Api, clock: Clock
) -> None:
    poll = api.start("GET", "/v2/queues/fresh/messages?wait=10")
    clock.advance(3)
    api.flush()
    assert not has_result(poll)
    await api.post_messages("fresh", "first", client=OTHER_CLIENT)
    api.flush()
    reply = await poll
    assert reply.bodies == ["first"]


@pytest_twisted.ensureDeferred
async def test_a_waiting_claim_answers_on_publish_and_times_out_with_204(
    api: Api, service: QueueService, clock: Clock
) -> None:
    claim = api.start("POST", "/v2/queues/jobs/claims?wait=15", {"ttl": 60, "grace": 60})
    assert not has_result(claim)
    await service.publish("p1", "jobs", [NewMessage(b'"job"', "application/json")])
    api.flush()
    reply = await claim
    assert reply.status == 201
    assert reply.bodies == ["job"]

    empty = api.start("POST", "/v2/queues/jobs/claims?wait=15", {"ttl": 60, "grace": 60})
    clock.advance(15)
    api.flush()
    assert (await empty).status == 204


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_gives_up_its_wait(
    api: Api, service: QueueService, clock: Clock
) -> None:
    poll = api.start("GET", "/v2/queues/jobs/messages?wait=30")
    claim = api.start("POST", "/v2/queues/jobs/claims?wait=30", {"ttl": 60, "grace": 60})
    assert service.waiting("p1", "jobs") == 2
    assert clock.getDelayedCalls() != []
    for request in (poll, claim):
        request.cancel()
        api.flush()
        with pytest.raises(ResponseNeverReceived) as hung_up:
            await request
        assert hung_up.value.reasons[0].check(CancelledError)
    assert service.waiting("p1", "jobs") == 0
    assert clock.getDelayedCalls() == []
    # The abandoned claim takes nothing: a later message stays free for others.
    await api.post_messages("jobs", "after")
    stats = (await api.get("/v2/queues/jobs/stats")).json["messages"]
    assert (stats["free"], stats["claimed"]) == (1, 0)


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan"])
@pytest_twisted.ensureDeferred
async def test_a_wait_out_of_range_is_a_400(api: Api, wait: str) -> None:
    for method, path in [("GET", "messages"), ("POST", "claims")]:
        reply = await api.request(method, f"/v2/queues/jobs/{path}?wait={wait}")
        assert reply.status == 400
        assert reply.json["title"] == "Invalid parameter"
