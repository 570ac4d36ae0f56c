"""The mesh config (Istio's MeshConfig, the `mesh` key of ConfigMap istio-system/istio): the
fields istiolite honours, checked; Istio's other fields accepted with a note that they are not
applied; anything else named as unknown.

It lives in the config store as one object (MESH_CONFIG_KEY), so a change of it is a push like
any other config change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from istiolite.model.meta import ObjectKey
from istiolite.model.validation import ValidationError, require_mapping, require_str

MESH_CONFIG_KEY = ObjectKey("MeshConfig", "istio-system", "istio")
OUTBOUND_MODES = ("ALLOW_ANY", "REGISTRY_ONLY")
# istiolite's policies are read from this namespace (model.sidecar.ROOT_NAMESPACE).
SUPPORTED_ROOT_NAMESPACE = "istio-system"
MAX_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB

# A trust domain as SPIFFE allows it: lowercase letters, digits, `.`, `-`, `_`.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")

# Istio MeshConfig fields that istiolite reads but does not act on (istiod or pilot-agent use
# them). Not an error: the same ConfigMap serves istioctl and the injected sidecars.
NOT_APPLIED = frozenset(
    {
        "accessLogEncoding",
        "accessLogFile",
        "accessLogFormat",
        "ca",
        "caCertificates",
        "certificates",
        "configSources",
        "connectTimeout",
        "defaultDestinationRuleExportTo",
        "defaultHttpRetryPolicy",
        "defaultProviders",
        "defaultServiceExportTo",
        "defaultVirtualServiceExportTo",
        "disableEnvoyListenerLog",
        "discoverySelectors",
        "dnsRefreshRate",
        "enableEnvoyAccessLogService",
        "enablePrometheusMerge",
        "enableTracing",
        "extensionProviders",
        "h2UpgradePolicy",
        "inboundClusterStatName",
        "inboundTrafficPolicy",
        "ingressClass",
        "ingressControllerMode",
        "ingressSelector",
        "ingressService",
        "localityLbSetting",
        "meshMTLS",
        "outboundClusterStatName",
        "pathNormalization",
        "protocolDetectionTimeout",
        "proxyHttpPort",
        "proxyInboundListenPort",
        "proxyListenPort",
        "serviceScopeConfigs",
        "serviceSettings",
        "tcpKeepalive",
        "tlsDefaults",
        "trustDomainAliases",
        "verifyCertificateAtClient",
    }
)
_APPLIED = frozenset(
    {"trustDomain", "outboundTrafficPolicy", "defaultConfig", "rootNamespace", "enableAutoMtls"}
)


@dataclass(frozen=True, slots=True)
class MeshConfig:
    # "" when the file does not set it: the --trust-domain flag or its default decides.
    trust_domain: str = ""
    # The default of every sidecar no Sidecar resource gives a mode to.
    outbound_mode: str = "ALLOW_ANY"
    # defaultConfig.discoveryAddress: where injected sidecars dial (informational here).
    discovery_address: str = ""
    root_namespace: str = SUPPORTED_ROOT_NAMESPACE
    enable_auto_mtls: bool = True


@dataclass(frozen=True, slots=True)
class ParsedMeshConfig:
    config: MeshConfig
    # Fields set but not applied, and unknown fields: "<field>: <why>".
    notes: tuple[str, ...]


def parse_mesh_config(text: str) -> ParsedMeshConfig:
    """The mesh config from its YAML text; ValidationError naming the field at fault."""
    if len(text.encode()) > MAX_BYTES:
        raise ValidationError("mesh", f"larger than {MAX_BYTES} bytes")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValidationError("mesh", f"not valid YAML{where}") from None
    mesh = require_mapping(raw, "mesh")
    notes: list[str] = []
    for name in sorted(mesh, key=str):
        if name in _APPLIED:
            continue
        if name in NOT_APPLIED:
            notes.append(f"{name}: accepted, not applied by istiolite")
        else:
            notes.append(f"{str(name)[:100]}: unknown field, ignored")

    trust_domain = require_str(mesh.get("trustDomain"), "trustDomain")
    if trust_domain and not _TRUST_DOMAIN.match(trust_domain):
        raise ValidationError(
            "trustDomain", f"{trust_domain[:100]!r} is not a trust domain (a-z, 0-9, '.', '-', '_')"
        )

    outbound = require_mapping(mesh.get("outboundTrafficPolicy"), "outboundTrafficPolicy")
    mode = require_str(outbound.get("mode"), "outboundTrafficPolicy.mode") or "ALLOW_ANY"
    if mode not in OUTBOUND_MODES:
        raise ValidationError(
            "outboundTrafficPolicy.mode",
            f"{mode[:100]!r} is not one of {', '.join(OUTBOUND_MODES)}",
        )
    for name in sorted(set(outbound) - {"mode"}, key=str):
        notes.append(f"outboundTrafficPolicy.{str(name)[:100]}: not applied by istiolite")

    default_config = require_mapping(mesh.get("defaultConfig"), "defaultConfig")
    address = require_str(default_config.get("discoveryAddress"), "defaultConfig.discoveryAddress")
    if address and not _HOST_PORT.match(address):
        raise ValidationError(
            "defaultConfig.discoveryAddress", f"{address[:100]!r} is not HOST:PORT"
        )

    root = require_str(mesh.get("rootNamespace"), "rootNamespace") or SUPPORTED_ROOT_NAMESPACE
    if root != SUPPORTED_ROOT_NAMESPACE:
        raise ValidationError(
            "rootNamespace",
            f"{root[:100]!r}: istiolite reads mesh-wide policies from "
            f"{SUPPORTED_ROOT_NAMESPACE!r} only",
        )

    auto_mtls = _bool(mesh.get("enableAutoMtls"), "enableAutoMtls", default=True)
    if not auto_mtls:
        notes.append("enableAutoMtls: false is not applied, istiolite always uses auto mTLS")

    return ParsedMeshConfig(
        MeshConfig(
            trust_domain=trust_domain,
            outbound_mode=mode,
            discovery_address=address,
            root_namespace=root,
            enable_auto_mtls=auto_mtls,
        ),
        tuple(notes),
    )


def _bool(value: Any, field: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be true or false, got {str(value)[:100]!r}")
    return value
