"""What the gateway tells operators about itself (``core.admin.IGatewayStatus``), and
the TLS certificates it serves: start-up lines, expiry warnings, reload on SIGHUP."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from qgate.core.admin import IGatewayStatus
from qgate.core.metrics import QueueRates
from qgate.gateway.config import ConfigError, ListenerConfig
from qgate.gateway.metrics import PrometheusMetrics
from qgate.gateway.tls import CertificateInfo, ReloadableCertificates

log = Logger(namespace="qgate.gateway")

#: A certificate this close to its end is warned about (log line and metric).
EXPIRY_WARNING_DAYS = 14


def qgate_version() -> str:
    try:
        return version("qgate")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@dataclass
class ListenerState:
    """One ``[[listeners]]`` entry as it runs."""

    config: ListenerConfig
    certificates: ReloadableCertificates | None = None
    up: bool = False
    address: str = ""
    error: str = field(default="")

    def name(self) -> str:
        return f"{self.config.protocol}:{self.address or self.config.endpoint}"


@implementer(IGatewayStatus)
class GatewayStatus:
    """The live state of one gateway's listeners, storage and certificates."""

    def __init__(self, clock: Any, service: Any, store: Any, metrics: PrometheusMetrics) -> None:
        self._clock = clock
        self._service = service
        self._store = store
        self.metrics = metrics
        self.rates = QueueRates()
        self.listeners: list[ListenerState] = []
        self.workers = 1
        self.started = clock.seconds()

    def certificates_served(self, state: ListenerState) -> None:
        """Log (and export) the certificates a TLS listener serves and when they expire."""
        if state.certificates is None:
            return
        now = self._clock.seconds()
        for info in state.certificates.certificates:
            self._export(state, info, now)

    def _export(self, state: ListenerState, info: CertificateInfo, now: float) -> None:
        days = info.days_left(now)
        listener = state.name()
        self.metrics.cert_expiry.labels(listener, info.subject).set(info.not_after)
        expiring = days < EXPIRY_WARNING_DAYS
        self.metrics.cert_expiring.labels(listener, info.subject).set(1 if expiring else 0)
        log.info(
            "{listener} serves certificate {subject} ({names}), expires in {days:.0f} days",
            listener=listener,
            subject=info.subject,
            names=", ".join(info.names) or "no DNS names",
            days=days,
        )
        if expiring:
            log.warn(
                "certificate {subject} of {listener} expires in {days:.1f} days",
                listener=listener,
                subject=info.subject,
                days=days,
            )

    def reload(self) -> list[dict[str, Any]]:
        """Load every TLS listener's certificates again (SIGHUP, ``qgate reload``)."""
        out: list[dict[str, Any]] = []
        log.info("reloading TLS certificates")
        for state in self.listeners:
            if state.certificates is None:
                continue
            try:
                state.certificates.load()
            except ConfigError as e:
                log.error(
                    "{listener}: certificates not reloaded: {error}",
                    listener=state.name(),
                    error=str(e),
                )
                out.append({"listener": state.name(), "reloaded": False, "error": str(e)})
                continue
            self.certificates_served(state)
            out.append(
                {
                    "listener": state.name(),
                    "reloaded": True,
                    "certificates": [
                        {"subject": c.subject, "names": list(c.names), "not_after": c.not_after}
                        for c in state.certificates.certificates
                    ],
                }
            )
        return out

    async def _storage_ok(self) -> bool:
        try:
            return bool(await self._service.ping())
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def ready(self) -> dict[str, Any]:
        storage = await self._storage_ok()
        listeners = bool(self.listeners) and all(s.up for s in self.listeners)
        return {"ready": storage and listeners, "storage": storage, "listeners": listeners}

    async def status(self) -> dict[str, Any]:
        storage = await self._storage_ok()
        writer = getattr(self._store, "writer", None)
        stats = writer.stats() if writer is not None else None
        now = self._clock.seconds()
        return {
            "version": qgate_version(),
            "pid": os.getpid(),
            "uptime": round(now - self.started, 1),
            "workers": self.workers,
            "storage": {
                "kind": type(self._store).__name__,
                "answers": storage,
                "writer": None
                if stats is None
                else {
                    "batches": stats.batches,
                    "operations": stats.operations,
                    "statements": stats.statements,
                    "busy_seconds": round(stats.busy_seconds, 3),
                },
            },
            "listeners": [
                {
                    "protocol": s.config.protocol,
                    "endpoint": s.config.endpoint,
                    "address": s.address,
                    "up": s.up,
                    "tls": s.certificates is not None,
                    "certificates": []
                    if s.certificates is None
                    else [
                        {
                            "subject": c.subject,
                            "names": list(c.names),
                            "days_left": round(c.days_left(now), 1),
                        }
                        for c in s.certificates.certificates
                    ],
                }
                for s in self.listeners
            ],
            "waiters": self._service.waiters(),
            "connections": self.connections(),
        }

    def connections(self) -> dict[str, int]:
        """Open connections by protocol (the ``qgate_connections_open`` gauge)."""
        out: dict[str, int] = {}
        for family in self.metrics.connections.collect():
            for sample in family.samples:
                protocol = sample.labels["protocol"]
                out[protocol] = out.get(protocol, 0) + int(sample.value)
        return out
