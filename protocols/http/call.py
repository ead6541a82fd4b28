"""``Call``: one API request as the handlers see it, parsed on demand and checked the way
Zaqar's Falcon hooks and ``get_param_as_*`` helpers check it."""

from __future__ import annotations

import uuid
from typing import Any, overload
from urllib.parse import parse_qs

from twisted.web.server import Request

from qgate.core.auth import IAuthenticator
from qgate.core.errors import QGateError
from qgate.core.limits import NAME_RE
from qgate.protocols.http import wire
from qgate.protocols.http.errors import (
    BodyTooLarge,
    HTTPError,
    bad_request,
    form_body_refused,
    from_core,
    invalid_param,
)
from qgate.protocols.http.signed import SIGNATURE, SignedURLs
from qgate.protocols.web import count_connection


class Call:
    """The parsed view of a request: path parameters, query, headers, body and tenant."""

    def __init__(
        self,
        request: Request,
        method: str,
        params: dict[str, str],
        auth: IAuthenticator,
        max_request_body: int,
        signed: SignedURLs | None = None,
        service: Any = None,
    ) -> None:
        self.request = request
        self._service = service
        self.method = method
        self.params = params
        self._auth = auth
        self._max_request_body = max_request_body
        #: Headers and the Client-ID as read once: the hooks and the handler both ask.
        self._headers: dict[str, str | None] = {}
        self._client_id: str | None = None
        uri: bytes = request.uri
        _, _, query = uri.partition(b"?")
        self._query = parse_qs(query.decode("ascii", "replace"), errors="replace") if query else {}
        # Zaqar's first hook: a request carrying URL-Signature is let in by it (as the
        # signed project, no token) or refused with 404, before any other check.
        self._signed_tenant: str | None = None
        if signed is not None and self.header(SIGNATURE):
            self._signed_tenant = signed.verify(method, request.path, self.header)

    # -- headers ---------------------------------------------------------------------------

    def header(self, name: str) -> str | None:
        try:
            return self._headers[name]
        except KeyError:
            pass
        value = self.request.getHeader(name.encode("ascii"))
        text = value if value is None or isinstance(value, str) else value.decode("latin-1")
        self._headers[name] = text
        return text

    def client_id(self) -> str:
        """The required ``Client-ID`` header: any UUID form, with or without dashes, in its
        canonical form so echo filtering matches however the client spells it."""
        if self._client_id is not None:
            return self._client_id
        raw = self.header("Client-ID")
        if raw is None:
            # Falcon's HTTPMissingHeader('Client-Id'), raised by Zaqar's require_client_id.
            raise HTTPError(400, "Missing header value", 'The "Client-Id" header is required.')
        try:
            self._client_id = str(uuid.UUID(raw.strip()))
        except ValueError:
            raise HTTPError(400, "Wrong UUID value", "Malformed hexadecimal UUID.") from None
        return self._client_id

    async def tenant(self) -> str:
        """The tenant this call acts for, from ``X-Project-ID`` and ``X-Auth-Token``
        (or from the pre-signed URL it carries). The connection is counted toward that
        tenant's ``max_connections`` (``_count_connection``)."""
        if self._signed_tenant is not None:
            self._count_connection(self._signed_tenant)
            return self._signed_tenant
        project = self.header("X-Project-ID")
        token = self.header("X-Auth-Token")
        try:
            peer = getattr(self.request.getClientAddress(), "host", None)
            tenant: str = await self._auth.authenticate(project or None, token or None, peer=peer)
        except QGateError as e:
            raise from_core(e) from None
        self._count_connection(tenant)
        return tenant

    def _count_connection(self, tenant: str) -> None:
        """This connection counts toward ``tenant``'s ``max_connections``
        (``protocols.web.count_connection``); over it, a 403 and the connection closes."""
        try:
            count_connection(self.request, self._service, tenant)
        except QGateError as e:
            raise from_core(e) from None

    # -- path ------------------------------------------------------------------------------

    def queue(self) -> str:
        """The queue named in the path: ``[a-zA-Z0-9_.-]{1,64}``, Zaqar's rule and the core's."""
        name = self.params["queue"]
        if not NAME_RE.match(name):
            raise bad_request(
                "The format of the submitted queue name or project id is not valid.",
                title="Invalid queue identification",
            )
        return name

    # -- query -----------------------------------------------------------------------------

    def query(self, name: str) -> str | None:
        """A query parameter; blank values count as absent (Falcon's keep_blank_qs_values
        is off in Zaqar)."""
        values = [v for v in self._query.get(name, []) if v != ""]
        return values[0] if values else None

    def has_query(self, name: str) -> bool:
        return self.query(name) is not None

    def query_list(self, name: str) -> list[str] | None:
        """A comma-separated list (Zaqar's auto_parse_qs_csv), repeated parameters joined."""
        values = self._query.get(name)
        if not values:
            return None
        items = [item for v in values for item in v.split(",") if item != ""]
        return items or None

    @overload
    def query_int(self, name: str, default: int) -> int: ...

    @overload
    def query_int(self, name: str, default: None = None) -> int | None: ...

    def query_int(self, name: str, default: int | None = None) -> int | None:
        text = self.query(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise invalid_param(name, "The value must be an integer.") from None

    def query_bool(self, name: str, default: bool = False) -> bool:
        text = self.query(name)
        if text is None:
            return default
        value = wire.parse_bool(text)
        if value is None:
            raise invalid_param(name, 'The value of the parameter must be "true" or "false".')
        return value

    def query_wait(self, max_wait: float) -> float:
        """``wait=SECONDS`` of a long poll (a qgate extension), 0 to ``max_wait``."""
        text = self.query("wait")
        if text is None:
            return 0.0
        value = wire.parse_number(text)
        if value is None or not 0 <= value <= max_wait:
            raise invalid_param(
                "wait", f"The value must be a number of seconds from 0 to {max_wait:g}."
            )
        return value

    # -- body ------------------------------------------------------------------------------

    def body(self) -> bytes:
        """The request body. The site refuses large bodies before reading them; this check
        covers resources served by another site (tests, embedding). The resource answers
        ``BodyTooLarge`` as the route's own size check would."""
        content = self.request.content
        if content is None:
            return b""
        content.seek(0)
        data: bytes = content.read(self._max_request_body + 1)
        if len(data) > self._max_request_body:
            raise too_large(self._max_request_body)
        return data

    def check_content_type(self, *allowed: str) -> None:
        """Refuse bodies that are not JSON. Zaqar refuses form posts with a 400 (its
        ``require_content_type_be_non_urlencoded`` hook); other non-JSON types are a 415
        here. A missing Content-Type is taken as JSON."""
        raw = self.header("Content-Type")
        if raw is None or not raw.strip():
            return
        media = raw.split(";", 1)[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            raise form_body_refused()
        if media in allowed or (wire.JSON_TYPE in allowed and wire.is_json_type(media)):
            return
        raise HTTPError(
            415,
            "Unsupported media type",
            f"Content type {media!r:.80} is not supported; use {', '.join(allowed)}.",
        )

    def json(self, default: Any = None) -> Any:
        """The JSON document in the body; ``default`` when the body is empty and a default
        is given, else a 400."""
        data = self.body()
        if not data.strip() and default is not None:
            return default
        self.check_content_type(wire.JSON_TYPE)
        return wire.parse_json(data)


def too_large(limit: int) -> HTTPError:
    return BodyTooLarge(limit)
