"""Pre-signed URLs as Zaqar v2 makes and checks them (``zaqar/common/urls.py``).

``POST /v2/queues/{q}/share`` (``protocols.http.share``) signs a set of paths and methods
for a project until an expiry time, with the ``[http] signed_url_secret_key``. A request
that carries ``URL-Signature`` (with ``URL-Paths``, ``URL-Methods``, ``URL-Expires`` and
``X-Project-ID``) is then judged by that signature alone, whatever the auth mode: let in as
the signed project, no token asked, or refused with a 404 as Zaqar does. The signature is
Zaqar's, so URLs signed by a Zaqar with the same key work here and the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from twisted.internet.interfaces import IReactorTime

from qgate.protocols.http.errors import not_found

#: Zaqar's ``_DATE_FORMAT``: expiry times are signed and answered in UTC, to the second.
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: Zaqar's default lifetime of a signed URL.
DEFAULT_LIFETIME = timedelta(days=1)
#: The methods a URL may be signed for: those the API serves (Zaqar signs any string; one
#: no request can carry, such as ``get``, is refused here rather than signed in vain).
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})

#: The headers of a signed request, as python-zaqarclient's ``signed-url`` backend sends.
SIGNATURE = "URL-Signature"
PATHS = "URL-Paths"
METHODS_HEADER = "URL-Methods"
EXPIRES = "URL-Expires"


def shown(items: Iterable[Any]) -> str:
    """Items as Zaqar's messages show a Python set (``{'a', 'b'}``), in a stable order."""
    return "{" + ", ".join(sorted({repr(item) for item in items})) + "}"


def signature(
    key: bytes, paths: Sequence[str], methods: Sequence[str], project: str, expires: str
) -> str:
    """Zaqar's HMAC-SHA256, hex: sorted paths and sorted methods, each joined by commas, the
    project and the expiry text, joined by a backslash and an ``n`` (two characters: Zaqar
    formats a raw string, ``r'%(paths)s\\n%(methods)s...'``)."""
    text = "\\n".join([",".join(sorted(paths)), ",".join(sorted(methods)), project, expires])
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_expires(value: Any, now: datetime) -> datetime:
    """An expiry as Zaqar's ``create_signed_url`` reads it, in naive UTC: absent is a day
    from ``now``; a whole number is refused; else an ISO 8601 date or time, UTC unless it
    names an offset. Raises ``ValueError`` with Zaqar's texts."""
    if value is None:
        return now + DEFAULT_LIFETIME
    try:
        whole = int(value)
    except (TypeError, ValueError, OverflowError):
        whole = 0
    if whole:  # Zaqar tests int(expires) the same way, so "0" goes on to the date parser
        raise ValueError(
            "`expires` should be date format, for example 2016-01-01T00:00:00, "
            f"not integer value: {whole}"
        )
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # overflow: an offset past year 9999
        raise ValueError(f"Unable to parse date string {value!r}") from None
    return parsed


def path_segments(raw: bytes) -> list[str]:
    """A request path as the API's router splits it: on ``/`` first, then unquoted, so a
    ``%2F`` cannot smuggle a path past the check below."""
    segments = [unquote(s) for s in raw.decode("ascii", "replace").split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()
    return segments


def covers(signed_path: str, segments: Sequence[str]) -> bool:
    """Whether a signed path covers a request path: the same segments, or a resource below
    them (Zaqar: "query single resource with pre-signed url", ``.../messages/{id}``).
    Zaqar uses each signed path as an unanchored regular expression; segments compare the
    same for every path it signs, without a client-sent pattern or ``.`` matching any
    character."""
    if not signed_path.startswith("/"):
        return False
    want = signed_path.split("/")[1:]
    return "" not in want and list(segments[: len(want)]) == want


class SignedURLs:
    """Signs and checks pre-signed URLs with one secret key, on the injected clock."""

    def __init__(self, secret_key: str, clock: IReactorTime) -> None:
        self._key = secret_key.encode("utf-8")
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC).replace(tzinfo=None)

    def _expiry(self, expires: Any) -> tuple[datetime, datetime]:
        """(expiry, now); ``ValueError`` when the expiry is malformed."""
        now = self._now()
        return parse_expires(expires, now), now

    def create(
        self, project: str, paths: list[str], methods: Any = None, expires: Any = None
    ) -> dict[str, Any]:
        """Zaqar's ``create_signed_url``: the document ``POST .../share`` answers, its
        checks in Zaqar's order; ``ValueError`` with Zaqar's texts."""
        methods = methods or ["GET"]  # Zaqar: any empty value means the default
        if not self._key:
            raise ValueError(
                "The `key` can't be None: pre-signed URLs are off "
                "([http] signed_url_secret_key is empty)."
            )
        if not isinstance(paths, list) or not paths:
            raise ValueError("`paths` must be a non-empty list")
        if not isinstance(methods, list):
            raise ValueError("`methods` should be a list")
        unknown = [m for m in methods if not isinstance(m, str) or m not in METHODS]
        if unknown:
            raise ValueError(f"Invalid methods: {shown(unknown)}")
        expiry, now = self._expiry(expires)
        if expiry <= now:
            raise ValueError("`expires` is lower than the current time")
        expires_text = expiry.strftime(DATE_FORMAT)
        paths, methods = sorted(paths), sorted(methods)
        return {
            "paths": paths,
            "methods": methods,
            "project": project,
            "expires": expires_text,
            "signature": signature(self._key, paths, methods, project, expires_text),
        }

    def verify(self, method: str, raw_path: bytes, header: Callable[[str], str | None]) -> str:
        """The project a request carrying ``URL-Signature`` acts for, or a 404 (Zaqar's
        ``verify_pre_signed_url`` answers ``HTTPNotFound`` to every failure) saying why."""
        if not self._key:
            raise not_found("Pre-signed URLs are not enabled on this server.")
        methods = (header(METHODS_HEADER) or "").split(",")
        paths = (header(PATHS) or "").split(",")
        if method not in methods:
            raise not_found(f"The pre-signed URL does not allow the method {method}.")
        segments = path_segments(raw_path)
        if not any(covers(path, segments) for path in paths):
            raise not_found("The pre-signed URL does not cover this path.")
        project = header("X-Project-ID")
        expires = header(EXPIRES)
        if not project or not expires:
            raise not_found(f"A pre-signed URL needs the X-Project-ID and {EXPIRES} headers.")
        try:
            expiry, now = self._expiry(expires)
        except ValueError as e:
            raise not_found(f"The pre-signed URL's {EXPIRES} is not valid: {e}.") from None
        if expiry <= now:
            raise not_found("The pre-signed URL has expired.")
        expires_text = expiry.strftime(DATE_FORMAT)
        expected = signature(self._key, paths, methods, project, expires_text)
        given = (header(SIGNATURE) or "").encode("latin-1")
        if not hmac.compare_digest(expected.encode("ascii"), given):
            raise not_found("The pre-signed URL's signature does not match.")
        return project
