"""Avro RPC over HTTP (spec "Protocol Wire Format"), and qgate's protocol for it."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from qgate.protocols.avro.ipc import Protocol

#: qgate's protocol (org.qgate.QGate), shipped as package data.
PROTOCOL_FILE = "qgate.avpr"


@cache
def qgate_protocol() -> Protocol:
    """The parsed qgate protocol (parsed once; Protocol is immutable in use)."""
    text = files(__package__).joinpath(PROTOCOL_FILE).read_text(encoding="utf-8")
    return Protocol.parse(text)
