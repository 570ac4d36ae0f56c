"""security.istio.io RequestAuthentication (v1, v1beta1): which JWTs the selected workloads
accept, and where the keys that verify them come from. Validated as istiod's
`ValidateRequestAuthentication` and the CRD's rules do, each error naming its field.

Which workloads a policy applies to (istiod's getConfigsForWorkload / ShouldAttachPolicy): the
policies of the workload's namespace and of the root namespace `istio-system`; without
`targetRefs`, those whose `selector.matchLabels` the workload's labels include (no selector: all
of them). `targetRefs` select Kubernetes Gateway API gateways (their pods' label
`gateway.networking.k8s.io/gateway-name`) in the policy's namespace, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from istiolite.model.jwks import KeySet, check_jwks_uri, parse_jwks
from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.sidecar import ROOT_NAMESPACE
from istiolite.model.validation import (
    ValidationError,
    check_header_text,
    clip,
    optional_bool,
    require_list,
    require_mapping,
    require_str,
    require_string_map,
)
from istiolite.model.virtualservice import parse_duration

DEFAULT_TIMEOUT = 5.0  # istiod's, for fetching a jwksUri
MAX_JWT_RULES = 4096  # the CRD's maxItems
MAX_TARGET_REFS = 16
MAX_LOCATIONS = 64  # header/param/cookie locations and claim headers per rule
MAX_SPACE_DELIMITED_CLAIMS = 64
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
_HEADER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class JwtHeader:
    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class ClaimToHeader:
    header: str
    claim: str


@dataclass(frozen=True, slots=True)
class JwtRule:
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: KeySet | None = None  # inline, checked and reduced to public members
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    forward_original_token: bool = False
    timeout: float = DEFAULT_TIMEOUT
    space_delimited_claims: tuple[str, ...] | None = None  # None: not set (istiod's defaults)


@dataclass(frozen=True, slots=True)
class TargetRef:
    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class RequestAuthentication:
    meta: ObjectMeta
    selector: dict[str, str] | None = None  # None: no selector
    target_refs: tuple[TargetRef, ...] = ()
    jwt_rules: tuple[JwtRule, ...] = ()

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"

    def applies_to(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """istiod's ShouldAttachPolicy for a workload (sidecar or gateway) with these labels."""
        if self.namespace not in (namespace, ROOT_NAMESPACE):
            return False
        gateway_name = labels.get(GATEWAY_NAME_LABEL)
        if self.target_refs:
            return (
                gateway_name is not None
                and self.namespace == namespace
                and any(
                    ref.group == GATEWAY_API_GROUP
                    and ref.kind == "Gateway"
                    and ref.name == gateway_name
                    for ref in self.target_refs
                )
            )
        if gateway_name is not None:
            return False  # as istiod: a Gateway API gateway takes only targetRef'd policies
        return all(labels.get(k) == v for k, v in (self.selector or {}).items())

    def unapplied(self) -> list[tuple[str, str]]:
        """Settings that are valid but do nothing here, as (field, message)."""
        out = []
        for i, ref in enumerate(self.target_refs):
            if not (ref.group == GATEWAY_API_GROUP and ref.kind == "Gateway"):
                out.append(
                    (
                        f"spec.targetRefs[{i}]",
                        f"{ref.kind} {ref.name!r} ({ref.group or 'core'}): istiolite applies "
                        "policies only to Kubernetes Gateway API gateways by targetRef (there "
                        "are no waypoints); this reference selects nothing",
                    )
                )
        for i, rule in enumerate(self.jwt_rules):
            if rule.jwks is not None:
                out += [(f"spec.jwtRules[{i}].jwks", note) for note in rule.jwks.notes]
        return out


def parse_request_authentication(raw: dict[str, Any]) -> RequestAuthentication:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    selector: dict[str, str] | None = None
    if spec.get("selector") is not None:
        where = "spec.selector"
        selector = require_string_map(
            require_mapping(spec["selector"], where).get("matchLabels"), f"{where}.matchLabels"
        )
        for key, value in selector.items():
            if not key:
                raise ValidationError(f"{where}.matchLabels", "key must not be empty")
            if "*" in key or "*" in value:
                raise ValidationError(
                    f"{where}.matchLabels.{key}", "wildcard not allowed in label match"
                )
    refs: list[TargetRef] = []
    if spec.get("targetRef") is not None:
        refs.append(_target_ref(spec["targetRef"], "spec.targetRef", meta.namespace))
    raw_refs = require_list(spec.get("targetRefs"), "spec.targetRefs")
    if len(raw_refs) > MAX_TARGET_REFS:
        raise ValidationError("spec.targetRefs", f"at most {MAX_TARGET_REFS} references")
    if spec.get("targetRef") is not None and raw_refs:
        raise ValidationError("spec.targetRefs", "only one of targetRef or targetRefs can be set")
    refs += [
        _target_ref(r, f"spec.targetRefs[{i}]", meta.namespace) for i, r in enumerate(raw_refs)
    ]
    if refs and selector is not None:
        raise ValidationError("spec.selector", "only one of targetRefs or selector can be set")
    raw_rules = require_list(spec.get("jwtRules"), "spec.jwtRules")
    if len(raw_rules) > MAX_JWT_RULES:
        raise ValidationError("spec.jwtRules", f"at most {MAX_JWT_RULES} rules")
    rules = tuple(_jwt_rule(r, f"spec.jwtRules[{i}]") for i, r in enumerate(raw_rules))
    return RequestAuthentication(
        meta=meta, selector=selector, target_refs=tuple(refs), jwt_rules=rules
    )


def _target_ref(raw: Any, where: str, namespace: str) -> TargetRef:
    ref = require_mapping(raw, where)
    group = require_str(ref.get("group"), f"{where}.group")
    kind = require_str(ref.get("kind"), f"{where}.kind", required=True)
    name = require_str(ref.get("name"), f"{where}.name", required=True)
    other = require_str(ref.get("namespace"), f"{where}.namespace")
    if other and other != namespace:
        raise ValidationError(
            f"{where}.namespace", "cross namespace referencing is not currently supported"
        )
    return TargetRef(group, kind, name)


def _strings(value: Any, where: str, what: str, limit: int = MAX_LOCATIONS) -> tuple[str, ...]:
    items = require_list(value, where)
    if len(items) > limit:
        raise ValidationError(where, f"at most {limit} entries")
    out = []
    for i, item in enumerate(items):
        text = require_str(item, f"{where}[{i}]")
        if not text:
            raise ValidationError(f"{where}[{i}]", f"{what} must be a non-empty string")
        out.append(check_header_text(text, f"{where}[{i}]", what))
    return tuple(out)


def _header_name(value: Any, where: str, *, strict: bool) -> str:
    """`strict` (istiod's ValidateStrictHTTPHeaderName): letters, digits, '-' and '_' only;
    else any name Envoy takes (no CR/LF/NUL, no pseudo-header)."""
    text = require_str(value, where, required=True)
    if strict and not set(text) <= _HEADER_CHARS:
        raise ValidationError(
            where, f"header name {clip(text)!r} may hold only letters, digits, '-' and '_'"
        )
    if text.startswith(":"):
        raise ValidationError(where, f"{clip(text)!r}: pseudo-headers cannot be used")
    return check_header_text(text, where, "header name")


def _jwt_rule(raw: Any, where: str) -> JwtRule:
    rule = require_mapping(raw, where)
    presence = require_str(rule.get("presence"), f"{where}.presence")
    if presence and presence not in ("OPTIONAL", "REQUIRED"):
        raise ValidationError(f"{where}.presence", f"{presence!r} is not OPTIONAL or REQUIRED")
    issuer = require_str(rule.get("issuer"), f"{where}.issuer")
    check_header_text(issuer, f"{where}.issuer", "issuer")
    uri_field = "jwksUri" if rule.get("jwksUri") is not None else "jwks_uri"
    jwks_uri = require_str(rule.get(uri_field), f"{where}.{uri_field}")
    if rule.get("jwksUri") is not None and rule.get("jwks_uri") is not None:
        raise ValidationError(f"{where}.jwks_uri", "set only one of jwksUri and jwks_uri")
    if not issuer and not jwks_uri:
        raise ValidationError(f"{where}.issuer", "issuer or jwksUri must be a non-empty string")
    if jwks_uri:
        check_jwks_uri(jwks_uri, f"{where}.{uri_field}")
    jwks_text = require_str(rule.get("jwks"), f"{where}.jwks")
    if jwks_text and jwks_uri:
        raise ValidationError(f"{where}.jwks", "only one of jwks or jwksUri can be set")
    jwks = parse_jwks(jwks_text, f"{where}.jwks") if jwks_text else None
    audiences = _strings(rule.get("audiences"), f"{where}.audiences", "audience")
    headers = []
    raw_headers = require_list(rule.get("fromHeaders"), f"{where}.fromHeaders")
    if len(raw_headers) > MAX_LOCATIONS:
        raise ValidationError(f"{where}.fromHeaders", f"at most {MAX_LOCATIONS} entries")
    for i, item in enumerate(raw_headers):
        at = f"{where}.fromHeaders[{i}]"
        location = require_mapping(item, at)
        name = _header_name(location.get("name"), f"{at}.name", strict=False)
        prefix = require_str(location.get("prefix"), f"{at}.prefix")
        headers.append(JwtHeader(name, check_header_text(prefix, f"{at}.prefix", "prefix")))
    claims = []
    raw_claims = require_list(rule.get("outputClaimToHeaders"), f"{where}.outputClaimToHeaders")
    if len(raw_claims) > MAX_LOCATIONS:
        raise ValidationError(f"{where}.outputClaimToHeaders", f"at most {MAX_LOCATIONS} entries")
    for i, item in enumerate(raw_claims):
        at = f"{where}.outputClaimToHeaders[{i}]"
        pair = require_mapping(item, at)
        header = _header_name(pair.get("header"), f"{at}.header", strict=True)
        claim = require_str(pair.get("claim"), f"{at}.claim", required=True)
        claims.append(ClaimToHeader(header, check_header_text(claim, f"{at}.claim", "claim")))
    payload_header = ""
    if rule.get("outputPayloadToHeader") not in (None, ""):
        payload_header = _header_name(
            rule["outputPayloadToHeader"], f"{where}.outputPayloadToHeader", strict=False
        )
    timeout = DEFAULT_TIMEOUT
    if rule.get("timeout") is not None:
        timeout = parse_duration(rule["timeout"], f"{where}.timeout")
        if timeout < 0.001:
            raise ValidationError(f"{where}.timeout", "must be a valid duration of at least 1ms")
    spaced = None
    if rule.get("spaceDelimitedClaims") is not None:
        spaced = _strings(
            rule["spaceDelimitedClaims"],
            f"{where}.spaceDelimitedClaims",
            "claim",
            MAX_SPACE_DELIMITED_CLAIMS,
        )
    return JwtRule(
        issuer=issuer,
        audiences=audiences,
        jwks_uri=jwks_uri,
        jwks=jwks,
        from_headers=tuple(headers),
        from_params=_strings(rule.get("fromParams"), f"{where}.fromParams", "query parameter"),
        from_cookies=_strings(rule.get("fromCookies"), f"{where}.fromCookies", "cookie name"),
        output_payload_to_header=payload_header,
        output_claim_to_headers=tuple(claims),
        forward_original_token=bool(
            optional_bool(rule.get("forwardOriginalToken"), f"{where}.forwardOriginalToken")
        ),
        timeout=timeout,
        space_delimited_claims=spaced,
    )
