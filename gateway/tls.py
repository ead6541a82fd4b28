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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
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
    except (SSL.Error, crypto.Error, ValueError, VerifyError) as e:
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


class _HandshakeDeadline(BufferingTLSTransport):
    """Twisted's TLS protocol, aborted unless its handshake is done within the factory's
    ``handshake_timeout``.

    A subclass rather than a wrapper around the application protocol: autobahn (WSS)
    wants its transport to be the TLS protocol itself. The handshake counts as done once
    the peer's Finished message has arrived (``get_peer_finished``: the last message of
    a handshake, full or resumed, as the server sees it)."""

    factory: HandshakeDeadlineFactory
    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        self._deadline = self.factory.clock.callLater(self.factory.timeout, self._expired)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._deadline is not None and self._handshaken():
            self._cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel()
        super().connectionLost(reason)

    def _handshaken(self) -> bool:
        return self.getHandle().get_peer_finished() is not None

    def _cancel(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _expired(self) -> None:
        self._deadline = None
        if not self._handshaken():
            self.abortConnection()


class HandshakeDeadlineFactory(TLSMemoryBIOFactory):
    """TLS on a server listener, with a deadline for the handshake."""

    protocol = _HandshakeDeadline

    def __init__(
        self,
        options: Any,
        factory: IProtocolFactory,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        super().__init__(options, False, factory, clock)
        self.certificates = options
        self.clock = clock
        self.timeout = timeout


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """The ALPN protocol of a connection: the listener's first one the client offers, else
    none at all (the handshake goes on, as with a server that has no ALPN).

    Twisted's own callback answers "no overlap" with an internal_error alert, which cuts
    off every client that offers ALPN to a listener whose protocol has no ALPN name (STOMP:
    a client offering ``stomp`` or ``h2`` could not connect) or names others.
    """
    tls_protocol = connection.get_app_data()
    wrapped = tls_protocol.factory.wrappedFactory
    negotiation = IProtocolNegotiationFactory(wrapped, None)
    ours = list(negotiation.acceptableProtocols()) if negotiation is not None else []
    for name in ours:
        if name in offered:
            return name
    return SSL.NO_OVERLAPPING_PROTOCOLS


@dataclass(frozen=True)
class CertificateInfo:
    """What the start-up log, ``qgate status`` and the expiry metric say of a certificate."""

    subject: str
    names: tuple[str, ...]
    not_after: float

    def days_left(self, now: float) -> float:
        return (self.not_after - now) / 86400


def certificate_info(path: str) -> CertificateInfo:
    try:
        cert = x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError as e:
        raise ConfigError(f"tls.certificate: {path!r} does not load: {e}") from None
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    subject = str(cn[0].value) if cn else cert.subject.rfc4514_string()
    return CertificateInfo(subject, names, cert.not_valid_after_utc.timestamp())


def _context(tls: TLSConfig) -> SSL.Context:
    # The options build their context once and keep it: this callback replaces Twisted's.
    context = certificate_options(tls).getContext()
    context.set_alpn_select_callback(_select_alpn)
    return context


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableCertificates:
    """A TLS listener's certificates, loaded again by ``reload`` (SIGHUP, ``qgate
    reload``): each new connection takes the contexts of the moment, while open ones keep
    the ``SSL.Context`` they started with, so a reload drops nobody.

    ``tls.sni`` adds certificates chosen by the name a client asks for (SNI): each serves
    the DNS names of its subjectAltName; any other name, or none, gets the main one."""

    def __init__(self, tls: TLSConfig) -> None:
        self.tls = tls
        self.load()

    def load(self) -> None:
        """Read every certificate and key again; a file that does not load raises
        ConfigError and the contexts in use stay as they were."""
        main = _context(self.tls)
        by_name: dict[str, SSL.Context] = {}
        infos = [certificate_info(self.tls.certificate)]
        for extra in self.tls.sni:
            tls = replace(self.tls, certificate=extra.certificate, key=extra.key, chain="")
            info = certificate_info(extra.certificate)
            context = _context(tls)
            for name in info.names:
                by_name.setdefault(name.lower(), context)
            infos.append(info)
        main.set_tlsext_servername_callback(self._pick)
        self._main, self._by_name = main, by_name
        self.certificates = tuple(infos)

    def _pick(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if name:
            chosen = self._by_name.get(name.decode("ascii", "replace").lower())
            if chosen is not None:
                connection.set_context(chosen)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802, N803
        return SSL.Connection(self._main, None)


def wrap(
    factory: IProtocolFactory, tls: TLSConfig | ReloadableCertificates, clock: IReactorTime
) -> HandshakeDeadlineFactory:
    """``factory`` behind TLS with the certificates of ``tls``, and a handshake deadline."""
    certificates = tls if isinstance(tls, ReloadableCertificates) else ReloadableCertificates(tls)
    return HandshakeDeadlineFactory(
        certificates, factory, clock, certificates.tls.handshake_timeout
    )
