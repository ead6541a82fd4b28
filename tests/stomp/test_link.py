"""The link alone: a ``StompLink`` over StringTransport and a Clock around a recording fake
session (built by the link's session factory; no StompSession, no core calls)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from qgate.protocols.stomp.codec import V12, Frame, FrameError, encode
from qgate.protocols.stomp.link import Link
from qgate.protocols.stomp.protocol import HEARTBEAT_GRACE, StompLink
from tests.support.stomp import make_ctx


class RecordingSession:
    """A ``link.Session`` that records what the link tells it. ``frame_received`` returns
    ``hold`` (None: go on reading)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.events: list[tuple[Any, ...]] = []
        self.hold: Deferred[None] | None = None

    def input_started(self) -> None:
        self.events.append(("started",))

    def frame_received(self, frame: Frame) -> Deferred[Any] | None:
        self.events.append(("frame", frame.command, frame.headers, frame.body))
        return self.hold

    def input_done(self) -> None:
        self.events.append(("done",))

    def protocol_error(self, error: FrameError) -> None:
        self.events.append(("protocol_error", type(error).__name__))

    def heartbeat_timeout(self) -> None:
        self.events.append(("heartbeat_timeout",))

    def timed_out(self, why: str) -> None:
        self.events.append(("timed_out", why))

    def output_overflow(self) -> None:
        self.events.append(("output_overflow",))

    def output_resumed(self) -> None:
        self.events.append(("output_resumed",))

    def connection_lost(self) -> None:
        self.events.append(("connection_lost",))

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events


def _link(mem_service: Any, **stomp: Any) -> tuple[StompLink, RecordingSession, StringTransport]:
    wire = StringTransport()
    link = StompLink(make_ctx(mem_service, **stomp), wire, RecordingSession)
    session = link.session
    assert isinstance(session, RecordingSession) and session.link is link
    return link, session, wire


def _send(destination: str, body: bytes) -> bytes:
    return encode("SEND", {"destination": destination}, body, V12)


def _chunk_of(*sends: tuple[str, bytes]) -> list[tuple[Any, ...]]:
    """What the session hears of one chunk of input holding these SENDs."""
    frames = [("frame", "SEND", {"destination": d}, body) for d, body in sends]
    return [("started",), *frames, ("done",)]


def test_the_frames_of_a_chunk_reach_the_session_in_order_between_started_and_done(
    mem_service,
):
    link, session, _ = _link(mem_service)
    third = _send("/queue/c", b"3")
    link.data_received(_send("/queue/a", b"1") + _send("/queue/b", b"2") + third[:7])
    assert session.take() == _chunk_of(("/queue/a", b"1"), ("/queue/b", b"2"))
    link.data_received(third[7:])
    assert session.take() == _chunk_of(("/queue/c", b"3"))


def test_a_frame_the_session_holds_stops_reading_until_it_fires(mem_service):
    link, session, wire = _link(mem_service)
    session.hold = Deferred()
    link.data_received(_send("/queue/a", b"1") + _send("/queue/b", b"2"))
    assert session.take() == _chunk_of(("/queue/a", b"1"))
    assert wire.producerState == "paused"
    held, session.hold = session.hold, None
    held.callback(None)
    assert wire.producerState == "producing"
    assert session.take() == _chunk_of(("/queue/b", b"2"))


def test_bytes_that_break_framing_are_a_protocol_error(mem_service):
    link, session, _ = _link(mem_service)
    link.data_received(b"SEND\nno colon here\n\n\x00")
    assert session.take() == [("started",), ("protocol_error", "BadHeader"), ("done",)]


def test_heart_beats_go_out_when_idle_and_a_silent_peer_times_out(mem_service, clock):
    link, session, wire = _link(mem_service)
    link.start_heartbeat(1.0, 2.0)
    clock.advance(0.5)
    link.send("RECEIPT", [("receipt-id", "r")])
    clock.advance(0.5)  # a frame went out 0.5 s ago: no heart-beat yet
    assert wire.value() == b"RECEIPT\nreceipt-id:r\n\n\x00"
    clock.advance(0.5)
    assert wire.value().endswith(b"\x00\n")  # STOMP 1.2: an EOL is a heart-beat
    link.data_received(b"\n")  # the peer's heart-beat, at 1.5 s
    assert session.take() == [("started",), ("done",)]
    silence = 2.0 * HEARTBEAT_GRACE  # (times in quarters of a second: exact floats)
    clock.advance(silence - 0.25)
    assert session.take() == []
    clock.advance(0.25)
    assert session.take() == [("heartbeat_timeout",)]


def test_output_past_the_buffer_limit_while_the_peer_does_not_read_overflows(mem_service):
    link, session, _ = _link(mem_service, max_output_buffer=100)
    link.send("MESSAGE", [], b"x" * 200)  # the peer reads: no limit
    link.pause_output()
    link.send("MESSAGE", [], b"x" * 45)
    assert session.take() == []
    link.send("MESSAGE", [], b"x" * 45)
    assert session.take() == [("output_overflow",)]
    link.resume_output()
    assert session.take() == [("output_resumed",)]
    link.pause_output()  # the count starts again from 0
    link.send("MESSAGE", [], b"x" * 45)
    assert session.take() == []


def test_the_end_of_the_connection_reaches_the_session_once_and_stops_the_timers(
    mem_service, clock
):
    link, session, _ = _link(mem_service)
    link.start_heartbeat(1.0, 1.0)
    link.connection_lost()
    link.connection_lost()
    assert session.take() == [("connection_lost",)]
    assert clock.getDelayedCalls() == []
    link.data_received(_send("/queue/a", b"late"))
    assert session.take() == []
