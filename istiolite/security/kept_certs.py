"""Workload certificates that survive a restart of istiolite.

istiod never holds a workload's key (the sidecar's agent does), so restarting it changes no
certificate. istiolite sends `default` (key and chain) over SDS itself; without this, a restart
would give every proxy a new key at once. With a CA directory, each certificate issued is also
written to `<ca-dir>/workload-certs/` (directory 0700, files 0600, next to the CA's own key,
which can mint any identity anyway), and the first certificate asked for an identity after a
start is the kept one when it still chains to the trust bundle, names that identity and has at
least a quarter of its life left. Only that first one: rotations and root changes always sign
anew. Then a reconnecting Delta proxy, which says which `default` version it holds, is sent
nothing: same chain, same key, same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from istiolite.logs import get_logger
from istiolite.security.authority import CertificateAuthority, IssuedCertificate
from istiolite.security.identity import Identity

log = get_logger("kept-certs")

MIN_REMAINING = 0.25  # of the certificate's lifetime, for it to be reused after a restart
MIN_REMAINING_ABSOLUTE = timedelta(minutes=2)
MAX_FILE_BYTES = 64 * 1024
_KEY_BEGIN = b"-----BEGIN PRIVATE KEY-----"


class KeptCertificates:
    """A CertificateAuthority that keeps what the wrapped CA issues, and reuses it once."""

    def __init__(self, ca: CertificateAuthority, directory: Path) -> None:
        self._ca = ca
        self.trust_domain = ca.trust_domain
        self.directory = directory
        self._served: set[Identity] = set()

    def __getattr__(self, name: str) -> object:  # on_change, sign_csr, ...: the CA's own
        return getattr(self._ca, name)

    def trust_bundle(self) -> bytes:
        return self._ca.trust_bundle()

    async def sign_csr(
        self, csr_pem: bytes, identity: Identity, ttl: timedelta | None = None
    ) -> list[bytes]:
        return await self._ca.sign_csr(csr_pem, identity, ttl)

    def _path(self, identity: Identity) -> Path:
        digest = hashlib.sha256(identity.spiffe_uri.encode()).hexdigest()[:32]
        return self.directory / f"{digest}.pem"

    async def issue(self, identity: Identity, ttl: timedelta | None = None) -> IssuedCertificate:
        if identity not in self._served:
            self._served.add(identity)
            kept = await asyncio.to_thread(self._load, identity)
            if kept is not None:
                log.info("workload certificate kept from before the restart",
                         identity=str(identity), serial=format(kept.serial, "x"))  # fmt: skip
                return kept
        issued = await self._ca.issue(identity, ttl)
        try:
            await asyncio.to_thread(self._store, identity, issued)
        except OSError as err:  # still served; only a restart will sign anew
            log.warning("workload certificate not kept", identity=str(identity), error=str(err))
        return issued

    def _store(self, identity: Identity, issued: IssuedCertificate) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(identity)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(issued.key_pem + issued.chain_pem)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _load(self, identity: Identity) -> IssuedCertificate | None:
        path = self._path(identity)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return self._check(identity, data)
        except (ValueError, TypeError, InvalidSignature) as err:
            log.info("kept workload certificate not reused", identity=str(identity),
                     reason=str(err)[:200])  # fmt: skip
            return None

    def _check(self, identity: Identity, data: bytes) -> IssuedCertificate | None:
        key_end = data.index(b"-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----\n")
        if not data.startswith(_KEY_BEGIN):
            raise ValueError("not a kept certificate file")
        key_pem, chain_pem = data[:key_end], data[key_end:]
        key = serialization.load_pem_private_key(key_pem, password=None)
        chain = x509.load_pem_x509_certificates(chain_pem)
        leaf = chain[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ValueError("key does not match the certificate")
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if san.get_values_for_type(x509.UniformResourceIdentifier) != [identity.spiffe_uri]:
            raise ValueError("certificate names another identity")
        roots = x509.load_pem_x509_certificates(self._ca.trust_bundle())
        for cert, issuer in itertools.pairwise(chain):
            cert.verify_directly_issued_by(issuer)
        top = chain[-1]
        if not any(_issued_by(top, root) for root in roots):
            raise ValueError("certificate does not chain to the current trust bundle")
        now = datetime.now(UTC)
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        remaining = leaf.not_valid_after_utc - now
        if remaining < max(lifetime * MIN_REMAINING, MIN_REMAINING_ABSOLUTE):
            raise ValueError("too close to its expiry")
        return IssuedCertificate(
            chain_pem=chain_pem,
            key_pem=key_pem,
            serial=leaf.serial_number,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
