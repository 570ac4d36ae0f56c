"""The Kubernetes kinds istiolite understands, and how each is parsed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from istiolite.model.authorization_policy import parse_authorization_policy
from istiolite.model.destinationrule import parse_destination_rule
from istiolite.model.endpointslice import parse_endpointslice
from istiolite.model.gateway import parse_gateway
from istiolite.model.gatewayapi.gateway import parse_gateway_class, parse_kube_gateway
from istiolite.model.gatewayapi.reference_grant import parse_reference_grant
from istiolite.model.gatewayapi.routes import (
    parse_grpc_route,
    parse_http_route,
    parse_tcp_route,
    parse_tls_route,
)
from istiolite.model.meta import ObjectKey, ObjectMeta
from istiolite.model.peerauthentication import parse_peer_authentication
from istiolite.model.requestauthentication import parse_request_authentication
from istiolite.model.schema import check_fields, unapplied_fields
from istiolite.model.secret import parse_secret
from istiolite.model.service import parse_service
from istiolite.model.serviceentry import parse_service_entry
from istiolite.model.sidecar import parse_sidecar
from istiolite.model.validation import ValidationError
from istiolite.model.virtualservice import parse_virtual_service
from istiolite.model.workload import parse_namespace, parse_node, parse_pod
from istiolite.model.workloadentry import parse_workload_entry

# Istio serves its networking API under all three versions, with the same schema.
_ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
# ... and its security API under two.
_SECURITY_VERSIONS = ("v1", "v1beta1")


@dataclass(frozen=True, slots=True)
class Kind:
    group: str
    versions: tuple[str, ...]
    kind: str
    namespaced: bool
    parse: Callable[[dict[str, Any]], Any]
    # The name objects of this kind are keyed by (ObjectKey.kind), when the kind's own name is
    # taken by another group's kind: the Gateway API's Gateway is "KubernetesGateway".
    key: str = ""

    @property
    def name(self) -> str:
        return self.key or self.kind


_GATEWAY_API = "gateway.networking.k8s.io"
# The Gateway API's kinds, with the versions each is served under.
_GATEWAY_API_KINDS = (
    Kind(_GATEWAY_API, ("v1", "v1beta1"), "GatewayClass", False, parse_gateway_class),
    Kind(_GATEWAY_API, ("v1", "v1beta1"), "Gateway", True, parse_kube_gateway, "KubernetesGateway"),
    Kind(_GATEWAY_API, ("v1", "v1beta1"), "HTTPRoute", True, parse_http_route),
    Kind(_GATEWAY_API, ("v1", "v1alpha2"), "GRPCRoute", True, parse_grpc_route),
    Kind(_GATEWAY_API, ("v1alpha2", "v1alpha3"), "TLSRoute", True, parse_tls_route),
    Kind(_GATEWAY_API, ("v1alpha2",), "TCPRoute", True, parse_tcp_route),
    Kind(_GATEWAY_API, ("v1beta1", "v1alpha2"), "ReferenceGrant", True, parse_reference_grant),
)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        *_GATEWAY_API_KINDS,
        Kind("", ("v1",), "Service", True, parse_service),
        Kind("", ("v1",), "Pod", True, parse_pod),
        Kind("", ("v1",), "Namespace", False, parse_namespace),
        Kind("", ("v1",), "Node", False, parse_node),
        Kind("", ("v1",), "Secret", True, parse_secret),
        Kind("discovery.k8s.io", ("v1",), "EndpointSlice", True, parse_endpointslice),
        Kind("networking.istio.io", _ISTIO_VERSIONS, "VirtualService", True, parse_virtual_service),
        Kind(
            "networking.istio.io", _ISTIO_VERSIONS, "DestinationRule", True, parse_destination_rule
        ),
        Kind("networking.istio.io", _ISTIO_VERSIONS, "ServiceEntry", True, parse_service_entry),
        Kind("networking.istio.io", _ISTIO_VERSIONS, "Sidecar", True, parse_sidecar),
        Kind("networking.istio.io", _ISTIO_VERSIONS, "Gateway", True, parse_gateway),
        Kind("networking.istio.io", _ISTIO_VERSIONS, "WorkloadEntry", True, parse_workload_entry),
        # security.istio.io: PeerAuthentication (mutual TLS inbound).
        Kind(
            "security.istio.io",
            ("v1", "v1beta1"),
            "PeerAuthentication",
            True,
            parse_peer_authentication,
        ),
        # security.istio.io serves v1 and v1beta1 with one schema.
        Kind(
            "security.istio.io",
            _SECURITY_VERSIONS,
            "AuthorizationPolicy",
            True,
            parse_authorization_policy,
        ),
        Kind(
            "security.istio.io",
            _SECURITY_VERSIONS,
            "RequestAuthentication",
            True,
            parse_request_authentication,
        ),
    )
}


_BY_GROUP_KIND = {(k.group, k.kind): k for k in KINDS.values()}


class UnknownKind(ValueError):
    """A well-formed object of a kind istiolite does not read (ignored, not an error)."""


class UnsupportedKind(UnknownKind):
    """An object of a mesh kind (Istio's, the Gateway API's, Ingress) that istiolite does not
    translate: reported once per object, never silently dropped. Its config has no effect."""

    def __init__(self, kind: str, api_version: str, note: str) -> None:
        message = f"not supported by istiolite: {kind}"
        super().__init__(f"{message} ({note})" if note else message)
        self.kind = kind
        self.api_version = api_version
        self.note = note


_PLANNED_GATEWAY_API = (
    "istiolite translates GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and "
    "ReferenceGrant; this kind has no effect"
)
_NO_EFFECT = "it has no effect on the config proxies get"
# Mesh kinds users put in YAML that istiolite does not translate, with what to tell them.
# Any other kind of an istio.io group or of the Gateway API is reported too (see _unsupported).
_UNSUPPORTED: dict[tuple[str, str], str] = {
    ("networking.istio.io", "EnvoyFilter"): _NO_EFFECT,
    ("networking.istio.io", "ProxyConfig"): _NO_EFFECT,
    ("networking.istio.io", "WorkloadGroup"): _NO_EFFECT,
    ("telemetry.istio.io", "Telemetry"): _NO_EFFECT,
    ("extensions.istio.io", "WasmPlugin"): _NO_EFFECT,
    ("networking.k8s.io", "Ingress"): _NO_EFFECT,
    ("networking.k8s.io", "IngressClass"): _NO_EFFECT,
    (_GATEWAY_API, "UDPRoute"): f"{_PLANNED_GATEWAY_API}: Gateways take no UDP listeners",
    (_GATEWAY_API, "BackendTLSPolicy"): (
        f"{_PLANNED_GATEWAY_API}: connections to the backend stay plaintext; "
        "use a DestinationRule with tls.mode SIMPLE for TLS origination"
    ),
}
# The Gateway API's experimental group (XBackendTrafficPolicy, XListenerSet, ...).
_GATEWAY_API_EXPERIMENTAL = "gateway.networking.x-k8s.io"


def _unsupported(kind_name: str, api_version: str) -> UnsupportedKind | None:
    group = api_version.rpartition("/")[0]
    note = _UNSUPPORTED.get((group, kind_name))
    if note is None and group in (_GATEWAY_API, _GATEWAY_API_EXPERIMENTAL):
        note = _PLANNED_GATEWAY_API
    elif note is None and group.endswith(".istio.io"):
        note = _NO_EFFECT
    return None if note is None else UnsupportedKind(kind_name, api_version, note)


def parse_object(raw: Any) -> tuple[ObjectKey, Any]:
    """Parse one Kubernetes object into its typed model; raises ValidationError naming the field."""
    if not isinstance(raw, dict):
        raise ValidationError("<document>", f"must be a mapping, got {type(raw).__name__}")
    kind_name = raw.get("kind")
    api_version = raw.get("apiVersion")
    if not isinstance(kind_name, str) or not kind_name:
        raise ValidationError("kind", "is required")
    if not isinstance(api_version, str) or not api_version:
        raise ValidationError("apiVersion", "is required")
    group, _, version = api_version.rpartition("/")
    kind = _BY_GROUP_KIND.get((group, kind_name)) or KINDS.get(kind_name)
    if kind is None or (group != kind.group and group == _GATEWAY_API):
        # Checked before the version: a Gateway API `Gateway` is not a misversioned Istio one.
        unsupported = _unsupported(kind_name, api_version)
        if unsupported is not None:
            raise unsupported
    if kind is None:
        raise UnknownKind(f"{api_version}/{kind_name}")
    if group != kind.group or version not in kind.versions:
        expected = ", ".join(f"{kind.group}/{v}".lstrip("/") for v in kind.versions)
        raise ValidationError("apiVersion", f"{api_version!r} for {kind_name}; expected {expected}")
    # The schema knows the Istio kinds by kind name; the Gateway API's Gateway is not Istio's.
    istio = kind.group != _GATEWAY_API
    if istio:
        check_fields(raw)  # unknown field names in the Istio kinds (a no-op for the others)
    obj = kind.parse(raw)
    meta: ObjectMeta = obj.meta
    # Valid fields istiolite does not translate: warnings.
    unapplied = unapplied_fields(raw) if istio else ()
    if unapplied:
        meta = replace(meta, unapplied=meta.unapplied + unapplied)
        obj = replace(obj, meta=meta)
    return ObjectKey(kind.name, meta.namespace, meta.name), obj
