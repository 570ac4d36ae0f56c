"""A token authority without Kubernetes: service-account JWTs checked against a public key.

Beside TokenReview (which asks a Kubernetes API), `serve --token-issuer-key PATH` trusts tokens
signed by one issuer's key, the way kube-apiserver itself checks its projected tokens
(`--service-account-key-file`). PATH is a PEM public key (or certificate) or a JWK Set; the
tokens must name `--token-issuer` in `iss`, carry `istio-ca` in `aud`, be within `nbf`/`exp`
(a small clock skew allowed), and name the account as a projected token does:
`sub: system:serviceaccount:<ns>:<sa>` (and, when present, the same in `kubernetes.io`).

Only ES256 and RS256 are accepted; `none`, HMAC and anything else are refused before any key
is touched. A token is bounded in size before it is decoded. The messages say what is wrong
and never repeat the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from istiolite.security.authn import (
    AUDIENCE,
    MAX_TOKEN_BYTES,
    AuthenticationFailed,
    identity_from_username,
)
from istiolite.security.identity import Identity

# What a real projected token's issuer is; a cluster's own service-account key then works too.
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ALGORITHMS = ("ES256", "RS256")
CLOCK_SKEW = 60.0  # seconds of leeway on exp / nbf / iat, as kube-apiserver allows
MAX_KEY_FILE_BYTES = 256 * 1024
MAX_KEYS = 64
_MIN_RSA_BITS = 2048

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class TokenIssuerError(ValueError):
    """The issuer's key file is unusable; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: PublicKey
    kid: str | None = None

    @property
    def algorithm(self) -> str:
        return "ES256" if isinstance(self.key, ec.EllipticCurvePublicKey) else "RS256"


_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64url(text: str, what: str) -> bytes:
    if not _BASE64URL.issuperset(text):  # the decoder would skip stray characters silently
        raise AuthenticationFailed(f"token {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AuthenticationFailed(f"token {what} is not base64url") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise AuthenticationFailed(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthenticationFailed(f"token {what} is not a JSON object")
    return value


def _check_key(key: object, where: str) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise TokenIssuerError(f"{where}: EC key on {key.curve.name}, ES256 needs P-256")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise TokenIssuerError(f"{where}: RSA key of {key.key_size} bits (< {_MIN_RSA_BITS})")
        return key
    raise TokenIssuerError(f"{where}: not an EC P-256 or RSA public key")


def _jwk_int(jwk: dict[str, Any], member: str, where: str) -> int:
    value = jwk.get(member)
    if not isinstance(value, str) or not value:
        raise TokenIssuerError(f"{where}: member {member!r} missing")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
    except (binascii.Error, ValueError):
        raise TokenIssuerError(f"{where}: member {member!r} is not base64url") from None


def _jwk_key(jwk: Any, where: str) -> VerificationKey | None:
    """The key of one JWK; None for a key not used for signatures we accept (e.g. `use: enc`)."""
    if not isinstance(jwk, dict):
        raise TokenIssuerError(f"{where}: not a JSON object")
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", "") not in ("", *ALGORITHMS):
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenIssuerError(f"{where}: kid is not a string")
    kty = jwk.get("kty")
    key: PublicKey
    try:
        if kty == "EC":
            if jwk.get("crv") != "P-256":
                raise TokenIssuerError(f"{where}: EC key on {jwk.get('crv')!r}, need P-256")
            numbers = ec.EllipticCurvePublicNumbers(
                _jwk_int(jwk, "x", where), _jwk_int(jwk, "y", where), ec.SECP256R1()
            )
            key = numbers.public_key()
        elif kty == "RSA":
            key = rsa.RSAPublicNumbers(
                _jwk_int(jwk, "e", where), _jwk_int(jwk, "n", where)
            ).public_key()
        else:
            return None
    except ValueError as err:
        if isinstance(err, TokenIssuerError):
            raise
        raise TokenIssuerError(f"{where}: invalid key ({err})") from None
    return VerificationKey(_check_key(key, where), kid)


def load_keys(path: Path) -> list[VerificationKey]:
    """The verification keys in `path`: a JWK Set, a PEM public key or a PEM certificate."""
    try:
        data = path.read_bytes()[: MAX_KEY_FILE_BYTES + 1]
    except OSError as err:
        raise TokenIssuerError(f"--token-issuer-key {path}: {err.strerror}") from None
    where = f"--token-issuer-key {path}"
    if len(data) > MAX_KEY_FILE_BYTES:
        raise TokenIssuerError(f"{where}: larger than {MAX_KEY_FILE_BYTES} bytes")
    if data.lstrip().startswith(b"{"):
        try:
            document = json.loads(data)
        except ValueError as err:
            raise TokenIssuerError(f"{where}: not valid JSON ({err})") from None
        raw = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw, list):
            raise TokenIssuerError(f'{where}: a JWK Set needs a "keys" list')
        if len(raw) > MAX_KEYS:
            raise TokenIssuerError(f"{where}: more than {MAX_KEYS} keys")
        keys = [k for i, jwk in enumerate(raw) if (k := _jwk_key(jwk, f"{where} keys[{i}]"))]
    elif b"PRIVATE KEY" in data:
        raise TokenIssuerError(f"{where}: holds a private key; give the public key only")
    elif b"-----BEGIN CERTIFICATE-----" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as err:
            raise TokenIssuerError(f"{where}: unreadable certificate ({err})") from None
        keys = [VerificationKey(_check_key(c.public_key(), where)) for c in certs[:MAX_KEYS]]
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as err:
            raise TokenIssuerError(f"{where}: not a PEM public key or JWK Set ({err})") from None
        keys = [VerificationKey(_check_key(key, where))]
    if not keys:
        raise TokenIssuerError(f"{where}: no ES256 or RS256 signing key in it")
    return keys


class LocalTokenVerifier:
    """Checks service-account JWTs of one issuer against its public keys, without any API."""

    def __init__(
        self,
        issuer: str,
        keys: list[VerificationKey],
        trust_domain: str,
        *,
        clock: Callable[[], float] = time.time,
        skew: float = CLOCK_SKEW,
    ) -> None:
        if not issuer:
            raise TokenIssuerError("--token-issuer: empty issuer name")
        self.issuer = issuer
        self.keys = keys
        self.trust_domain = trust_domain
        self._clock = clock
        self._skew = skew

    @classmethod
    def load(cls, path: Path, issuer: str, trust_domain: str) -> LocalTokenVerifier:
        return cls(issuer, load_keys(path), trust_domain)

    def issued_here(self, token: str) -> bool:
        """Whether the (unverified) token names this issuer: only those are checked here, the
        others go to TokenReview. Cheap and never raises."""
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            return False
        try:
            claims = _json_object(_b64url(token.split(".")[1], "claims"), "claims")
        except AuthenticationFailed:
            return False
        return claims.get("iss") == self.issuer

    def verify(self, token: str) -> Identity:
        """The identity the token proves; AuthenticationFailed saying why not."""
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthenticationFailed(f"token longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthenticationFailed("token is not a JWT (header.claims.signature)")
        header = _json_object(_b64url(parts[0], "header"), "header")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise AuthenticationFailed(
                f"token algorithm {str(algorithm)[:20]!r} refused (accepted: "
                f"{', '.join(ALGORITHMS)})"
            )
        if "crit" in header:
            raise AuthenticationFailed("token header has 'crit' extensions (not supported)")
        signature = _b64url(parts[2], "signature")
        signed = f"{parts[0]}.{parts[1]}".encode()
        self._check_signature(header, algorithm, signed, signature)
        claims = _json_object(_b64url(parts[1], "claims"), "claims")
        return self._check_claims(claims)

    def _check_signature(self, header: dict[str, Any], alg: str, signed: bytes, sig: bytes) -> None:
        kid = header.get("kid")
        candidates = [k for k in self.keys if k.algorithm == alg]
        if isinstance(kid, str) and any(k.kid for k in candidates):
            candidates = [k for k in candidates if k.kid == kid]
        if not candidates:
            raise AuthenticationFailed(
                f"token signed with {alg} (kid {str(kid)[:40]!r}): no such key of issuer "
                f"{self.issuer!r}"
            )
        for candidate in candidates:
            try:
                if isinstance(candidate.key, ec.EllipticCurvePublicKey):
                    if len(sig) != 64:  # JWS ES256: raw r || s, 32 bytes each
                        raise InvalidSignature
                    der = encode_dss_signature(
                        int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
                    )
                    candidate.key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
                else:
                    candidate.key.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                continue
            return
        raise AuthenticationFailed(f"token signature does not verify with issuer {self.issuer!r}")

    def _check_claims(self, claims: dict[str, Any]) -> Identity:
        if claims.get("iss") != self.issuer:
            raise AuthenticationFailed(f"token issuer is not {self.issuer!r}")
        audiences = claims.get("aud")
        if isinstance(audiences, str):
            audiences = [audiences]
        if not isinstance(audiences, list) or AUDIENCE not in audiences:
            raise AuthenticationFailed(f"token is not for audience {AUDIENCE!r}")
        now = self._clock()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthenticationFailed("token has no numeric 'exp' (expiry)")
        if now > exp + self._skew:
            raise AuthenticationFailed("token expired")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise AuthenticationFailed(f"token '{name}' is not a number")
            if value > now + self._skew:
                raise AuthenticationFailed(f"token '{name}' is in the future")
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise AuthenticationFailed("token has no 'sub'")
        identity = identity_from_username(subject, self.trust_domain)
        kube = claims.get("kubernetes.io")
        if kube is not None:
            kube = kube if isinstance(kube, dict) else {}
            account = kube.get("serviceaccount")
            account_name = account.get("name") if isinstance(account, dict) else None
            if (kube.get("namespace"), account_name) != (
                identity.namespace,
                identity.service_account,
            ):
                raise AuthenticationFailed(
                    "token's kubernetes.io namespace/serviceaccount do not match its 'sub'"
                )
        return identity
