"""Kubernetes Secret, read only for TLS credentials (Gateway and DestinationRule `credentialName`).

Key material stays inside this object: it is never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import ValidationError, require_mapping

# Istio reads either the kubernetes.io/tls keys or its own generic ones.
CERT_KEYS = ("tls.crt", "cert")
KEY_KEYS = ("tls.key", "key")
CA_KEYS = ("ca.crt", "cacert")
_PAIR = {"tls.crt": "tls.key", "tls.key": "tls.crt", "cert": "key", "key": "cert"}


@dataclass(frozen=True, slots=True)
class TlsCredential:
    certificate_chain: bytes = field(repr=False, default=b"")
    private_key: bytes = field(repr=False, default=b"")
    ca_certificates: bytes = field(repr=False, default=b"")


@dataclass(frozen=True, slots=True)
class Secret:
    meta: ObjectMeta
    type: str
    credential: TlsCredential = field(repr=False)
    problem: str = ""  # why its certificate, key or CA cannot be used ("" if they can)

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def has_key_pair(self) -> bool:
        return bool(self.credential.certificate_chain and self.credential.private_key)

    @property
    def has_ca(self) -> bool:
        return bool(self.credential.ca_certificates)


def _decoded(raw: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    """Key -> (bytes, field path); stringData wins over data, as the API server merges them."""
    out: dict[str, tuple[bytes, str]] = {}
    for key, value in require_mapping(raw.get("data"), "data").items():
        where = f"data.{key}"
        if not isinstance(value, str):
            raise ValidationError(where, "must be a base64 string")
        try:
            out[key] = (base64.b64decode(value, validate=True), where)
        except (binascii.Error, ValueError):
            raise ValidationError(where, "is not valid base64") from None
    for key, value in require_mapping(raw.get("stringData"), "stringData").items():
        where = f"stringData.{key}"
        if not isinstance(value, str):
            raise ValidationError(where, "must be a string")
        out[key] = (value.encode(), where)
    return out


def _first(data: dict[str, tuple[bytes, str]], keys: tuple[str, ...]) -> tuple[bytes, str]:
    for key in keys:
        if key in data:
            return data[key]
    return b"", ""


def _certificates(pem: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValidationError(where, "is not a PEM certificate (chain)") from None
    return certs


def _pair_problem(cert: bytes, cert_at: str, key: bytes, key_at: str) -> str:
    """Why a certificate and key cannot serve TLS ("" when they can). Never quotes the key."""
    if bool(cert) != bool(key):
        present = cert_at or key_at
        prefix, _, name = present.partition(".")
        return f"{prefix}.{_PAIR[name]}: is required with {present}"
    if not cert:
        return ""
    try:
        leaf = _certificates(cert, cert_at)[0]
    except ValidationError as err:
        return str(err)
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return f"{key_at}: is not an unencrypted PEM private key"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, spki) != (
        leaf.public_key().public_bytes(serialization.Encoding.DER, spki)
    ):
        return f"{key_at}: does not match the certificate in {cert_at}"
    return ""


def parse_secret(raw: dict[str, Any]) -> Secret:
    """As istiod, a Secret's content is judged only when something uses it: an unusable
    certificate is recorded in `problem` (and reported by whoever references the Secret), not
    a reason to reject the object. Only what the API server itself refuses is an error."""
    # Annotations are dropped: kubectl's last-applied-configuration holds the whole Secret,
    # key included, and nothing here needs them.
    meta = replace(parse_meta(raw, namespaced=True), annotations={})
    kind = raw.get("type") or "Opaque"
    if not isinstance(kind, str):
        raise ValidationError("type", "must be a string")
    data = _decoded(raw)
    if kind == "kubernetes.io/tls" and not ("tls.crt" in data and "tls.key" in data):
        raise ValidationError("data", "a kubernetes.io/tls Secret needs tls.crt and tls.key")
    cert, cert_at = _first(data, CERT_KEYS)
    key, key_at = _first(data, KEY_KEYS)
    ca, ca_at = _first(data, CA_KEYS)
    problems = []
    problem = _pair_problem(cert, cert_at, key, key_at)
    if problem:
        problems.append(problem)
        cert = key = b""
    if ca:
        try:
            _certificates(ca, ca_at)
        except ValidationError as err:
            problems.append(str(err))
            ca = b""
    return Secret(
        meta=meta,
        type=kind,
        credential=TlsCredential(cert, key, ca),
        problem="; ".join(problems),
    )
