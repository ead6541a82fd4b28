"""Where a push may go: every address a subscriber's host resolves to is checked before
each connection, and the connection goes to the checked address (never to a name
resolved again), so DNS rebinding cannot reach what the check refused.

Link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services) are always
refused; loopback, private, shared (CGNAT), unspecified and other non-global addresses
unless ``[push] allow_private_targets``; multicast and reserved ones always.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class TargetRefused(Exception):
    """A subscriber's address is one pushes may not go to."""


class Unresolved(Exception):
    """A subscriber's host has no address right now (tried again later)."""


def refusal(address: str, allow_private: bool) -> str | None:
    """Why a push may not connect to ``address`` (an IP literal), or None."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    if ip.is_link_local or any(ip in net for net in LINK_LOCAL):
        return f"{ip} is link-local (cloud metadata): always refused"
    if ip.is_multicast or (ip.is_reserved and not ip.is_private):
        return f"{ip} is multicast or reserved: always refused"
    if not ip.is_global and not allow_private:
        return f"{ip} is loopback or private: refused unless [push] allow_private_targets"
    return None


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects a name resolution's addresses into a Deferred."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.done: defer.Deferred[list[str]] = defer.Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, IPv4Address | IPv6Address):
            self.found.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.found)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@implementer(IStreamClientEndpoint)
class CheckedEndpoint:
    """Resolves ``host``, refuses the whole connection if any of its addresses is
    refused, then connects to the first address that answers (TLS verified against
    ``trust`` with ``host`` as the name, for https)."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        tls: bool,
        trust: Any,
        allow_private: bool,
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._tls = tls
        self._trust = trust
        self._allow_private = allow_private
        self._timeout = timeout

    async def _addresses(self) -> list[str]:
        if _literal(self._host):
            return [self._host]
        receiver = _Addresses()
        self._reactor.nameResolver.resolveHostName(receiver, self._host, self._port)
        found = await receiver.done
        if not found:
            raise Unresolved(f"{self._host} does not resolve")
        return list(dict.fromkeys(found))

    async def _connect(self, factory: Any) -> Any:
        addresses = await self._addresses()
        for address in addresses:
            why = refusal(address, self._allow_private)
            if why is not None:
                raise TargetRefused(f"{self._host}: {why}")
        last: Exception | None = None
        for address in addresses:
            tcp = (
                endpoints.TCP6ClientEndpoint if ":" in address else endpoints.TCP4ClientEndpoint
            )(self._reactor, address, self._port, timeout=self._timeout)
            endpoint: Any = tcp
            if self._tls:
                options = optionsForClientTLS(self._host, trustRoot=self._trust)
                endpoint = endpoints.wrapClientTLS(options, tcp)
            try:
                return await endpoint.connect(factory)
            except Exception as e:  # noqa: BLE001 - the next address may answer
                last = e
        assert last is not None
        raise last

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:  # noqa: N803 - Twisted
        return defer.Deferred.fromCoroutine(self._connect(protocolFactory))


@implementer(IAgentEndpointFactory)
class CheckedEndpoints:
    """The Agent's endpoint factory: every connection a ``CheckedEndpoint``."""

    def __init__(self, reactor: Any, *, allow_private: bool, trust: Any, timeout: float) -> None:
        self._reactor = reactor
        self._allow_private = allow_private
        self._trust = trust
        self._timeout = timeout

    def endpointForURI(self, uri: URI) -> CheckedEndpoint:  # noqa: N802 - Twisted's name
        scheme = uri.scheme.decode("ascii")
        if scheme not in ("http", "https"):
            raise TargetRefused(f"scheme {scheme!r} is not http or https")
        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else str(uri.host)
        return CheckedEndpoint(
            self._reactor,
            host.strip("[]"),
            uri.port,
            tls=scheme == "https",
            trust=self._trust,
            allow_private=self._allow_private,
            timeout=self._timeout,
        )


def trust_root(ca_bundle: str) -> Any:
    """The CAs https:// subscribers are verified against: the PEM file ``ca_bundle``,
    or the platform's when it is empty."""
    from twisted.internet import ssl

    if not ca_bundle:
        return ssl.platformTrust()
    with open(ca_bundle, "rb") as f:
        pem = f.read()
    certs = _split_pem(pem)
    if not certs:
        raise ValueError(f"ca_bundle: no certificate in {ca_bundle}")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(c) for c in certs])


def _split_pem(pem: bytes) -> Sequence[bytes]:
    end = b"-----END CERTIFICATE-----"
    parts = [p.strip() + b"\n" + end for p in pem.split(end) if b"BEGIN CERTIFICATE" in p]
    return [p[p.index(b"-----BEGIN") :] for p in parts]
