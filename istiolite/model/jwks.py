"""JSON Web Key Sets: the public keys a RequestAuthentication's jwtRule verifies tokens with.

A key set comes inline (`jwks`) or from a `jwksUri` that istiolite fetches (sources/jwks.py) and
keeps in the store as a `JwksKeySet`. Either way it is checked here, bounded, and reduced to the
public members Envoy needs, so a private key pasted by mistake never reaches a proxy's config
(and so CSDS or a config dump).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from istiolite.model.meta import ObjectMeta
from istiolite.model.validation import ValidationError, clip

# Kind of the store objects the JWKS fetcher writes (one per fetched URI; cluster-scoped).
JWKS_KIND = "JwksKeySet"
# An inline set sits in a Kubernetes object (≤ 1.5 MiB); a fetched one is capped by the fetcher.
MAX_INLINE_BYTES = 64 * 1024
MAX_FETCHED_BYTES = 1024 * 1024
MAX_KEYS = 256
MAX_URI_LENGTH = 2048  # the CRD's maxLength
# Members per key type that verification uses (RFC 7517/7518/8037); everything else in a key
# (the private parts d, p, q, dp, dq, qi, oth; x5c, …) is left out of what Envoy gets.
_PUBLIC_MEMBERS: dict[str, tuple[str, ...]] = {
    "RSA": ("n", "e"),
    "EC": ("crv", "x", "y"),
    "OKP": ("crv", "x"),
    "oct": ("k",),  # HMAC: the shared secret is the key itself
}
_COMMON_MEMBERS = ("kty", "kid", "alg", "use")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")

# istiod's fake key set: a public RSA key whose private half was discarded, inlined for a jwksUri
# whose keys are not known (yet), so every token fails (401) instead of the filter being refused.
PUBLIC_ONLY_JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "RSA",
                "e": "AQAB",
                "n": (
                    "0xObjM0UvS_oaazjpEYlAbwctEJ4L8pH3OuTb7qth7gUwqet-EzQB4dgFdvSdMgrLnSncQGR"
                    "jpEYz3F3viIbH-3EN3TxSlPNviHxeOdyiBVfumN8dMxbLvVJUpfNOnvmMxJcl-8NNjAwcOjk"
                    "4otSALaYgYYyOPyvKtgVdrQr-FoubWX4yrjxW-MJ2-7OBeepUUNOsVwGV23YX03sVkkyvY3o"
                    "tRflkBcY3_HKpBxJl9wk2GyOShN4_PNUF9-vwfnvOXMbCDX-w4PTef4geeb_GiT40YCKHTKM"
                    "SPVanGRn5GExIWmki-mmqh94-mPTJyBR74ShspL3BxPZitDL574T1w"
                ),
            }
        ]
    },
    separators=(",", ":"),
)


@dataclass(frozen=True, slots=True)
class KeySet:
    """A checked key set: `text` is what Envoy gets (canonical JSON, public members only)."""

    text: str
    key_count: int
    # Which keys held private material (left out) or are symmetric (kept: HMAC needs them).
    notes: tuple[str, ...] = ()


def parse_jwks(text: str, where: str, *, max_bytes: int = MAX_INLINE_BYTES) -> KeySet:
    """Check a JWK Set (`{"keys": [...]}`) and keep only what verification uses."""
    if len(text.encode()) > max_bytes:
        raise ValidationError(where, f"the key set is larger than {max_bytes} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValidationError(where, f"is not a JSON Web Key Set: {clip(str(err), 120)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValidationError(where, 'is not a JSON Web Key Set: it needs a "keys" list')
    keys = doc["keys"]
    if not keys:
        raise ValidationError(where, "the key set holds no keys")
    if len(keys) > MAX_KEYS:
        raise ValidationError(where, f"the key set holds {len(keys)} keys; at most {MAX_KEYS}")
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, key in enumerate(keys):
        public, note = _public_key(key, f"{where}: keys[{i}]")
        out.append(public)
        if note:
            notes.append(f"keys[{i}] {note}")
    return KeySet(
        json.dumps({"keys": out}, sort_keys=True, separators=(",", ":")), len(out), tuple(notes)
    )


def _public_key(key: Any, where: str) -> tuple[dict[str, Any], str]:
    if not isinstance(key, dict):
        raise ValidationError(where, "must be a JSON object")
    kty = key.get("kty")
    members = _PUBLIC_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        known = ", ".join(_PUBLIC_MEMBERS)
        raise ValidationError(where, f"kty {clip(str(kty))!r} is not one of {known}")
    public: dict[str, Any] = {}
    for name in _COMMON_MEMBERS:
        value = key.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ValidationError(where, f"{name} must be a string")
            public[name] = value
    for name in members:
        value = key.get(name)
        if not isinstance(value, str) or not value:
            raise ValidationError(where, f"a {kty} key needs {name!r}")
        if name != "crv" and not set(value) <= _BASE64URL:
            raise ValidationError(where, f"{name!r} is not base64url")
        public[name] = value
    note = ""
    if kty == "oct":
        note = "is a symmetric (HMAC) key: it is a secret, and shows in proxies' config dumps"
    elif _PRIVATE_MEMBERS & key.keys():
        note = "holds private key material; only its public part is used"
    return public, note


def check_jwks_uri(value: str, where: str) -> str:
    """istiod's ParseJwksURI: an http:// or https:// URL with a host (and a valid port)."""
    if len(value) > MAX_URI_LENGTH:
        raise ValidationError(where, f"is longer than {MAX_URI_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValidationError(where, f"{clip(value)!r} holds whitespace or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as err:
        raise ValidationError(where, f"{clip(value)!r} is not a valid URL: {err}") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(
            where, f"{clip(value)!r}: URI scheme {parts.scheme!r} is not supported (http, https)"
        )
    if not parts.hostname:
        raise ValidationError(where, f"{clip(value)!r} has no host")
    return value


@dataclass(frozen=True, slots=True)
class JwksKeySet:
    """What the fetcher knows of one jwksUri: the last good key set ("" until one was fetched)
    and, while fetching fails, why. Kept in the store under (JWKS_KIND, "", uri)."""

    meta: ObjectMeta
    uri: str
    keys: str = ""  # KeySet.text of the last good fetch
    error: str = ""  # the last fetch's failure ("" when it succeeded)
