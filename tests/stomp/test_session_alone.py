"""The session alone: a ``StompSession`` talking to a recording fake link (no parser, no
transport, no timers of the link), on a memory-only queue service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qgate.core.model import NewMessage
from qgate.protocols.stomp.codec import Frame
from qgate.protocols.stomp.session import StompSession
from tests.support.deferreds import fired
from tests.support.stomp import make_ctx


class RecordingLink:
    """A ``link.Link`` that records every call; ``output_paused`` is set by the test."""

    def __init__(self) -> None:
        self.output_paused = False
        self.calls: list[tuple[Any, ...]] = []

    def send(self, command: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> None:
        self.calls.append(("send", command, dict(reversed(list(headers))), body))

    def set_version(self, version: str) -> None:
        self.calls.append(("set_version", version))

    def start_heartbeat(self, send_every: float, expect_every: float) -> None:
        self.calls.append(("start_heartbeat", send_every, expect_every))

    def close(self) -> None:
        self.calls.append(("close",))

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls

    def sent(self) -> list[tuple[str, dict[str, str], bytes]]:
        """The frames sent since the last look (other calls dropped)."""
        return [(c[1], c[2], c[3]) for c in self.take() if c[0] == "send"]


def _session(mem_service: Any, **stomp: Any) -> tuple[StompSession, RecordingLink]:
    link = RecordingLink()
    return StompSession(make_ctx(mem_service, **stomp), link), link


def _connect(session: StompSession, link: RecordingLink) -> None:
    session.frame_received(Frame("CONNECT", {"accept-version": "1.2", "host": "/"}))
    link.take()


def test_connect_answers_then_switches_version_then_starts_heart_beats(mem_service):
    session, link = _session(mem_service, heartbeat_ms=10_000)
    frame = Frame("CONNECT", {"accept-version": "1.1,1.2", "heart-beat": "5000,20000"})
    assert session.frame_received(frame) is not None  # authenticating: input held
    [connected, *rest] = link.take()
    assert connected[:2] == ("send", "CONNECTED")
    assert connected[2]["version"] == "1.2" and connected[2]["heart-beat"] == "10000,10000"
    # STOMP 1.2: each side beats at the slower of what one offers and the other wants.
    assert rest == [("set_version", "1.2"), ("start_heartbeat", 20.0, 10.0)]


def test_sends_of_a_chunk_are_stored_and_receipted_when_the_chunk_is_done(mem_service):
    session, link = _session(mem_service, heartbeat_ms=0)
    _connect(session, link)
    session.input_started()
    for i in range(2):
        headers = {"destination": "/queue/q", "receipt": f"r{i}"}
        assert session.frame_received(Frame("SEND", headers, b"%d" % i)) is None
    assert link.take() == []
    assert fired(mem_service.list_queues("default")) == []
    session.input_done()
    assert link.sent() == [
        ("RECEIPT", {"receipt-id": "r0"}, b""),
        ("RECEIPT", {"receipt-id": "r1"}, b""),
    ]
    assert [m.body for m in fired(mem_service.observe("default", "q"))] == [b"0", b"1"]


def test_nothing_is_delivered_while_the_link_says_the_peer_does_not_read(mem_service):
    session, link = _session(mem_service, heartbeat_ms=0)
    _connect(session, link)
    link.output_paused = True
    session.frame_received(Frame("SUBSCRIBE", {"destination": "/queue/q", "id": "s"}))
    fired(mem_service.publish("default", "q", [NewMessage(b"m")]))
    assert link.sent() == []
    link.output_paused = False
    session.output_resumed()
    [(command, headers, body)] = link.sent()
    assert (command, headers["subscription"], body) == ("MESSAGE", "s", b"m")


def test_what_the_link_reports_ends_the_session_with_an_error_then_close(mem_service):
    for report, message in (
        (StompSession.output_overflow, "slow consumer"),
        (StompSession.heartbeat_timeout, "heart-beat timeout"),
    ):
        session, link = _session(mem_service, heartbeat_ms=0)
        _connect(session, link)
        report(session)
        [error, close] = link.take()
        assert error[:2] == ("send", "ERROR") and error[2]["message"].startswith(message)
        assert close == ("close",)
        session.frame_received(Frame("SEND", {"destination": "/queue/q", "receipt": "r"}))
        assert link.take() == []
