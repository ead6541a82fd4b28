"""Zaqar's before hooks: the checks its WSGI driver runs on every matched route before the
responder (``Driver.before_hooks``, in that order), so that a request breaking one of them
gets Zaqar's answer whichever resource it names, even a method the route lacks.

* a body sent as ``application/x-www-form-urlencoded`` is a 400 (Zaqar's
  ``require_content_type_be_non_urlencoded``, whenever ``Content-Length`` is given);
* an ``Accept`` that rules JSON out is a 406 (``require_accepts_json``, Falcon's
  ``client_accepts``), except for a type the route serves besides JSON: ``avro/binary``
  where Avro answers exist, ``application/json-home`` for the home document (qgate
  extensions; Zaqar would refuse them);
* under ``/v2`` a ``Client-ID`` is required, a UUID (``require_client_id``: only the
  versions document at ``/`` goes without), the home document included - except ping and
  health (:data:`PROBES`), a deliberate difference: they answer load balancers and
  orchestrators, which send no such header (``docs/zaqar-compat.md``); and the OpenAPI
  document, which describes the API to tools that know no Client-ID yet.

The project header is not checked here: the authenticator decides (``Call.tenant``), and the
routes that do not act for a tenant (ping, health, home) do not ask for one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qgate.protocols.http.call import Call
from qgate.protocols.http.errors import HTTPError, form_body_refused

__all__ = [
    "NOT_ACCEPTABLE_DESCRIPTION",
    "PROBES",
    "WITHOUT_CLIENT_ID",
    "accepts",
    "before",
    "not_acceptable",
]

#: Routes that answer without a Client-ID: health checks (Zaqar asks for one there too).
PROBES = frozenset({("v2", "ping"), ("v2", "health")})
#: Routes under ``/v2`` that need no Client-ID: the probes and the OpenAPI document.
WITHOUT_CLIENT_ID = PROBES | {("v2", "openapi.json")}

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

#: Zaqar's description of its 406 (and the link Falcon adds to it).
NOT_ACCEPTABLE_DESCRIPTION = (
    "Endpoint only serves `application/json`; specify client-side media type support with "
    'the "Accept" header.'
)
NOT_ACCEPTABLE_LINK = {
    "text": "14.1 Accept, Hypertext Transfer Protocol -- HTTP/1.1",
    "href": "http://www.w3.org/Protocols/rfc2616/rfc2616-sec14.html",
    "rel": "help",
}

_NO_MATCH = (-1, -1, -1, -1, 0.0)


class _Malformed(ValueError):
    pass


def _media(text: str) -> tuple[str, str, dict[str, str]]:
    """``type/subtype;params`` lowercased (the parameter values kept), or _Malformed."""
    full, *raw_params = text.split(";")
    full = full.strip().lower()
    if full == "*":
        full = "*/*"  # Java's URLConnection sends a bare "*" (Falcon accepts it)
    main, slash, sub = full.partition("/")
    if not slash or not main.strip() or not sub.strip():
        raise _Malformed(text)
    params = {}
    for raw in raw_params:
        name, _, value = raw.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip().strip('"')
    return main.strip(), sub.strip(), params


def quality(media: str, accept: str) -> float:
    """The quality ``accept`` gives ``media`` (RFC 9110 12.5.1: the most specific range that
    matches wins), as Falcon 4's ``mediatypes.quality``; _Malformed for a bad header."""
    main, sub, own = _media(media)
    best: tuple[int, int, int, int, float] = _NO_MATCH
    for item in accept.split(","):
        r_main, r_sub, params = _media(item)
        q = 1.0
        if "q" in params:
            try:
                q = float(params.pop("q"))
            except ValueError:
                raise _Malformed(item) from None
            if not (0.0 <= q <= 1.0) or not math.isfinite(q):
                raise _Malformed(item)
        if r_main != "*" and main != "*" and r_main != main:
            continue
        if r_sub != "*" and sub != "*" and r_sub != sub:
            continue
        shared = params.keys() & own.keys()
        if any(params[name] != own[name] for name in shared):
            continue
        score = (
            int(r_main != "*"),
            int(r_sub != "*"),
            int(params.keys() == own.keys()),
            len(shared),
            q,
        )
        best = max(best, score)
    return best[-1]


def accepts(accept: str | None, media: str) -> bool:
    """Falcon's ``client_accepts``: no ``Accept`` (or an empty one) accepts everything; a
    malformed one accepts nothing."""
    if not accept or not accept.strip():
        return True
    try:
        return quality(media, accept) > 0.0
    except _Malformed:
        return False


def not_acceptable(accept: str | None) -> HTTPError:
    """Zaqar's 406. Falcon writes an error document only in a type the client takes (JSON,
    or a ``+json`` type); to one that takes neither it is sent without a body."""
    shown = accepts(accept, JSON) or "+json" in (accept or "").lower()
    return HTTPError(
        406,
        "406 Not Acceptable",
        NOT_ACCEPTABLE_DESCRIPTION,
        {"Vary": "Accept"},
        link=NOT_ACCEPTABLE_LINK,
        with_body=shown,
    )


def _form_body(call: Call) -> bool:
    if call.header("Content-Length") is None:
        return False
    media = (call.header("Content-Type") or "").split(";", 1)[0].strip().lower()
    return media == FORM


def before(call: Call, versioned: bool, also_serves: Sequence[str] = ()) -> None:
    """Run the hooks for ``call`` (``versioned``: under ``/v2``); raise the first refusal.
    ``also_serves`` are the media types the route's handler answers besides JSON."""
    if _form_body(call):
        raise form_body_refused()
    accept = call.header("Accept")
    if not accepts(accept, JSON) and not any(accepts(accept, m) for m in also_serves):
        raise not_acceptable(accept)
    if versioned:
        call.client_id()
