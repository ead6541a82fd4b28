"""Access logs of HTTP listeners: one line per request, in the ``qgate.access.<protocol>``
namespace (so ``[log] levels`` can quiet them), or none (``access_log = false`` on the
listener).

A line has the method, the path without its query string, the status, the bytes sent and
the client address: never headers (API keys, signatures) nor bodies. Twisted's default
line shows the whole URI, query included; this replaces it on each ``HTTPFactory``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.http import HTTPFactory


def access_logger(protocol: str) -> Callable[[Any], None]:
    log = Logger(namespace=f"qgate.access.{protocol}")

    def write(request: Any) -> None:
        client = request.getClientAddress()
        log.info(
            "{client} {method} {path} {status} {size}",
            client=getattr(client, "host", "-"),
            method=bytes(request.method).decode("ascii", "replace"),
            path=bytes(request.path).decode("ascii", "replace"),
            status=request.code,
            size=request.sentLength,
        )

    return write


def configure(factory: Any, protocol: str, enabled: bool) -> None:
    """Give ``factory`` (if it serves HTTP) qgate's access log, or none."""
    if isinstance(factory, HTTPFactory):
        factory.log = access_logger(protocol) if enabled else (lambda request: None)  # type: ignore[method-assign,assignment]
