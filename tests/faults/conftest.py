"""Fixtures for the fault tests: a private PostgreSQL cluster that may be stopped and
restarted at will (the machine's shared cluster never is), and a helper that bounds how
long a call may take (a fault must turn into an answer, never into a hang)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TypeVar

import pytest
import sqlalchemy as sa
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from qgate.storage.sql.migrate import upgrade
from qgate.storage.sql.store import normalize_url
from tests.support.serve import free_port

T = TypeVar("T")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin"
    return found[-1]


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free port, run as the
    ``postgres`` OS user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="qgate-pg-")
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self._as_postgres(
            _pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self.start()
        try:
            admin = sa.create_engine(
                normalize_url(self.url("postgres")), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.exec_driver_sql("CREATE DATABASE qgate")
            admin.dispose()
            upgrade(self.url())
        except BaseException:
            self.destroy()
            raise

    def url(self, database: str = "qgate") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _pg_ctl(self, *argv: str) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=60 -c log_timezone=UTC"
        )
        self._as_postgres(
            _pg_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"),
            "-o", options, "-w", *argv,
        )  # fmt: skip

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._pg_ctl("start")

    def stop(self) -> None:
        """Fast shutdown: every session is terminated, as in a restart by an operator."""
        self._pg_ctl("-m", "fast", "stop")

    def destroy(self) -> None:
        try:
            self._pg_ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)

    def ready_at(self) -> float:
        """When (epoch seconds) the server last said it accepts connections, from its log:
        the moment "PostgreSQL is back", more exact than when ``pg_ctl -w`` noticed."""
        with open(os.path.join(self.dir, "log")) as log:
            lines = [line for line in log if "ready to accept connections" in line]
        assert lines, "the server never said it was ready"
        stamp = " ".join(lines[-1].split()[:2])  # 2026-12-01 17:14:35.610 UTC [pid] LOG: ...
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        return when.timestamp()

    def running(self) -> bool:
        engine = sa.create_engine(normalize_url(self.url()), poolclass=sa.NullPool)
        try:
            with engine.connect():
                return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    c = PrivateCluster()
    yield c
    c.destroy()


def within(d: Deferred[T], seconds: float, what: str = "the call") -> Deferred[T]:
    """``d``, failing the test if it has not fired after ``seconds`` (a hang)."""
    from twisted.internet import reactor

    def timed_out(failure: Failure) -> Failure:
        if failure.check(defer.TimeoutError):
            raise AssertionError(f"{what} hung for more than {seconds} s")
        return failure

    return d.addTimeout(seconds, reactor).addErrback(timed_out)
