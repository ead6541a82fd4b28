"""Logging of ``qgate serve``: Twisted's logger, as text or as one JSON object per line,
with a least level overall and per subsystem (logger namespace prefix).

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message`` (the
event formatted), the event's own scalar fields (``log_*`` and private ones left out), and
``failure`` (the traceback text) for a logged failure. No log call of qgate passes a body
or a credential; ``scrub`` also drops any field whose name says it holds one, as a last
guard.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

#: Field names never written, whatever a caller passes.
SECRET_FIELDS = frozenset(
    {"body", "token", "key", "secret", "password", "passcode", "authorization", "signature"}
)


def scrub(event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-ready fields of ``event``: scalars only, no ``log_*``, no secret names."""
    out: dict[str, Any] = {}
    for name, value in event.items():
        if name.startswith("log_") or name.startswith("_") or name.lower() in SECRET_FIELDS:
            continue
        if isinstance(value, str | int | float | bool) or value is None:
            out[name] = value
    return out


@implementer(ILogObserver)
class JSONLines:
    """One JSON object per event, one per line."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(dict(event)),
        }
        for name, value in scrub(event).items():
            record.setdefault(name, value)
        failure = event.get("log_failure")
        if failure is not None:
            record["failure"] = failure.getTraceback()
        self._out.write(json.dumps(record, default=str) + "\n")
        self._out.flush()


def observer(
    out: IO[str], format: str, level: str, levels: Mapping[str, str] | None = None
) -> ILogObserver:
    """The observer ``[log]`` asks for, writing to ``out``."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    for namespace, least in (levels or {}).items():
        predicate.setLogLevelForNamespace(namespace, LogLevel.levelWithName(least))
    sink = JSONLines(out) if format == "json" else textFileLogObserver(out)
    return FilteringLogObserver(sink, [predicate])
