"""TLS for any listener: a ``tls`` table turns a plain endpoint into a TLS one.

Endpoint strings cannot say everything an operator needs (a client CA, a minimum
version), so the TLS table does, and Twisted's ``CertificateOptions`` does the work: no
hand-rolled cipher lists, the library's secure defaults.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

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
    )


def wrap(factory: IProtocolFactory, tls: TLSConfig) -> IProtocolFactory:
    """``factory`` behind TLS with the options of ``tls``."""
    return TLSMemoryBIOFactory(certificate_options(tls), False, factory)
