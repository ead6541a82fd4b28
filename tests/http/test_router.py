"""The path router: a path finds its route and parameters; templates of the same length
are told apart by their literal segments, the first added winning."""

import pytest

from qgate.protocols.http.errors import HTTPError
from qgate.protocols.http.router import Router


async def handler(call: object) -> object:
    return call


def router() -> Router[object]:
    r: Router[object] = Router()
    r.add("/v2", GET=handler)
    r.add("/v2/queues/{queue}", GET=handler)
    r.add("/v2/queues/{queue}/stats", GET=handler)
    r.add("/v2/queues/{queue}/messages", POST=handler)
    r.add("/v2/queues/{queue}/{anything}", PUT=handler)
    r.add("/v2/queues/{queue}/messages/{message_id}", GET=handler)
    return r


def test_a_path_finds_its_route_and_parameters():
    route, params = router().find(["v2", "queues", "q1", "messages", "42"])
    assert route.template == ("v2", "queues", "{queue}", "messages", "{message_id}")
    assert params == {"queue": "q1", "message_id": "42"}


def test_siblings_are_told_apart_by_their_last_literal():
    r = router()
    assert r.find(["v2", "queues", "q", "stats"])[0].template[-1] == "stats"
    assert r.find(["v2", "queues", "q", "messages"])[0].template[-1] == "messages"


def test_the_first_route_added_wins_over_a_later_parameter():
    r = router()
    route, params = r.find(["v2", "queues", "q", "messages"])
    assert "POST" in route.handlers
    route, params = r.find(["v2", "queues", "q", "other"])
    assert params == {"queue": "q", "anything": "other"}


@pytest.mark.parametrize("path", [[], ["v3"], ["v2", "queues"], ["v2", "x", "q", "stats"]])
def test_a_path_without_a_route_is_404(path):
    with pytest.raises(HTTPError) as caught:
        router().find(path)
    assert caught.value.status == 404
