"""HTTP errors in Zaqar's shape: a status code and a ``{"title", "description"}`` JSON body.

Titles and descriptions follow Zaqar v2 (``zaqar/transport/wsgi/errors.py`` and the
Falcon errors it raises) so clients that show them to users see familiar text. Core errors
are mapped by type (:func:`from_core`), never by parsing their messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qgate.core import errors as core
from qgate.protocols.web import INTERNAL_ERROR_DESCRIPTION, INTERNAL_ERROR_TITLE, error_body

#: Zaqar's ``HTTPBadRequestAPI`` title: a bad parameter or a rule of the API was broken.
BAD_API = "Invalid API request"
#: Zaqar's ``HTTPBadRequestBody`` title: the request document is malformed.
BAD_BODY = "Invalid request body"


class HTTPError(Exception):
    """An error response: raised anywhere in a handler, rendered by the resource.

    ``link`` is Falcon's help link (``{"text", "href", "rel"}``) where Zaqar's error has
    one; ``with_body`` False sends the status and headers alone (Falcon's answer to a client
    that accepts no JSON)."""

    def __init__(
        self,
        status: int,
        title: str,
        description: str,
        headers: Mapping[str, str] | None = None,
        *,
        link: Mapping[str, str] | None = None,
        with_body: bool = True,
    ) -> None:
        super().__init__(f"{status} {title}: {description}")
        self.status = status
        self.title = title
        self.description = description
        self.headers = dict(headers or {})
        self.link = dict(link) if link is not None else None
        self.with_body = with_body

    def document(self) -> dict[str, Any] | None:
        """The JSON error document, or None when the answer has no body."""
        if not self.with_body:
            return None
        document: dict[str, Any] = {"title": self.title, "description": self.description}
        if self.link is not None:
            document["link"] = self.link
        return document

    def body(self) -> bytes:
        return error_body(self.title, self.description)


class BodyTooLarge(HTTPError):
    """A request body over ``http.max_request_body``: the resource answers it as Zaqar's
    size check of that route would (``ApiResource.too_large``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(400, BAD_BODY, f"The request body may not be larger than {limit} bytes.")


def bad_request(description: str, title: str = BAD_API) -> HTTPError:
    return HTTPError(400, title, description)


def bad_body(description: str) -> HTTPError:
    return HTTPError(400, BAD_BODY, description)


def not_found(description: str) -> HTTPError:
    return HTTPError(404, "Not found", description)


def invalid_param(name: str, why: str) -> HTTPError:
    # Falcon's HTTPInvalidParam, which Zaqar's get_param_as_* helpers raise.
    return HTTPError(400, "Invalid parameter", f'The "{name}" parameter is invalid. {why}')


#: Seconds a 503 asks clients to wait. Zaqar says 30; qgate's writer retries the database
#: within half a second of its return (storage/sql/writer.py), so a client may come back soon.
RETRY_AFTER = "1"


def service_unavailable(description: str) -> HTTPError:
    # Zaqar's HTTPServiceUnavailable appends this advice.
    return HTTPError(
        503,
        "Service temporarily unavailable",
        f"{description} Please try again in a few seconds.",
        {"Retry-After": RETRY_AFTER},
    )


def from_core(error: core.QGateError) -> HTTPError:
    """The HTTP form of a core error.

    ``TooLarge`` (too many messages in a batch, a body over the core's limit) becomes a
    400 like Zaqar's size checks, not a 413: python-zaqarclient maps only 400, 401, 403,
    404, 409, 500 and 503 to exceptions and would treat a 413 as success.
    """
    description = error.description
    if isinstance(error, core.Unauthorized):
        return HTTPError(401, "Unauthorized", description, {"WWW-Authenticate": "Token"})
    if isinstance(error, core.InvalidArgument):
        return bad_request(description)
    if isinstance(error, core.NotFound):
        return not_found(description)
    if isinstance(error, core.RateLimited):
        # RFC 6585: 429 with Retry-After (whole seconds, rounded up).
        retry = str(max(1, math.ceil(error.retry_after)))
        return HTTPError(429, "Too many requests", description, {"Retry-After": retry})
    if isinstance(error, core.Forbidden):
        # A quota or an API key's scope: Zaqar's 403 (zaqarclient's Forbidden).
        return HTTPError(403, error.title, description)
    if isinstance(error, core.MessageClaimed):
        # Zaqar: "This message is claimed; it cannot be deleted without a valid claim ID."
        return HTTPError(403, "Unable to delete", description)
    if isinstance(error, core.QueueFull):
        # A qgate extension (bounded queues); 409 reaches zaqarclient as Conflict.
        return HTTPError(409, "Queue full", description)
    if isinstance(error, core.Conflict):
        return HTTPError(409, "Resource conflict", description)
    if isinstance(error, core.StorageUnavailable):
        return service_unavailable(description)
    return HTTPError(500, INTERNAL_ERROR_TITLE, INTERNAL_ERROR_DESCRIPTION)


def form_body_refused() -> HTTPError:
    """Zaqar's 400 for an ``application/x-www-form-urlencoded`` body (its
    ``require_content_type_be_non_urlencoded`` hook, Falcon's text)."""
    return HTTPError(
        400,
        "Invalid Content-Type",
        "Endpoint does not accept `application/x-www-form-urlencoded` content; "
        "currently supported media type is `application/json`; specify proper "
        'client-side media type with the "Content-Type" header.',
    )
