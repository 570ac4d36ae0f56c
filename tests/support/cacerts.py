"""Istio `cacerts` directories for tests: an offline root, an intermediate signing CA, files as
`istioctl`'s Makefile.selfsigned.mk writes them (ca-cert, ca-key, root-cert, cert-chain)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CaCert:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def ca_cert(cn: str, issuer: CaCert | None = None, *, days: int = 365, ca: bool = True) -> CaCert:
    """A CA certificate named `cn`, self-signed or issued by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return CaCert(key, builder.sign(signing_key, hashes.SHA256()))


def write_plugin_dir(directory: Path, *, intermediate_days: int = 365) -> tuple[CaCert, CaCert]:
    """root → intermediate; the intermediate signs. Returns (root, intermediate)."""
    root = ca_cert("istiolite test root")
    intermediate = ca_cert("istiolite test intermediate", root, days=intermediate_days)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "root-cert.pem").write_bytes(root.pem)
    (directory / "ca-cert.pem").write_bytes(intermediate.pem)
    (directory / "cert-chain.pem").write_bytes(intermediate.pem + root.pem)
    fd = os.open(directory / "ca-key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(intermediate.key_pem)
    return root, intermediate
