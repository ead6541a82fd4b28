"""Cross-process wake-ups over PostgreSQL LISTEN/NOTIFY.

A write that changes a queue sends, with its transaction (so only once it commits), a
NOTIFY on ``NOTIFY_CHANNEL`` naming the queue and the sending store's token; every other
qgate process sharing the database hears it on its ``Listener`` thread and wakes its
waiters of that queue. A store ignores its own notes: it woke its waiters already.
"""

from __future__ import annotations

import json
import select
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from qgate.storage.sql.engine import normalize_url, pg_connect_args
from qgate.storage.sql.writer import FIRST_BACKOFF, MAX_BACKOFF

log = Logger()

NOTIFY_CHANNEL = "qgate"


def payload(token: str, tenant: str, name: str) -> str:
    """What a NOTIFY from the store ``token`` about queue ``tenant``/``name`` carries."""
    return json.dumps([token, tenant, name])


class Listener:
    """The LISTEN thread of one store: hands every other process's NOTIFY to a callback
    on the reactor thread."""

    def __init__(self, reactor: IReactorFromThreads, url: str, token: str) -> None:
        self._reactor = reactor
        self._url = url
        self._token = token
        self._thread: threading.Thread | None = None
        self._listening = False
        #: Set once the thread is listening (the first time).
        self.ready = threading.Event()
        #: How many times the thread has (re)connected.
        self.connects = 0

    def start(self, callback: Callable[[str, str], None]) -> None:
        """Listen from now on, calling ``callback(tenant, name)``; once (idempotent)."""
        if self._thread is not None:
            return
        self._listening = True
        self._thread = threading.Thread(
            target=self._listen, args=(callback,), name="qgate-pg-listen", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Let the thread end (within half a second; it is a daemon, nobody waits)."""
        self._listening = False

    def _listen(self, callback: Callable[[str, str], None]) -> None:
        """After a lost connection (a server restart) the thread reconnects with the
        writer's backoff. (What was notified while it was away is not replayed: a waiter
        that missed it finds its messages when its wait or next claim comes round.)"""
        url = normalize_url(self._url)
        listen_engine = sa.create_engine(
            url, poolclass=sa.NullPool, connect_args=pg_connect_args(url)
        )
        backoff = 0.0
        while self._listening:
            raw = None
            try:
                raw = listen_engine.raw_connection()
                dbapi = raw.driver_connection
                assert dbapi is not None
                dbapi.autocommit = True
                with dbapi.cursor() as cursor:
                    cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
                if backoff:
                    log.info("PostgreSQL LISTEN connection back")
                backoff = 0.0
                self.connects += 1
                self.ready.set()
                while self._listening:
                    if select.select([dbapi], [], [], 0.5)[0]:
                        dbapi.poll()
                        while dbapi.notifies:
                            note = dbapi.notifies.pop(0)
                            token, tenant, name = json.loads(note.payload)
                            if token != self._token:
                                self._reactor.callFromThread(callback, tenant, name)
            except Exception as e:  # noqa: BLE001 - reconnect after a lost connection
                if not backoff:
                    log.failure("PostgreSQL LISTEN connection lost; reconnecting")
                else:
                    log.warn("PostgreSQL LISTEN reconnect failed: {e}", e=str(e).splitlines()[0])
                backoff = min(2 * backoff, MAX_BACKOFF) if backoff else FIRST_BACKOFF
                time.sleep(backoff)
            finally:
                if raw is not None:
                    try:
                        raw.close()
                    except Exception:  # noqa: BLE001 - it is gone either way
                        pass
        listen_engine.dispose()
