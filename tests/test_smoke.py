import pytest_twisted

from qgate.core.model import NewMessage


@pytest_twisted.ensureDeferred
async def test_publish_claim_ack(service):
    ids = await service.publish("t1", "q1", [NewMessage(b"a"), NewMessage(b"b", priority=9)])
    assert ids == ["1", "2"]
    claim = await service.claim("t1", "q1", limit=5, ttl=30)
    assert [m.body for m in claim.messages] == [b"b", b"a"]
    done = await service.ack("t1", "q1", claim.id, [m.id for m in claim.messages])
    assert sorted(done) == ["1", "2"]
    stats = await service.queue_stats("t1", "q1")
    assert stats.total == 0
