"""Real X.509 test certificates: the demo's small CA (ECDSA P-256) serves the tests too; here
also revocation lists and the ssl contexts that serve or trust its certificates."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from istiolite.demo.certs import CertificateAuthority, KeyPair, tls_secret

__all__ = [
    "CertificateAuthority",
    "KeyPair",
    "client_context",
    "revocation_list",
    "server_context",
    "spiffe_pair",
    "tls_secret",
]


def revocation_list(ca: CertificateAuthority, *revoked: KeyPair) -> bytes:
    """A PEM CRL signed by `ca`, valid for a day, revoking these certificates (none: empty)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
    )
    for pair in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(x509.load_pem_x509_certificate(pair.cert_pem).serial_number)
            .revocation_date(now - datetime.timedelta(minutes=1))
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def spiffe_pair(ca: CertificateAuthority, uri: str) -> KeyPair:
    """A workload certificate as the mesh CA makes one: the SPIFFE URI as its only SAN
    (critical), empty subject, client and server use; for mTLS peers in tests."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=2))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _load_pair(ctx: ssl.SSLContext, pair: KeyPair) -> None:
    # ssl loads keys only from files: a private directory, gone once loaded.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = pair.write(Path(tmp), "pair")
        ctx.load_cert_chain(cert, key)


def server_context(
    pair: KeyPair, *, client_ca: CertificateAuthority | None = None
) -> ssl.SSLContext:
    """A server's context presenting `pair`; with `client_ca`, clients must present a
    certificate it signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_pair(ctx, pair)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert_pem.decode())
    return ctx


def client_context(ca: CertificateAuthority, client: KeyPair | None = None) -> ssl.SSLContext:
    """A client's context trusting `ca` only (and checking the server's name); presenting
    `client` when given."""
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if client is not None:
        _load_pair(ctx, client)
    return ctx
