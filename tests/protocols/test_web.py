"""The request lifecycle every protocol served over HTTP shares (``protocols.web.serve``),
driven through a real ``Site`` over a ``StringTransport`` (no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, cast

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from qgate.protocols.web import Answer, serve

Answering = Callable[[Request], Coroutine[Any, Any, Answer]]


class Served(Resource):
    """A leaf answering through ``serve`` with the coroutine a test gives it."""

    isLeaf = True

    def __init__(self, answering: Answering) -> None:
        super().__init__()
        self.answering = answering

    def render(self, request: Request) -> object:
        return serve(request, self.answering(request))


class Connection:
    """One HTTP connection to a site serving ``answering``, in memory."""

    def __init__(self, answering: Answering) -> None:
        site = Site(Served(answering), reactor=Clock())
        self.transport = StringTransport()
        self.channel = site.buildProtocol(None)
        assert self.channel is not None
        self.channel.makeConnection(self.transport)

    def get(self) -> None:
        self.channel.dataReceived(b"GET /thing HTTP/1.1\r\nHost: qgate.test\r\n\r\n")

    def hang_up(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))

    @property
    def sent(self) -> bytes:
        return bytes(self.transport.value())

    def answer(self) -> tuple[str, dict[str, str], bytes]:
        head, _, body = self.sent.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        return status, {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
def failures() -> Iterator[list[Failure]]:
    logged: list[Failure] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            logged.append(event["log_failure"])

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    yield logged
    globalLogPublisher.removeObserver(observer)


def test_an_answer_is_written_whole_with_its_length() -> None:
    async def answering(request: Request) -> Answer:
        return Answer(201, b"made", "text/plain", {"Location": "/thing/1"})

    connection = Connection(answering)
    connection.get()
    status, headers, body = connection.answer()
    assert status.startswith("HTTP/1.1 201")
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == "4"
    assert headers["location"] == "/thing/1"
    assert body == b"made"


def test_an_answer_without_a_body_has_no_content_type() -> None:
    async def answering(request: Request) -> Answer:
        return Answer(204)

    connection = Connection(answering)
    connection.get()
    status, headers, body = connection.answer()
    assert status.startswith("HTTP/1.1 204")
    assert "content-type" not in headers
    assert "content-length" not in headers
    assert body == b""


def test_a_client_that_hangs_up_cancels_what_the_answer_waits_on(
    failures: list[Failure],
) -> None:
    cancelled: list[Deferred[None]] = []
    waiting: Deferred[None] = Deferred(cancelled.append)
    outcome: list[BaseException] = []

    async def answering(request: Request) -> Answer:
        try:
            await waiting
        except CancelledError as e:
            outcome.append(e)
            raise
        return Answer(200, b"late", "text/plain")

    connection = Connection(answering)
    connection.get()
    assert connection.sent == b""  # parked
    connection.hang_up()
    assert cancelled == [waiting]
    assert len(outcome) == 1
    assert failures == []  # a cancellation is not an error
    assert connection.sent == b""


def test_nothing_is_written_once_the_client_has_left(failures: list[Failure]) -> None:
    """Even an answer that ignores the cancellation and returns is not written (writing
    to a request whose connection is gone would fail)."""

    async def answering(request: Request) -> Answer:
        try:
            await Deferred()
        except CancelledError:
            pass
        return Answer(200, b"anyway", "text/plain")

    connection = Connection(answering)
    connection.get()
    connection.hang_up()
    assert connection.sent == b""
    assert failures == []


def test_an_unexpected_failure_is_a_logged_json_500_that_shows_nothing_of_it(
    failures: list[Failure],
) -> None:
    async def answering(request: Request) -> Answer:
        raise RuntimeError("secret internals")

    connection = Connection(answering)
    connection.get()
    status, headers, body = connection.answer()
    assert status.startswith("HTTP/1.1 500")
    assert headers["content-type"] == "application/json; charset=UTF-8"
    assert headers["content-length"] == str(len(body))
    assert json.loads(body) == {
        "title": "Internal server error",
        "description": "The server could not complete the request.",
    }
    assert b"secret" not in connection.sent
    assert [f.type for f in failures] == [RuntimeError]
    assert not connection.transport.disconnecting


def test_a_failure_after_half_an_answer_closes_the_connection(failures: list[Failure]) -> None:
    async def answering(request: Request) -> Answer:
        request.setResponseCode(200)
        request.write(b"half")
        raise RuntimeError("broke mid-answer")

    connection = Connection(answering)
    connection.get()
    assert connection.transport.disconnecting
    assert b"500" not in connection.sent
    assert [f.type for f in failures] == [RuntimeError]


def test_a_failure_after_the_client_left_is_logged_and_not_answered(
    failures: list[Failure],
) -> None:
    requests: list[Request] = []

    async def answering(request: Request) -> Answer:
        requests.append(request)
        try:
            await Deferred()
        except CancelledError:
            raise ValueError("cleaning up failed") from None
        raise AssertionError("not reached")

    connection = Connection(answering)
    connection.get()
    connection.hang_up()
    assert [f.type for f in failures] == [ValueError]
    assert requests[0].code == 200  # no 500 was begun
    assert connection.sent == b""
