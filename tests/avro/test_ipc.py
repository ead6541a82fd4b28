"""protocols.avro.ipc: Avro RPC per the spec, driven by raw bytes and by apache avro's
requestor (avro.ipc, shipped in the avro 1.12 wheel) through an in-memory transceiver."""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
from collections.abc import Coroutine
from importlib.resources import files
from typing import Any

import avro.errors
import avro.ipc
import avro.protocol
import fastavro
import pytest
from twisted.internet.defer import CancelledError, Deferred

from qgate.core.errors import InvalidArgument, QueueNotFound, TooLarge
from qgate.core.schemas import InvalidSchema
from qgate.protocols.avro import qgate_protocol
from qgate.protocols.avro.ipc import (
    AvroError,
    FramingError,
    HandshakeError,
    HandshakeRequest,
    Message,
    Protocol,
    Responder,
    frame,
    read_handshake_response,
    unframe,
    write_handshake_request,
)

QGATE_TEXT = files("qgate.protocols.avro").joinpath("qgate.avpr").read_text(encoding="utf-8")


def run(coro: Coroutine[Any, Any, bytes]) -> bytes:
    """The result of a coroutine that does not wait on anything."""
    results: list[Any] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    (result,) = results
    if not isinstance(result, bytes):
        result.raiseException()
    return result


class Service:
    """A dispatch function with canned answers, recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, name: str, params: dict[str, Any]) -> Any:
        self.calls.append((name, params))
        if name == "ping":
            return True
        if name == "publish":
            return [str(i) for i in range(1, len(params["messages"]) + 1)]
        if name == "observe":
            return [MESSAGE]
        if name == "stats":
            raise AvroError(
                "QGateError",
                {"title": "Not found", "description": "Queue 'q' does not exist", "field": "queue"},
            )
        if name == "getQueue":
            raise QueueNotFound(params["queue"])
        if name == "deleteQueue":
            return "not a boolean"
        if name == "release":
            raise AvroError("NoSuchError", {"x": 1})
        raise RuntimeError("boom")


MESSAGE = {
    "id": "7",
    "age": 1.5,
    "ttl": 60.0,
    "claimId": None,
    "claimCount": 0,
    "priority": 4,
    "body": b"\x00hi",
    "contentType": "text/plain",
    "headers": {"k": "v"},
}

#: observe's parameters for the first message of queue "q", every field given.
OBSERVE_FIRST = {
    "queue": "q",
    "after": None,
    "limit": 1,
    "includeClaimed": False,
    "includeDelayed": False,
    "wait": 0.0,
}


def call(
    protocol: Protocol,
    message: str,
    params: dict[str, Any],
    *,
    client: Protocol | None = None,
    server_hash: bytes | None = None,
    send_protocol: bool = False,
) -> bytes:
    """A call request as a client with protocol ``client`` writes it."""
    client = client or protocol
    out = io.BytesIO()
    out.write(
        write_handshake_request(
            HandshakeRequest(
                client.md5,
                client.text if send_protocol else None,
                server_hash or protocol.md5,
            )
        )
    )
    fastavro.schemaless_writer(out, {"type": "map", "values": "bytes"}, {"trace": b"1"})
    fastavro.schemaless_writer(out, "string", message)
    if message:
        client.messages[message].request.write_to(out, params)
    return out.getvalue()


def read_call(data: bytes, message: Message | None) -> tuple[str, Any]:
    """(handshake match, then "ok"/"error" and the value, or "none") of a call response."""
    fo = io.BytesIO(data)
    handshake = read_handshake_response(fo)
    if fo.tell() == len(data):
        return handshake.match, None
    assert fastavro.schemaless_reader(fo, {"type": "map", "values": "bytes"}) == {}
    is_error = fastavro.schemaless_reader(fo, "boolean")
    if message is None:
        value = fastavro.schemaless_reader(fo, ["string"])
    elif is_error:
        value = message.errors.read_from(fo)
    else:
        value = message.response.read_from(fo)
    assert fo.tell() == len(data)
    return handshake.match, ("error" if is_error else "ok", value)


@pytest.fixture
def protocol() -> Protocol:
    return qgate_protocol()


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def responder(protocol: Protocol, service: Service) -> Responder:
    return Responder(protocol, service)


def other(protocol: Protocol, change: Any = None) -> Protocol:
    """A client protocol that differs from the server's (in text at least)."""
    definition: dict[str, Any] = copy.deepcopy(dict(protocol.definition))
    definition["doc"] = "a client's copy"
    if change:
        change(definition)
    return Protocol.parse(json.dumps(definition, indent=1))


# -- framing -----------------------------------------------------------------------------------


def test_frames_are_buffers_with_big_endian_lengths_and_a_zero_terminator() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc\x00\x00\x00\x00"
    assert frame(b"") == b"\x00\x00\x00\x00"
    message = bytes(range(256)) * 100
    framed = frame(message)
    written = io.BytesIO()
    avro.ipc.FramedWriter(written).write_framed_message(message)
    assert framed == written.getvalue()  # the same buffers apache avro writes
    assert unframe(framed) == message
    assert unframe(frame(message, buffer_size=7)) == message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x00\x00\x03abc", "terminator"),
        (b"\x00\x00\x00\x09abc\x00\x00\x00\x00", "longer than"),
        (b"\x00\x00\x00\x00extra", "follow"),
        (b"\x00\x00", "terminator"),
    ],
)
def test_bad_framing_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(FramingError) as info:
        unframe(data)
    assert words in str(info.value)


def test_oversized_messages_are_refused() -> None:
    with pytest.raises(TooLarge):
        unframe(frame(b"x" * 100), max_size=99)


# -- protocols ---------------------------------------------------------------------------------


def test_the_qgate_protocol_parses_here_and_in_apache_avro(protocol: Protocol) -> None:
    assert protocol.fullname == "org.qgate.QGate"
    assert {"createQueue", "publish", "claim", "ack", "release", "observe", "stats"} <= set(
        protocol.messages
    )
    claim = protocol.messages["claim"]
    assert [f["name"] for f in claim.request.node["fields"]] == [
        "queue",
        "limit",
        "ttl",
        "grace",
        "wait",
    ]
    assert claim.declared_errors == ("org.qgate.QGateError",)
    assert claim.errors.node == ["string", "org.qgate.QGateError"]  # "string" prepended
    assert protocol.md5 == hashlib.md5(protocol.text.encode()).digest()
    theirs = avro.protocol.parse(protocol.text)
    assert set(theirs.messages or {}) == set(protocol.messages)
    assert Protocol.parse(QGATE_TEXT).text == QGATE_TEXT  # parsed text is kept exactly


@pytest.mark.parametrize(
    ("definition", "words"),
    [
        ([], "JSON object"),
        ({"protocol": "P", "messages": {"m": {"request": [], "response": "Nope"}}}, "Nope"),
        ({"protocol": "P", "messages": {"a-b": {"request": [], "response": "null"}}}, "a-b"),
        ({"protocol": "P", "messages": {"m": {"request": {}, "response": "null"}}}, "request"),
        (
            {
                "protocol": "P",
                "messages": {"m": {"request": [], "response": "int", "one-way": True}},
            },
            "one-way",
        ),
        (
            {
                "protocol": "P",
                "messages": {"m": {"request": [], "response": "null", "errors": ["E"]}},
            },
            "E",
        ),
        ({"protocol": "P", "types": ["int"]}, "named types"),
        (
            {
                "protocol": "P",
                "types": [
                    {
                        "type": "record",
                        "name": "T",
                        "fields": [{"name": "t", "type": ["null", "T"]}],
                    }
                ],
            },
            "recursive",
        ),
    ],
)
def test_invalid_protocols_are_refused(definition: Any, words: str) -> None:
    with pytest.raises(InvalidSchema) as info:
        Protocol.parse(definition)
    assert info.value.field == "protocol"
    assert words in str(info.value)


# -- handshake and calls, byte by byte (spec "Handshake", "Call Format") -------------------------


def test_a_client_with_the_servers_protocol_matches_both(
    protocol: Protocol, responder: Responder, service: Service
) -> None:
    data = run(responder.respond(call(protocol, "ping", {})))
    assert read_call(data, protocol.messages["ping"]) == ("BOTH", ("ok", True))
    fo = io.BytesIO(data)
    reply = read_handshake_response(fo)
    assert reply.server_protocol is None and reply.server_hash is None
    assert service.calls == [("ping", {})]


def test_an_unknown_client_protocol_matches_none_and_then_both(
    protocol: Protocol, responder: Responder, service: Service
) -> None:
    client = other(protocol)
    first = run(
        responder.respond(call(protocol, "ping", {}, client=client, server_hash=client.md5))
    )
    fo = io.BytesIO(first)
    reply = read_handshake_response(fo)
    assert reply.match == "NONE"
    assert reply.server_protocol == protocol.text and reply.server_hash == protocol.md5
    assert fo.tell() == len(first)  # no call response: the call was not processed
    assert service.calls == []
    # The client resends with its protocol text (and now the right server hash).
    second = run(responder.respond(call(protocol, "ping", {}, client=client, send_protocol=True)))
    assert read_call(second, protocol.messages["ping"]) == ("BOTH", ("ok", True))
    # Cached from now on: the hash alone is enough.
    third = run(responder.respond(call(protocol, "ping", {}, client=client)))
    assert read_call(third, protocol.messages["ping"]) == ("BOTH", ("ok", True))


def test_a_known_client_with_a_wrong_server_hash_matches_client(
    protocol: Protocol, responder: Responder
) -> None:
    client = other(protocol)
    run(responder.respond(call(protocol, "ping", {}, client=client, send_protocol=True)))
    data = run(
        responder.respond(call(protocol, "ping", {}, client=client, server_hash=b"\x01" * 16))
    )
    fo = io.BytesIO(data)
    reply = read_handshake_response(fo)
    assert reply.match == "CLIENT"
    assert reply.server_protocol == protocol.text and reply.server_hash == protocol.md5
    assert read_call(data, protocol.messages["ping"]) == ("CLIENT", ("ok", True))


def test_a_protocol_sent_under_another_hash_is_used_but_not_cached(
    protocol: Protocol, responder: Responder
) -> None:
    client = other(protocol)
    liar = HandshakeRequest(b"\x02" * 16, client.text, protocol.md5)
    body = call(protocol, "ping", {}, client=client, send_protocol=True)
    forged = (
        write_handshake_request(liar)
        + body[
            len(write_handshake_request(HandshakeRequest(client.md5, client.text, protocol.md5))) :
        ]
    )
    assert read_call(run(responder.respond(forged)), protocol.messages["ping"])[0] == "BOTH"
    again = HandshakeRequest(b"\x02" * 16, None, protocol.md5)
    assert read_call(run(responder.respond(write_handshake_request(again))), None) == ("NONE", None)


def test_the_client_protocol_cache_is_bounded(protocol: Protocol, service: Service) -> None:
    responder = Responder(protocol, service, cache_size=2)
    clients = [other(protocol, lambda d, i=i: d.update(doc=f"client {i}")) for i in range(3)]
    for c in clients:
        run(responder.respond(call(protocol, "ping", {}, client=c, send_protocol=True)))
    ping = protocol.messages["ping"]
    matches = [
        read_call(run(responder.respond(call(protocol, "ping", {}, client=c))), ping)[0]
        for c in clients
    ]
    assert matches == ["NONE", "BOTH", "BOTH"]  # the least recently used one went


def test_fresh_protocols_under_random_hashes_leave_nothing_cached(
    protocol: Protocol, service: Service
) -> None:
    responder = Responder(protocol, service, cache_size=4)
    for i in range(50):
        client = other(protocol, lambda d, i=i: d.update(doc=f"attacker {i}"))
        liar = HandshakeRequest(bytes([i]) * 16, client.text, protocol.md5)
        body = call(protocol, "ping", {}, client=client, send_protocol=True)
        honest = write_handshake_request(HandshakeRequest(client.md5, client.text, protocol.md5))
        forged = write_handshake_request(liar) + body[len(honest) :]
        assert read_call(run(responder.respond(forged)), protocol.messages["ping"])[0] == "BOTH"
    assert responder.cached_entries == (0, 0)
    for i in range(50):  # honest ones, each under its own hash: bounded by cache_size
        client = other(protocol, lambda d, i=i: d.update(doc=f"client {i}"))
        run(responder.respond(call(protocol, "ping", {}, client=client, send_protocol=True)))
    remote, compat = responder.cached_entries
    assert remote == 4 and compat <= 4 * len(protocol.messages)


def test_an_empty_message_name_only_performs_the_handshake(
    protocol: Protocol, responder: Responder, service: Service
) -> None:
    data = run(responder.respond(call(protocol, "", {})))
    assert read_call(data, None) == ("BOTH", None)
    assert service.calls == []


def test_parameters_reach_dispatch_and_responses_come_back(
    protocol: Protocol, responder: Responder, service: Service
) -> None:
    params = {
        "queue": "q",
        "messages": [
            {
                "body": b"\xff",
                "contentType": "application/json",
                "headers": {},
                "ttl": 30.0,
                "delay": None,
                "priority": 9,
            }
        ],
    }
    data = run(responder.respond(call(protocol, "publish", params)))
    assert read_call(data, protocol.messages["publish"]) == ("BOTH", ("ok", ["1"]))
    assert service.calls == [("publish", params)]
    data = run(responder.respond(call(protocol, "observe", OBSERVE_FIRST)))
    assert read_call(data, protocol.messages["observe"]) == ("BOTH", ("ok", [MESSAGE]))


@pytest.mark.parametrize(
    ("message", "params", "expected"),
    [
        (
            "stats",
            {"queue": "q"},
            {"title": "Not found", "description": "Queue 'q' does not exist", "field": "queue"},
        ),
        ("getQueue", {"queue": "q"}, "Queue 'q' does not exist"),
        ("ack", {"queue": "q", "claimId": "c", "ids": []}, "internal server error"),
        ("deleteQueue", {"queue": "q"}, "internal server error: response does not match"),
        (
            "release",
            {"queue": "q", "claimId": "c", "ids": None, "delay": 0.0},
            "NoSuchError: {'x': 1}",
        ),
    ],
)
def test_errors_are_declared_errors_or_system_errors(
    protocol: Protocol, message: str, params: dict[str, Any], expected: Any
) -> None:
    reported: list[BaseException] = []
    responder = Responder(protocol, Service(), on_error=reported.append)
    data = run(responder.respond(call(protocol, message, params)))
    assert read_call(data, protocol.messages[message]) == ("BOTH", ("error", expected))
    assert bool(reported) is (message in ("ack", "deleteQueue", "release"))


def test_unknown_messages_and_bad_parameters_are_system_errors(
    protocol: Protocol, responder: Responder
) -> None:
    body = call(protocol, "ping", {})
    unknown = body.replace(b"\x08ping", b"\x08pong")
    assert read_call(run(responder.respond(unknown)), None) == (
        "BOTH",
        ("error", "unknown message: pong"),
    )
    extra = run(responder.respond(body + b"\x00"))
    assert "left over" in read_call(extra, protocol.messages["ping"])[1][1]
    short = call(protocol, "stats", {"queue": "queue-name"})[:-3]
    status, (kind, text) = read_call(run(responder.respond(short)), protocol.messages["stats"])
    assert (status, kind) == ("BOTH", "error") and "request.queue" in text


def test_unreadable_handshakes_and_client_protocols_are_refused(
    protocol: Protocol, responder: Responder
) -> None:
    with pytest.raises(HandshakeError):
        run(responder.respond(b"\x01\x02"))
    bogus = HandshakeRequest(b"\x03" * 16, '{"protocol": 5}', protocol.md5)
    with pytest.raises(HandshakeError) as info:
        run(responder.respond(write_handshake_request(bogus)))
    assert isinstance(info.value, InvalidArgument) and "client protocol" in str(info.value)


def test_cancelling_a_waiting_call_cancels_the_response(protocol: Protocol) -> None:
    waiting: Deferred[Any] = Deferred()

    def dispatch(name: str, params: dict[str, Any]) -> Deferred[Any]:
        return waiting

    d = Deferred.fromCoroutine(Responder(protocol, dispatch).respond(call(protocol, "ping", {})))
    failures: list[Any] = []
    d.addErrback(failures.append)
    d.cancel()
    assert failures and failures[0].check(CancelledError)


def test_one_way_messages_answer_null_over_a_stateless_transport() -> None:
    p = Protocol.parse(
        {
            "protocol": "P",
            "messages": {
                "note": {
                    "request": [{"name": "text", "type": "string"}],
                    "response": "null",
                    "one-way": True,
                }
            },
        }
    )
    assert p.messages["note"].one_way
    responder = Responder(p, lambda name, params: None)
    assert read_call(
        run(responder.respond(call(p, "note", {"text": "x"}))), p.messages["note"]
    ) == (
        "BOTH",
        ("ok", None),
    )


# -- interop with apache avro's requestor -----------------------------------------------------

_names = itertools.count()


class InMemoryTransceiver(avro.ipc.HTTPTransceiver):  # type: ignore[misc]
    """apache avro's HTTP transceiver with the HTTP exchange replaced by a direct call of
    the responder on the framed body (what the /avro resource will do)."""

    def __init__(self, responder: Responder) -> None:  # no socket: skip the parent's
        self.responder = responder
        self.req_resource = "/avro"
        # apache avro caches server hashes per remote_name (module-global): one per test.
        self.remote_name = f"in-memory-{next(_names)}"
        self.bodies: list[bytes] = []
        self._response = b""

    def write_framed_message(self, message: bytes) -> None:
        writer = avro.ipc.FramedWriter(io.BytesIO())
        writer.write_framed_message(message)
        body = writer.writer.getvalue()
        self.bodies.append(body)
        self._response = run(self.responder.respond_framed(body))

    def read_framed_message(self) -> bytes:
        result: bytes = avro.ipc.FramedReader(io.BytesIO(self._response)).read_framed_message()
        return result

    def close(self) -> None:
        pass


def requestor(responder: Responder, text: str = QGATE_TEXT) -> tuple[Any, InMemoryTransceiver]:
    transceiver = InMemoryTransceiver(responder)
    return avro.ipc.Requestor(avro.protocol.parse(text), transceiver), transceiver


NEW_MESSAGE = {
    "body": b"hello",
    "contentType": "text/plain",
    "headers": {"h": "1"},
    "ttl": None,
    "delay": 5.0,
    "priority": None,
}


def test_apache_requestor_handshakes_none_then_both(responder: Responder, service: Service) -> None:
    client, transceiver = requestor(responder)
    # apache avro hashes its own rendering of the protocol, which differs from our text:
    # the first request is answered NONE and resent with the protocol, then BOTH.
    assert client.request("publish", {"queue": "q", "messages": [NEW_MESSAGE]}) == ["1"]
    assert len(transceiver.bodies) == 2
    assert client.request("ping", {}) is True
    assert len(transceiver.bodies) == 3  # BOTH on the first try: server hash learnt
    assert service.calls[0] == ("publish", {"queue": "q", "messages": [NEW_MESSAGE]})
    assert client.request("observe", OBSERVE_FIRST) == [MESSAGE]


def test_apache_requestor_gets_match_client_when_its_protocol_is_cached(
    responder: Responder,
) -> None:
    first, _ = requestor(responder)
    assert first.request("ping", {}) is True
    second, transceiver = requestor(responder)  # knows no server hash yet
    assert second.request("ping", {}) is True
    assert len(transceiver.bodies) == 1  # CLIENT: answered without a resend


def test_apache_requestor_receives_declared_and_system_errors(responder: Responder) -> None:
    client, _ = requestor(responder)
    with pytest.raises(avro.errors.AvroRemoteException) as info:
        client.request("stats", {"queue": "q"})
    assert info.value.args[0] == {
        "title": "Not found",
        "description": "Queue 'q' does not exist",
        "field": "queue",
    }
    with pytest.raises(avro.errors.AvroRemoteException) as info:
        client.request("ack", {"queue": "q", "claimId": "c", "ids": ["1"]})
    assert info.value.args[0] == "internal server error"


def test_an_older_client_protocol_is_resolved_against_ours(
    responder: Responder, service: Service
) -> None:
    """Request parameters resolve client -> server (defaults fill what the client lacks);
    responses are written in our protocol and resolved by the client."""
    older = json.loads(QGATE_TEXT)
    for t in older["types"]:
        if t["name"] == "NewMessage":
            t["fields"] = [f for f in t["fields"] if f["name"] not in ("priority", "delay")]
        if t["name"] == "Message":
            t["fields"] = [f for f in t["fields"] if f["name"] not in ("claimCount", "priority")]
    older["messages"]["observe"]["request"] = [
        p for p in older["messages"]["observe"]["request"] if p["name"] != "wait"
    ]
    client, _ = requestor(responder, json.dumps(older))
    sent = {"body": b"x", "contentType": "text/plain", "headers": {}, "ttl": 9.0}
    assert client.request("publish", {"queue": "q", "messages": [sent]}) == ["1"]
    assert service.calls[-1][1]["messages"] == [{**sent, "delay": None, "priority": None}]
    got = client.request(
        "observe",
        {"queue": "q", "after": "3", "limit": 1, "includeClaimed": False, "includeDelayed": False},
    )
    assert got == [{k: v for k, v in MESSAGE.items() if k not in ("claimCount", "priority")}]
    assert service.calls[-1][1]["wait"] == 0.0


def test_a_client_whose_parameters_cannot_be_read_gets_a_system_error(responder: Responder) -> None:
    changed = json.loads(QGATE_TEXT)
    for p in changed["messages"]["claim"]["request"]:
        if p["name"] == "limit":
            p["type"] = "string"
            del p["default"]
    client, _ = requestor(responder, json.dumps(changed))
    with pytest.raises(avro.errors.AvroRemoteException) as info:
        client.request(
            "claim", {"queue": "q", "limit": "ten", "ttl": 1.0, "grace": 0.0, "wait": 0.0}
        )
    assert "request.limit" in info.value.args[0]
    assert "string cannot be read as int" in info.value.args[0]
