"""A small real CA for the SDS tests (real ECDSA keys, real X.509 with a SPIFFE URI SAN), and an
authenticator mapping bearer tokens to identities, for protocol tests that need an identity
without a Kubernetes API server. The mesh's own CA and authenticator are tested in
tests/unit/security and tests/integration."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from istiolite.security.authority import IssuedCertificate
from istiolite.security.identity import Identity


def _root(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class SimpleCA:
    """Implements istiolite.security.authority.CertificateAuthority (no CSR signing)."""

    def __init__(self, trust_domain: str = "cluster.local", *, fail: bool = False) -> None:
        self.trust_domain = trust_domain
        self.fail = fail
        self._key, self._cert = _root("sds test CA")
        self._old_roots: list[x509.Certificate] = []
        self._callbacks: list[Callable[[], None]] = []
        self.issued: list[tuple[Identity, IssuedCertificate]] = []

    @property
    def root(self) -> x509.Certificate:
        return self._cert

    def trust_bundle(self) -> bytes:
        certs = [self._cert, *self._old_roots]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def rotate_root(self) -> None:
        """A new signing root; the old one stays in the bundle (step one of a root rotation)."""
        self._old_roots.append(self._cert)
        self._key, self._cert = _root("sds test CA (new)")
        for callback in self._callbacks:
            callback()

    async def issue(self, identity: Identity, ttl: datetime.timedelta | None = None) -> Any:
        if self.fail:
            raise RuntimeError("the signing key is unavailable")
        issued = await asyncio.to_thread(self._issue, identity, ttl or datetime.timedelta(hours=1))
        self.issued.append((identity, issued))
        return issued

    def _issue(self, identity: Identity, ttl: datetime.timedelta) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=2))
            .not_valid_after(now + ttl)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.spiffe_uri)]),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(
            chain_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    async def sign_csr(
        self, csr_pem: bytes, identity: Identity, ttl: datetime.timedelta | None = None
    ) -> list[bytes]:
        raise NotImplementedError("not needed by the SDS tests")


class AuthenticationFailed(Exception):
    pass


class TokenAuthenticator:
    """`authorization: Bearer <token>` metadata -> the identity the test gave that token."""

    def __init__(self, tokens: Mapping[str, Identity]) -> None:
        self.tokens = dict(tokens)

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                token = value.removeprefix("Bearer ")
                if token in self.tokens:
                    return self.tokens[token]
                raise AuthenticationFailed("the token is not valid")
        raise AuthenticationFailed("no bearer token")


def certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem)[0]


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
