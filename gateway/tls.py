"""TLS for any listener: a ``tls`` table turns a plain endpoint into a TLS one.

Endpoint strings cannot say everything an operator needs (a client CA, a minimum
version, the cipher suites), so the TLS table does, and Twisted's ``CertificateOptions``
does the work. TLS 1.2 gets only forward-secret AEAD suites unless ``ciphers`` (an OpenSSL
cipher string, expanded by ``AcceptableCiphers.fromOpenSSLCipherString``) says otherwise;
TLS 1.3 suites are all AEAD and forward-secret, and stay OpenSSL's.

Every TLS connection must finish its handshake within ``handshake_timeout`` seconds or it
is dropped: a peer that connects and sends nothing (or dribbles a ClientHello) holds no
descriptor for long.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from qgate.gateway.config import ConfigError, TLSConfig

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"tls.{what}: cannot read {path!r}: {e.strerror}") from None


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [block + marker + b"\n" for block in data.split(marker) if b"BEGIN" in block]


def acceptable_ciphers(cipher_string: str, where: str = "tls.ciphers") -> Any:
    """The ``AcceptableCiphers`` of an OpenSSL cipher string; ConfigError if it names no
    suite this OpenSSL knows (the TLS 1.3 suites do not count: they are always on)."""
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(cipher_string.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ConfigError(
            f"{where}: no TLS 1.2 cipher suite matches {cipher_string!r} (an OpenSSL cipher "
            "string such as 'ECDHE+AESGCM:ECDHE+CHACHA20')"
        ) from None
    return ssl.AcceptableCiphers.fromOpenSSLCipherString(cipher_string)


def certificate_options(tls: TLSConfig) -> ssl.CertificateOptions:
    """Server-side TLS options for ``tls``; raises ConfigError naming what is wrong."""
    try:
        certificate = ssl.PrivateCertificate.loadPEM(
            _read(tls.certificate, "certificate") + b"\n" + _read(tls.key, "key")
        )
    except (SSL.Error, ValueError, VerifyError) as e:
        raise ConfigError(f"tls: certificate and key do not load or match: {e}") from None
    chain = []
    if tls.chain:
        chain = [
            ssl.Certificate.loadPEM(block).original
            for block in _pem_blocks(_read(tls.chain, "chain"))
        ]
    ca_certs = []
    if tls.client_ca:
        ca_certs = [
            ssl.Certificate.loadPEM(block).original
            for block in _pem_blocks(_read(tls.client_ca, "client_ca"))
        ]
        if not ca_certs:
            raise ConfigError(f"tls.client_ca: no certificate in {tls.client_ca!r}")
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain or None,
        verify=bool(ca_certs),
        caCerts=ca_certs or None,
        requireCertificate=bool(ca_certs),
        raiseMinimumTo=_VERSIONS[tls.min_version],
        acceptableCiphers=acceptable_ciphers(tls.ciphers),
    )


@implementer(IHandshakeListener)
class _HandshakeDeadline(ProtocolWrapper):
    """Between the TLS layer and the application protocol: aborts the connection unless
    the TLS layer reports a completed handshake within the factory's timeout."""

    factory: HandshakeDeadlineFactory
    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        self._deadline = self.factory.clock.callLater(self.factory.timeout, self._expired)
        super().makeConnection(transport)

    def handshakeCompleted(self) -> None:
        self._cancel()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel()
        super().connectionLost(reason)

    def _cancel(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _expired(self) -> None:
        self._deadline = None
        self.transport.abortConnection()  # type: ignore[union-attr]


class HandshakeDeadlineFactory(WrappingFactory[_HandshakeDeadline]):
    """Wraps the application factory of a TLS listener (see ``_HandshakeDeadline``)."""

    protocol = _HandshakeDeadline

    def __init__(self, factory: IProtocolFactory, clock: IReactorTime, timeout: float) -> None:
        super().__init__(factory)
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr: IAddress | None) -> Any:
        inner: IProtocol | None = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


def wrap(factory: IProtocolFactory, tls: TLSConfig, clock: IReactorTime) -> IProtocolFactory:
    """``factory`` behind TLS with the options of ``tls``, and a handshake deadline."""
    deadline = HandshakeDeadlineFactory(factory, clock, tls.handshake_timeout)
    return TLSMemoryBIOFactory(certificate_options(tls), False, deadline, clock)
