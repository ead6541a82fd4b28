"""The values a claim is made of when the service leases messages: a new claim id, and
the ``Claim`` that the leased messages make (shared by claims that wait and those that
do not)."""

from __future__ import annotations

import os

from qgate.core.model import Claim, Message


def new_claim_id() -> str:
    """128 random bits as hex (uuid4's entropy, a fraction of its cost)."""
    return os.urandom(16).hex()


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
