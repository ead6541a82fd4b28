"""SQLite in trouble: another process holding the write lock, and a full disk. Writes
fail with StorageUnavailable in bounded time, reads keep working, and writes work again
once the trouble is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from qgate.core.errors import StorageUnavailable
from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.storage.memory import MemoryStorage
from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import SQLStorage
from tests.faults.conftest import within
from tests.faults.test_postgres import sleep
from tests.support.core import TEST_LIMITS

pytestmark = pytest.mark.integration

TENANT = "t1"

#: Holds the database's write lock until its stdin closes.
HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def _service(reactor, url: str, **options) -> QueueService:
    upgrade(url)
    store = SQLStorage(reactor, url, **options)
    return QueueService(reactor, store, MemoryStorage(), limits=TEST_LIMITS)


async def _publish_until_it_works(service: QueueService, queue: str, body: bytes) -> str:
    """Publish ``body``, retrying StorageUnavailable for at most 2 s; its id."""
    deadline = time.monotonic() + 2
    while True:
        try:
            [message_id] = await within(service.publish(TENANT, queue, [NewMessage(body)]), 3)
            return message_id
        except StorageUnavailable:
            assert time.monotonic() < deadline, "writes did not come back within 2 s"
            await sleep(0.02)


@pytest_twisted.ensureDeferred
async def test_a_write_lock_held_elsewhere_answers_storage_unavailable_then_writes_resume(
    tmp_path: Path, reactor
) -> None:
    db = tmp_path / "qgate.db"
    service = _service(reactor, f"sqlite:///{db}", busy_timeout=0.2)
    await service.create_queue(TENANT, "jobs")
    [before] = await service.publish(TENANT, "jobs", [NewMessage(b"before")])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await deferToThread(holder.stdout.readline) == b"locked\n"
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="storage unavailable"):
            await within(service.publish(TENANT, "jobs", [NewMessage(b"during")]), 3)
        assert time.monotonic() - started < 1.5  # the busy timeout, not the old 30 s
        # Readers do not need the write lock (WAL): they carry on.
        [found] = await within(service.get_messages(TENANT, "jobs", [before]), 3, "a read")
        assert found.body == b"before"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=5)
    after = await _publish_until_it_works(service, "jobs", b"after")
    found = await within(service.get_messages(TENANT, "jobs", [before, after]), 3)
    assert [m.body for m in found] == [b"before", b"after"]
    await within(service.stop(), 5, "stopping the service")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    if subprocess.run(["umount", str(mount)], check=False).returncode:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest_twisted.ensureDeferred
async def test_a_full_disk_answers_storage_unavailable_reads_go_on_and_writes_resume(
    small_disk: Path, reactor
) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 768 * 1024)  # tmpfs pages: freed when it is deleted
    service = _service(reactor, f"sqlite:///{small_disk}/qgate.db")
    await service.create_queue(TENANT, "big")
    body = bytes(range(256)) * 128  # 32 KiB
    published: list[str] = []
    for _ in range(100):
        try:
            d = service.publish(TENANT, "big", [NewMessage(body)] * 4)
            published += await within(d, 5, "a publish to a full disk")
        except StorageUnavailable as e:
            assert str(e).startswith("storage unavailable")
            break
    else:
        raise AssertionError("the disk never filled up")
    assert published
    # The service is up: reads work, and more writes fail fast rather than hang.
    found = await within(service.get_messages(TENANT, "big", published[:100]), 3, "a read")
    assert [m.body for m in found] == [body] * min(len(published), 100)
    assert await within(service.ping(), 3)
    with pytest.raises(StorageUnavailable):
        await within(service.publish(TENANT, "big", [NewMessage(body)] * 4), 5)

    filler.unlink()
    after = await _publish_until_it_works(service, "big", b"room again")
    [found_after] = await within(service.get_messages(TENANT, "big", [after]), 3)
    assert found_after.body == b"room again"
    await within(service.stop(), 5, "stopping the service")
