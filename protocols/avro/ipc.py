"""Avro RPC as the Avro specification defines it: pure, no I/O.

Implements the spec's "Protocol Declaration" (protocols, messages, the effective error
union) and "Protocol Wire Format" ("Message Framing", "Handshake", "Call Format") for a
*stateless* transport: every request and every response starts with a handshake ("HTTP as
Transport": POST, ``avro/binary``, one call per HTTP exchange). All Avro data is read and
written by fastavro through ``core.schemas``.

The transport hands ``Responder.respond_framed`` the HTTP body and sends back what it
returns, always with status 200 (errors are Avro error responses); only a request that is
not Avro at all (bad framing, unreadable handshake, unusable client protocol) raises
``InvalidArgument`` for the transport to answer with 400.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError

from qgate.core import jsonsafe
from qgate.core.errors import InvalidArgument, QGateError, TooLarge
from qgate.core.schemas import (
    MAX_SCHEMA_SIZE,
    AvroType,
    Compatibility,
    InvalidAvroData,
    InvalidSchema,
    TypeScope,
)

__all__ = [
    "BUFFER_SIZE",
    "CONTENT_TYPE",
    "HANDSHAKE_REQUEST_SCHEMA",
    "HANDSHAKE_RESPONSE_SCHEMA",
    "AvroError",
    "FramingError",
    "HandshakeError",
    "HandshakeRequest",
    "HandshakeResponse",
    "Message",
    "Protocol",
    "Responder",
    "frame",
    "read_handshake_response",
    "unframe",
    "write_handshake_request",
]

#: spec "HTTP as Transport": the content type of requests and responses.
CONTENT_TYPE = "avro/binary"
#: Largest buffer ``frame`` writes (what the Java and Python implementations use).
BUFFER_SIZE = 8192
#: Largest framed message ``unframe`` accepts by default.
MAX_MESSAGE_SIZE = 8 * 1024 * 1024

# spec "Handshake": the two records every call on a stateless transport starts with.
HANDSHAKE_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "HandshakeRequest",
    "namespace": "org.apache.avro.ipc",
    "fields": [
        {"name": "clientHash", "type": {"type": "fixed", "name": "MD5", "size": 16}},
        {"name": "clientProtocol", "type": ["null", "string"]},
        {"name": "serverHash", "type": "MD5"},
        {"name": "meta", "type": ["null", {"type": "map", "values": "bytes"}]},
    ],
}
HANDSHAKE_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "HandshakeResponse",
    "namespace": "org.apache.avro.ipc",
    "fields": [
        {
            "name": "match",
            "type": {
                "type": "enum",
                "name": "HandshakeMatch",
                "symbols": ["BOTH", "CLIENT", "NONE"],
            },
        },
        {"name": "serverProtocol", "type": ["null", "string"]},
        {"name": "serverHash", "type": ["null", {"type": "fixed", "name": "MD5", "size": 16}]},
        {"name": "meta", "type": ["null", {"type": "map", "values": "bytes"}]},
    ],
}

_HANDSHAKE_REQUEST = TypeScope().define(HANDSHAKE_REQUEST_SCHEMA)
_HANDSHAKE_RESPONSE = TypeScope().define(HANDSHAKE_RESPONSE_SCHEMA)
# spec "Call Format": metadata is a map of bytes; the message name a string.
_METADATA = TypeScope().define({"type": "map", "values": "bytes"})
_STRING = TypeScope().define("string")
_BOOLEAN = TypeScope().define("boolean")
# The effective error union of a message that is unknown: system errors only.
_SYSTEM_ERRORS = TypeScope().define(["string"])


class FramingError(InvalidArgument):
    title = "Invalid Avro framing"


class HandshakeError(InvalidArgument):
    title = "Invalid Avro handshake"


# -- framing (spec "Message Framing") ----------------------------------------------------------


def frame(message: bytes, buffer_size: int = BUFFER_SIZE) -> bytes:
    """A message as buffers of a 4-byte big-endian length and data, then a zero length."""
    out = bytearray()
    for start in range(0, len(message), buffer_size):
        chunk = message[start : start + buffer_size]
        out += len(chunk).to_bytes(4, "big") + chunk
    out += b"\x00\x00\x00\x00"  # "a message is always terminated by a zero-length buffer"
    return bytes(out)


def unframe(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """The message in ``data``, which must hold exactly one framed message."""
    parts: list[bytes] = []
    size = 0
    pos = 0
    while True:
        if pos + 4 > len(data):
            raise FramingError(
                "framed message ends before its zero-length terminator", field="body"
            )
        length = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if length == 0:
            if pos != len(data):
                raise FramingError(
                    f"{len(data) - pos} bytes follow the framed message", field="body"
                )
            return b"".join(parts)
        size += length
        if size > max_size:
            raise TooLarge(f"an Avro message is at most {max_size} bytes", field="body")
        if pos + length > len(data):
            raise FramingError("a buffer is longer than the data left", field="body")
        parts.append(data[pos : pos + length])
        pos += length


# -- protocols (spec "Protocol Declaration") ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a protocol: its parameters as a record, its response, and its
    effective error union (``"string"`` first, then the declared errors)."""

    name: str
    request: AvroType
    response: AvroType
    errors: AvroType
    #: Full names of the declared errors; union branch ``i + 1`` is ``declared_errors[i]``.
    declared_errors: tuple[str, ...]
    one_way: bool = False
    doc: str | None = None

    def error_branch(self, type_name: str) -> str | None:
        """The full name of the declared error ``type_name`` (full or short), if declared."""
        for full in self.declared_errors:
            if type_name == full or type_name == full.rsplit(".", 1)[-1]:
                return full
        return None


class Protocol:
    """A parsed, checked Avro protocol, its JSON text and the MD5 of that text.

    The handshake identifies protocols by "128-bit MD5 hashes of the JSON protocol text"
    (spec "Handshake"): ``text`` is what this side sends as its protocol and ``md5`` its
    hash; a protocol parsed from text keeps that exact text.
    """

    def __init__(
        self,
        definition: Mapping[str, Any],
        text: str,
        name: str,
        namespace: str | None,
        messages: Mapping[str, Message],
        types: TypeScope,
    ) -> None:
        self.definition = definition
        self.text = text
        self.md5 = hashlib.md5(text.encode("utf-8")).digest()
        self.name = name
        self.namespace = namespace
        self.messages = messages
        self.types = types

    @property
    def fullname(self) -> str:
        return f"{self.namespace}.{self.name}" if self.namespace else self.name

    def __repr__(self) -> str:
        return f"<Protocol {self.fullname} {self.md5.hex()}>"

    @classmethod
    def parse(
        cls, source: str | bytes | Mapping[str, Any], *, max_size: int = MAX_SCHEMA_SIZE
    ) -> Protocol:
        """Parse a protocol from its JSON text (kept as ``text``) or JSON value; fails
        with core.schemas.InvalidSchema (``field="protocol"``) naming the problem."""
        if isinstance(source, bytes | str):
            text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
            if len(text.encode()) > max_size:
                raise TooLarge(f"a protocol is at most {max_size} bytes", field="protocol")
            try:
                definition = jsonsafe.loads(text)
            except jsonsafe.JSONValueError as e:
                raise InvalidSchema(f"protocol is not JSON: {e.reason}", field="protocol") from None
        else:
            definition = source
            text = json.dumps(definition, separators=(",", ":"), ensure_ascii=False)
        try:
            return cls._build(definition, text)
        except InvalidSchema as e:
            raise InvalidSchema(e.description, field="protocol") from None

    @classmethod
    def _build(cls, definition: Any, text: str) -> Protocol:
        if not isinstance(definition, dict) or not isinstance(definition.get("protocol"), str):
            raise InvalidSchema("a protocol is a JSON object with a string 'protocol'")
        name: str = definition["protocol"]
        namespace = definition.get("namespace")
        if "." in name:
            namespace, name = name.rsplit(".", 1)
        if namespace is not None and not isinstance(namespace, str):
            raise InvalidSchema("a protocol's namespace is a string")
        namespace = namespace or None
        types = TypeScope()
        for t in definition.get("types") or ():
            # "types": definitions of named types (records, enums, fixed and errors).
            if not isinstance(t, dict) or t.get("type") not in ("record", "error", "enum", "fixed"):
                raise InvalidSchema(f"protocol types must be named types (got {str(t)[:60]})")
            types.define(t, namespace)
        messages: dict[str, Message] = {}
        declared = definition.get("messages") or {}
        if not isinstance(declared, dict):
            raise InvalidSchema("a protocol's messages are a JSON object")
        for mname, m in declared.items():
            messages[mname] = cls._message(types, namespace, mname, m)
        return cls(definition, text, name, namespace, messages, types)

    @staticmethod
    def _message(types: TypeScope, namespace: str | None, name: str, m: Any) -> Message:
        if not name.isidentifier() or not name.isascii():
            raise InvalidSchema(f"{name!r} is not a valid message name")
        if not isinstance(m, dict) or not isinstance(m.get("request"), list) or "response" not in m:
            raise InvalidSchema(f"message {name} needs a request list and a response")
        # "A request parameter list is processed equivalently to an anonymous record":
        # both sides name it after the message, so resolution matches the two records.
        request = types.define(
            {"type": "record", "name": f"__request_{name}", "fields": m["request"]}, namespace
        )
        response = types.define(m["response"], namespace)
        errors = m.get("errors") or []
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            raise InvalidSchema(f"message {name}: errors is a list of error type names")
        # "The effective union has "string" prepended to the declared union".
        effective = types.define(["string", *errors], namespace)
        full = tuple(
            types.names[e]["name"] if e in types.names else _qualify(e, namespace, types)
            for e in errors
        )
        one_way = bool(m.get("one-way", False))
        if one_way and (response.node != "null" or errors):
            # "The one-way parameter may only be true when the response type is "null"
            # and no errors are listed."
            raise InvalidSchema(f"one-way message {name} must answer null and declare no errors")
        doc = m.get("doc") if isinstance(m.get("doc"), str) else None
        return Message(name, request, response, effective, full, one_way, doc)


def _qualify(name: str, namespace: str | None, types: TypeScope) -> str:
    full = f"{namespace}.{name}" if namespace and "." not in name else name
    if full not in types.names:
        raise InvalidSchema(f"unknown error type {name}")
    return full


# -- handshake (spec "Handshake") ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    client_hash: bytes
    client_protocol: str | None
    server_hash: bytes
    meta: Mapping[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    match: str  # BOTH, CLIENT or NONE
    server_protocol: str | None = None
    server_hash: bytes | None = None
    meta: Mapping[str, bytes] | None = None


def write_handshake_request(request: HandshakeRequest) -> bytes:
    """A HandshakeRequest as a client writes it before its call."""
    return _HANDSHAKE_REQUEST.write(
        {
            "clientHash": request.client_hash,
            "clientProtocol": request.client_protocol,
            "serverHash": request.server_hash,
            "meta": None if request.meta is None else dict(request.meta),
        }
    )


def read_handshake_response(fo: io.BytesIO) -> HandshakeResponse:
    """Read the HandshakeResponse at the start of a call response."""
    v = _HANDSHAKE_RESPONSE.read_from(fo, path="handshake")
    return HandshakeResponse(v["match"], v["serverProtocol"], v["serverHash"], v["meta"])


# -- the responder -----------------------------------------------------------------------------


class AvroError(Exception):
    """Raised by a dispatch function to answer with an error instead of a response.

    ``type_name`` names one of the message's declared errors (full or short name) and
    ``value`` is that error record; ``"string"`` sends a system error whose value is the
    text (spec "Messages": the effective error union starts with ``"string"``).
    """

    def __init__(self, type_name: str, value: Any) -> None:
        super().__init__(f"{type_name}: {value!r}")
        self.type_name = type_name
        self.value = value

    @classmethod
    def system(cls, text: str) -> AvroError:
        return cls("string", text)


#: ``dispatch(message_name, params)`` -> the response (or an awaitable of it); may raise
#: AvroError. ``params`` maps parameter names to values as core.schemas decodes them.
Dispatch = Callable[[str, dict[str, Any]], Awaitable[Any] | Any]


class Responder:
    """The server side of Avro RPC over a stateless transport, for one protocol.

    It keeps a bounded cache of client protocols by hash (spec: "servers should maintain a
    cache of recently seen protocols"); a protocol is cached only under its own MD5, so a
    client cannot poison the entry another client's hash names. What a call learns of a
    client protocol (whether its messages resolve against ours) is kept only while that
    protocol is cached: a client sending fresh protocols under random hashes leaves
    nothing behind.
    """

    def __init__(
        self,
        protocol: Protocol,
        dispatch: Dispatch,
        *,
        cache_size: int = 64,
        max_protocol_size: int = MAX_SCHEMA_SIZE,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.dispatch = dispatch
        self.cache_size = cache_size
        self.max_protocol_size = max_protocol_size
        #: Called with unexpected exceptions of ``dispatch`` (to log them).
        self.on_error = on_error
        self._remote: OrderedDict[bytes, Protocol] = OrderedDict()
        self._compat: dict[tuple[bytes, str], Compatibility] = {}

    @property
    def cached_entries(self) -> tuple[int, int]:
        """(client protocols, message resolutions) remembered: at most ``cache_size``
        and ``cache_size`` times our number of messages."""
        return len(self._remote), len(self._compat)

    async def respond_framed(
        self, body: bytes, max_size: int = MAX_MESSAGE_SIZE, dispatch: Dispatch | None = None
    ) -> bytes:
        """The framed call response to a framed call request (an HTTP body). ``dispatch``
        serves this call instead of the responder's own (a transport binds per-request
        state, such as the caller's tenant, without giving up the shared protocol cache)."""
        return frame(await self.respond(unframe(body, max_size), dispatch))

    async def respond(self, request: bytes, dispatch: Dispatch | None = None) -> bytes:
        """The call response to one call request (both unframed)."""
        fo = io.BytesIO(request)
        try:
            hv = _HANDSHAKE_REQUEST.read_from(fo, path="handshake")
        except InvalidArgument as e:
            raise HandshakeError(f"unreadable handshake: {e.description}", field="body") from None
        handshake = HandshakeRequest(
            hv["clientHash"], hv["clientProtocol"], hv["serverHash"], hv["meta"]
        )
        reply, remote = self.handshake(handshake)
        out = io.BytesIO()
        _HANDSHAKE_RESPONSE.write_to(
            out,
            {
                "match": reply.match,
                "serverProtocol": reply.server_protocol,
                "serverHash": reply.server_hash,
                "meta": None,
            },
        )
        if remote is None:
            # match=NONE: the client must resend with its protocol; no call is processed.
            return out.getvalue()
        try:
            _METADATA.read_from(fo, path="metadata")
            name = _STRING.read_from(fo, path="message name")
        except InvalidArgument as e:
            return out.getvalue() + _error_response(None, e.description)
        if name == "":
            # spec "Call Format": an empty message name pings / performs a handshake only.
            return out.getvalue()
        return out.getvalue() + await self._call(remote, name, fo, dispatch or self.dispatch)

    def handshake(self, request: HandshakeRequest) -> tuple[HandshakeResponse, Protocol | None]:
        """The handshake response, and the client's protocol when the server has it."""
        remote = self._client_protocol(request)
        ours = self.protocol
        if remote is None:
            # "match=NONE if the server has not previously seen the client's protocol";
            # serverProtocol and serverHash are always sent so the client can resend.
            return HandshakeResponse("NONE", ours.text, ours.md5), None
        if request.server_hash == ours.md5:
            return HandshakeResponse("BOTH"), remote
        # "match=CLIENT ... the client sent an incorrect hash of the server's protocol".
        return HandshakeResponse("CLIENT", ours.text, ours.md5), remote

    def _client_protocol(self, request: HandshakeRequest) -> Protocol | None:
        if request.client_hash == self.protocol.md5:
            return self.protocol
        known = self._remote.get(request.client_hash)
        if known is not None:
            self._remote.move_to_end(request.client_hash)
            return known
        if request.client_protocol is None:
            return None
        try:
            remote = Protocol.parse(request.client_protocol, max_size=self.max_protocol_size)
        except InvalidArgument as e:
            raise HandshakeError(
                f"client protocol refused: {e.description}", field="body"
            ) from None
        if remote.md5 == request.client_hash:
            self._remote[request.client_hash] = remote
            while len(self._remote) > self.cache_size:
                old, _ = self._remote.popitem(last=False)
                for key in [k for k in self._compat if k[0] == old]:
                    del self._compat[key]
        return remote

    async def _call(self, remote: Protocol, name: str, fo: io.BytesIO, dispatch: Dispatch) -> bytes:
        local = self.protocol.messages.get(name)
        if local is None:
            return _error_response(None, f"unknown message: {name}")
        theirs = remote.messages.get(name)
        if theirs is None:
            return _error_response(local, f"message {name} is not in the client's protocol")
        if remote is not self.protocol:
            # spec "Messages": request parameters resolve like record fields, client
            # (writer) to server (reader); checked once per client protocol and message.
            key = (remote.md5, name)
            compat = self._compat.get(key)
            if compat is None:
                compat = local.request.can_read(theirs.request, path="request")
                if self._remote.get(remote.md5) is remote:
                    # Dropped with the protocol when it leaves the cache.
                    self._compat[key] = compat
            if not compat:
                return _error_response(local, f"incompatible request parameters: {compat}")
        try:
            params = local.request.read_from(fo, theirs.request, path="request")
        except InvalidAvroData as e:
            return _error_response(local, e.description)
        if fo.tell() != len(fo.getbuffer()):
            return _error_response(local, "request: bytes left over after the parameters")
        try:
            result = dispatch(name, params)
            if inspect.isawaitable(result):
                result = await result
        except CancelledError:
            raise
        except AvroError as e:
            return self._declared_error(local, e)
        except QGateError as e:
            return _error_response(local, e.description)
        except Exception as e:  # noqa: BLE001 - any failure becomes an Avro system error
            self._report(e)
            return _error_response(local, "internal server error")
        try:
            payload = local.response.write(result, path="response", check=True)
        except InvalidAvroData as e:
            self._report(e)
            return _error_response(local, "internal server error: response does not match")
        return _METADATA.write({}) + _BOOLEAN.write(False) + payload

    def _declared_error(self, message: Message, error: AvroError) -> bytes:
        if error.type_name == "string":
            return _error_response(message, str(error.value))
        branch = message.error_branch(error.type_name)
        if branch is None:
            self._report(error)
            return _error_response(message, f"{error.type_name}: {error.value}")
        try:
            payload = message.errors.write((branch, error.value), path="error", check=True)
        except InvalidAvroData as e:
            self._report(e)
            return _error_response(message, "internal server error: error does not match")
        return _METADATA.write({}) + _BOOLEAN.write(True) + payload

    def _report(self, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(error)


def _error_response(message: Message | None, text: str) -> bytes:
    """A call response carrying a system error: metadata, the error flag, branch 0
    (``"string"``) of the effective error union, the text."""
    errors = _SYSTEM_ERRORS if message is None else message.errors
    return _METADATA.write({}) + _BOOLEAN.write(True) + errors.write(("string", text))
