"""The ``[avro]`` table: settings of Avro RPC at ``/avro`` on every HTTP listener."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AvroSettings:
    #: Largest call request read, in bytes (the HTTP listener's own cap applies first).
    max_request_body: int = 1024 * 1024
