"""Istio's ServerTLSSettings: the `tls` of a Gateway server and of a Sidecar ingress listener.

One parser for both; each caller adds its own rules (a Sidecar refuses Secrets and some modes,
see `istiolite.model.sidecar`) before handing the mapping over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from istiolite.model.validation import (
    ValidationError,
    optional_bool,
    require_list,
    require_mapping,
    require_str,
)

TLS_MODES = (
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
)
TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
TLS_VERSIONS = ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")


@dataclass(frozen=True, slots=True)
class ServerTLS:
    https_redirect: bool = False
    mode: str = ""
    credential_name: str = ""
    server_certificate: str = ""
    private_key: str = field(default="", repr=False)
    ca_certificates: str = ""
    subject_alt_names: tuple[str, ...] = ()
    min_protocol_version: str = ""
    max_protocol_version: str = ""
    cipher_suites: tuple[str, ...] = ()
    # credentialNames / tlsCertificates beyond the first (e.g. an RSA and an ECDSA certificate).
    more_credentials: tuple[str, ...] = ()
    more_certificates: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def terminates(self) -> bool:
        return self.mode in TERMINATING_MODES

    @property
    def credential_names(self) -> tuple[str, ...]:
        return (self.credential_name, *self.more_credentials) if self.credential_name else ()

    @property
    def certificate_files(self) -> tuple[tuple[str, str], ...]:
        first = ((self.server_certificate, self.private_key),) if self.server_certificate else ()
        return first + self.more_certificates


def _tls_version(raw: Any, where: str) -> str:
    value = require_str(raw, where)
    if value and value not in TLS_VERSIONS:
        raise ValidationError(where, f"{value!r} is not one of {', '.join(TLS_VERSIONS)}")
    return value


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    return tuple(
        require_str(v, f"{where}[{i}]", required=True)
        for i, v in enumerate(require_list(raw, where))
    )


def parse_server_tls(raw: Any, where: str, *, secrets: bool = True) -> ServerTLS | None:
    """`tls` at `where`, validated as Istio does (None when absent). An omitted mode is
    PASSTHROUGH. A terminating mode needs a credential Secret or a certificate and key from files
    (MUTUAL and OPTIONAL_MUTUAL from files a CA too).

    `secrets=False`: the certificate can only come from files (a Sidecar ingress listener, whose
    caller has refused credentialName, credentialNames and tlsCertificates); messages then do not
    suggest a credentialName."""
    if raw is None:
        return None
    t = require_mapping(raw, where)
    # Istio's enum zero value: an omitted mode is PASSTHROUGH (not SIMPLE, a common surprise).
    mode = require_str(t.get("mode"), f"{where}.mode") or "PASSTHROUGH"
    if mode not in TLS_MODES:
        raise ValidationError(f"{where}.mode", f"{mode!r} is not one of {', '.join(TLS_MODES)}")
    credential = require_str(t.get("credentialName"), f"{where}.credentialName")
    names = _strings(t.get("credentialNames"), f"{where}.credentialNames")
    if names and credential:
        raise ValidationError(f"{where}.credentialNames", "cannot be combined with credentialName")
    if len(names) > 2:
        raise ValidationError(
            f"{where}.credentialNames", "takes at most 2 names (an RSA and an ECDSA certificate)"
        )
    cert = require_str(t.get("serverCertificate"), f"{where}.serverCertificate")
    key = require_str(t.get("privateKey"), f"{where}.privateKey")
    ca = require_str(t.get("caCertificates"), f"{where}.caCertificates")
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(require_list(t.get("tlsCertificates"), f"{where}.tlsCertificates")):
        at = f"{where}.tlsCertificates[{i}]"
        c = require_mapping(item, at)
        pairs.append(
            (
                require_str(c.get("serverCertificate"), f"{at}.serverCertificate", required=True),
                require_str(c.get("privateKey"), f"{at}.privateKey", required=True),
            )
        )
        ca = ca or require_str(c.get("caCertificates"), f"{at}.caCertificates")
    if pairs and (cert or key):
        raise ValidationError(
            f"{where}.tlsCertificates", "cannot be combined with serverCertificate and privateKey"
        )
    if pairs:
        (cert, key), pairs = pairs[0], pairs[1:]
    credential = credential or (names[0] if names else "")
    tls = ServerTLS(
        https_redirect=bool(optional_bool(t.get("httpsRedirect"), f"{where}.httpsRedirect")),
        mode=mode,
        credential_name=credential,
        more_credentials=names[1:],
        server_certificate=cert,
        private_key=key,
        more_certificates=tuple(pairs),
        ca_certificates=ca,
        subject_alt_names=_strings(t.get("subjectAltNames"), f"{where}.subjectAltNames"),
        min_protocol_version=_tls_version(
            t.get("minProtocolVersion"), f"{where}.minProtocolVersion"
        ),
        max_protocol_version=_tls_version(
            t.get("maxProtocolVersion"), f"{where}.maxProtocolVersion"
        ),
        cipher_suites=_strings(t.get("cipherSuites"), f"{where}.cipherSuites"),
    )
    if tls.terminates:
        # As Istio's validation: a credential Secret, or a certificate and key from files.
        if tls.credential_name and tls.server_certificate and tls.private_key:
            raise ValidationError(
                f"{where}.credentialName",
                "cannot be combined with serverCertificate and privateKey",
            )
        if not tls.credential_name:
            required = f"is required for mode {tls.mode}"
            if secrets:
                required += " without credentialName"
            if not tls.server_certificate:
                raise ValidationError(f"{where}.serverCertificate", required)
            if not tls.private_key:
                raise ValidationError(f"{where}.privateKey", required)
            if tls.mode != "SIMPLE" and not tls.ca_certificates:
                raise ValidationError(f"{where}.caCertificates", required)
    # TLS_AUTO on either side means "Envoy's default": nothing to compare.
    if (
        tls.min_protocol_version not in ("", "TLS_AUTO")
        and tls.max_protocol_version not in ("", "TLS_AUTO")
        and TLS_VERSIONS.index(tls.max_protocol_version)
        < TLS_VERSIONS.index(tls.min_protocol_version)
    ):
        raise ValidationError(f"{where}.maxProtocolVersion", "is lower than minProtocolVersion")
    return tls
