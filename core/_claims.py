"""The ``Claim`` that leased messages make (shared by claims that wait and those that do
not); claim ids come from ``core._ids``."""

from __future__ import annotations

from qgate.core.model import Claim, Message


def to_claim(
    found: list[Message], claim_id: str, name: str, ttl: float, grace: float, now: float
) -> Claim | None:
    """The claim ``claim_id`` on the queue ``name``, made at ``now``, of the messages
    ``found`` leased to it; None when nothing was (there are no empty claims)."""
    if not found:
        return None
    return Claim(
        id=claim_id,
        queue=name,
        ttl=ttl,
        grace=grace,
        created_at=now,
        expires_at=now + ttl,
        messages=tuple(found),
    )
