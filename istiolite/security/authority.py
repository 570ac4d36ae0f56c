"""What the rest of istiolite needs from the mesh CA (implemented in `security.ca`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from istiolite.security.identity import Identity


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A workload certificate with its private key. The key never goes to a log or debug page."""

    chain_pem: bytes  # leaf first, then intermediates (not the root)
    key_pem: bytes  # PKCS#8 PEM
    serial: int
    not_before: datetime
    not_after: datetime

    def __repr__(self) -> str:  # never the key
        return f"IssuedCertificate(serial={self.serial:x}, not_after={self.not_after.isoformat()})"


class CertificateAuthority(Protocol):
    trust_domain: str

    def trust_bundle(self) -> bytes:
        """Every root a workload should trust, PEM (more than one while a root is rotated)."""
        ...

    async def issue(self, identity: Identity, ttl: timedelta | None = None) -> IssuedCertificate:
        """A fresh key and a certificate for `identity`, signed off the event loop."""
        ...

    async def sign_csr(
        self, csr_pem: bytes, identity: Identity, ttl: timedelta | None = None
    ) -> list[bytes]:
        """Verify the CSR's signature and sign its key for `identity` (never the CSR's SAN).
        Returns the chain leaf first, root last. ValueError when the CSR is unusable."""
        ...
