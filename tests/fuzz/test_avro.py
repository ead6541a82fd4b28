"""Fuzzing Avro: RPC framing round-trips and refuses what is not framed, the responder
answers any request with a call response or an ``InvalidArgument`` (never a traceback,
never an "internal server error"), and container files (HTTP ``avro/binary`` bodies) are
read or refused with an ``InvalidArgument``."""

from __future__ import annotations

import io
from collections.abc import Coroutine
from typing import Any

import fastavro
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from qgate.core.auth import TrustedTenant
from qgate.core.errors import InvalidArgument
from qgate.core.schemas import TypeScope
from qgate.protocols.avro import qgate_protocol
from qgate.protocols.avro.ipc import (
    HandshakeRequest,
    Responder,
    frame,
    read_handshake_response,
    unframe,
    write_handshake_request,
)
from qgate.protocols.avro.rpc import QGateCalls
from qgate.protocols.http.container import read_container, write_container
from tests.support.core import make_clock, memory_service
from tests.support.fuzzing import FUZZ_TIMEOUT, RECORD, damaged_files, fuzz, records
from tests.support.strategies import json_values

pytestmark = FUZZ_TIMEOUT

PROTOCOL = qgate_protocol()
_METADATA = TypeScope().define({"type": "map", "values": "bytes"})
_STRING = TypeScope().define("string")
_BOOLEAN = TypeScope().define("boolean")


def run(coro: Coroutine[Any, Any, bytes]) -> bytes:
    """The result of a coroutine that waits on nothing (the memory service answers at once)."""
    results: list[Any] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    (result,) = results
    if not isinstance(result, bytes):
        result.raiseException()
    return result


# -- framing ---------------------------------------------------------------------------------


@fuzz(300)
@given(message=st.binary(max_size=300), buffer_size=st.integers(1, 64))
def test_framing_round_trips(message: bytes, buffer_size: int) -> None:
    assert unframe(frame(message, buffer_size)) == message


@fuzz(300)
@given(data=st.binary(max_size=40) | st.binary(max_size=30).map(frame).map(lambda f: f[:-1]))
@example(data=b"\xff\xff\xff\xff")
@example(data=b"\x00\x00\x00\x01x\x00\x00\x00\x00\x00")
def test_unframe_returns_a_message_or_refuses_with_invalid_argument(data: bytes) -> None:
    try:
        message = unframe(data, max_size=64)
    except InvalidArgument:
        return
    assert frame(message) == data or len(message) <= len(data)


# -- the responder ---------------------------------------------------------------------------


def responder() -> tuple[Responder, QGateCalls, list[BaseException]]:
    reported: list[BaseException] = []
    service = memory_service(make_clock())
    calls = QGateCalls(service, TrustedTenant(), "p1", None)
    return Responder(PROTOCOL, calls, on_error=reported.append), calls, reported


def handshake(send_protocol: bool = False, server_hash: bytes | None = None) -> bytes:
    return write_handshake_request(
        HandshakeRequest(
            PROTOCOL.md5,
            PROTOCOL.text if send_protocol else None,
            PROTOCOL.md5 if server_hash is None else server_hash,
        )
    )


def check_response(data: bytes) -> tuple[str, bool | None]:
    """A call response reads as a handshake response, then (after a match) metadata and the
    error flag; the match and the flag."""
    fo = io.BytesIO(data)
    match = read_handshake_response(fo).match
    if fo.tell() == len(data):
        return match, None
    _METADATA.read_from(fo)
    return match, bool(_BOOLEAN.read_from(fo))


_names = st.sampled_from(sorted(PROTOCOL.messages)) | st.sampled_from(["", "nope"])


@fuzz(300)
@given(
    name=_names,
    params=st.binary(max_size=40),
    prefix=st.sampled_from([b"", b"\x02", b"\x00\x02", b"\xff"]),
    whole=st.booleans(),
)
@example(name="publish", params=b"\x02q\x02\x00", prefix=b"", whole=True)
def test_any_call_bytes_get_a_call_response_never_an_internal_error(
    name: str, params: bytes, prefix: bytes, whole: bool
) -> None:
    rpc, _, reported = responder()
    body = handshake() + prefix + _METADATA.write({}) + _STRING.write(name) + params
    if not whole:
        body = body[: len(body) // 2]
    try:
        data = run(rpc.respond(body))
    except InvalidArgument:
        return
    check_response(data)
    assert reported == []


@fuzz(200)
@given(data=st.binary(max_size=80), send=st.booleans())
@example(data=b"\x00", send=True)
def test_any_handshake_bytes_are_a_handshake_or_a_handshake_error(data: bytes, send: bool) -> None:
    rpc, _, reported = responder()
    body = (handshake(send_protocol=True)[:-1] + data) if send else data
    try:
        check_response(run(rpc.respond(body)))
    except InvalidArgument:
        pass
    assert reported == []


@st.composite
def valid_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    """A well-formed call to a message of qgate.avpr, its parameters of any value."""
    name = draw(st.sampled_from(sorted(PROTOCOL.messages)))
    message = PROTOCOL.messages[name]
    params = draw(json_values(message.request))
    return name, message.request.encode_json(params)


@fuzz(100)
@given(calls=st.lists(valid_calls(), min_size=1, max_size=4))
@example(calls=[("ack", b"\x020\x00\x02\x04\xc2\xb2\x00")])  # ids=["²"]: int() refused it
def test_well_formed_calls_with_any_parameters_are_answered_without_an_internal_error(
    calls: list[tuple[str, bytes]],
) -> None:
    """Every call of the protocol, with parameters of any value the schema allows, reaches
    the core and comes back as a response or a declared error, never a server fault."""
    rpc, _, reported = responder()
    for name, params in calls:
        body = handshake() + _METADATA.write({}) + _STRING.write(name) + params
        assert check_response(run(rpc.respond(body)))[0] == "BOTH"
    assert reported == []


# -- container files -------------------------------------------------------------------------


@fuzz(150)
@given(data=damaged_files() | st.binary(max_size=60).map(lambda b: b"Obj\x01" + b))
@example(data=b"Obj\x01\x02\x16avro.schema\x08null\x00" + b"S" * 16 + b"\x02\x00" + b"S" * 16)
def test_any_container_file_is_read_or_refused_with_invalid_argument(data: bytes) -> None:
    try:
        found = read_container(data, max_records=100, max_inflated=64 * 1024)
    except InvalidArgument:
        return
    assert len(found.records) == len(found.datums)
    for datum in found.datums:
        fastavro.schemaless_reader(io.BytesIO(datum), found.schema.definition, None)


@fuzz(200)
@given(values=records, codec=st.sampled_from(["null", "deflate"]))
def test_container_files_round_trip(values: list[dict[str, Any]], codec: str) -> None:
    found = read_container(write_container(RECORD, values, codec=codec), reader=RECORD)
    assert found.records == values
