"""The demo mesh's token authority: an EC P-256 key that mints per-pod service-account JWTs
shaped like Kubernetes projected tokens, and its public key for `serve --token-issuer-key`."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://istiolite.demo.local"
AUDIENCE = "istio-ca"
LIFETIME = 24 * 3600  # seconds; the demo runs for less than a day


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Holds the signing key in memory only; publishes the public half."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.kid = _b64url(
            self._key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )[-16:]

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def write_public_key(self, path: Path) -> Path:
        path.write_bytes(self.public_pem())
        return path

    def mint(
        self,
        namespace: str,
        service_account: str,
        pod: str,
        *,
        lifetime: int = LIFETIME,
        audiences: tuple[str, ...] = (AUDIENCE,),
        now: float | None = None,
    ) -> str:
        """A projected service-account token for a pod: iss, sub, aud, exp/iat/nbf and the
        `kubernetes.io` claims (namespace, pod, serviceaccount)."""
        issued = int(time.time() if now is None else now)
        claims = {
            "aud": list(audiences),
            "exp": issued + lifetime,
            "iat": issued,
            "nbf": issued,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": pod, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, pod))},
                "serviceaccount": {
                    "name": service_account,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{service_account}")),
                },
            },
        }
        header = {"alg": "ES256", "kid": self.kid, "typ": "JWT"}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
