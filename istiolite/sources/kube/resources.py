"""The API resources istiolite watches: one per kind of `model.kinds.KINDS`, with its plural,
scope and the versions it may be served under (the first served one is watched)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from istiolite.model.kinds import KINDS


@dataclass(frozen=True, slots=True)
class ApiResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        """The cluster-wide collection (every namespace)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{base}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}" if self.group else self.plural


@dataclass(frozen=True, slots=True)
class WatchedKind:
    """A kind istiolite reads; `versions` in order of preference (v1 first)."""

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str  # the name objects are keyed by (ObjectKey.kind)
    namespaced: bool
    # The kind as the API server names it, when not `kind` (the Gateway API's Gateway).
    api_kind: str = ""
    # False for the Istio kinds istiolite watches only to report that they have no effect.
    translated: bool = True

    @property
    def custom(self) -> bool:
        """Served by a CustomResourceDefinition, which may not be installed."""
        return self.group.endswith(".istio.io") or self.group == GATEWAY_API_GROUP

    @property
    def istio(self) -> bool:
        return self.group.endswith(".istio.io")

    def resource(self, version: str | None = None) -> ApiResource:
        return ApiResource(
            self.group,
            version or self.versions[0],
            self.plural,
            self.api_kind or self.kind,
            self.namespaced,
        )

    def served_version(self, crd: dict[str, Any]) -> str | None:
        """The version to watch per a CustomResourceDefinition of this kind, None when it
        serves none istiolite reads."""
        spec = crd.get("spec")
        if not isinstance(spec, dict):
            return None
        versions = spec.get("versions")
        served: set[str] = set()
        if isinstance(versions, list):
            served = {
                v["name"]
                for v in versions
                if isinstance(v, dict)
                and v.get("served") is True
                and isinstance(v.get("name"), str)
            }
        return next((v for v in self.versions if v in served), None)


_PLURALS = {
    "Service": "services",
    "Pod": "pods",
    "Namespace": "namespaces",
    "Node": "nodes",
    "Secret": "secrets",
    "EndpointSlice": "endpointslices",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "ServiceEntry": "serviceentries",
    "Sidecar": "sidecars",
    "Gateway": "gateways",
    "WorkloadEntry": "workloadentries",
    "PeerAuthentication": "peerauthentications",
    "AuthorizationPolicy": "authorizationpolicies",
    "RequestAuthentication": "requestauthentications",
    "GatewayClass": "gatewayclasses",
    "KubernetesGateway": "gateways",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
    "TLSRoute": "tlsroutes",
    "TCPRoute": "tcproutes",
    "ReferenceGrant": "referencegrants",
}
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

WATCHED: dict[str, WatchedKind] = {
    k.name: WatchedKind(k.group, k.versions, _PLURALS[k.name], k.name, k.namespaced, k.kind)
    for k in KINDS.values()
}

# Istio kinds istiolite does not translate, watched (when their CRD is installed) only to count
# and show them, as the file source reports them: never silently without effect.
_NETWORKING = "networking.istio.io"
NOT_TRANSLATED: dict[str, WatchedKind] = {
    k.kind: replace(k, translated=False)
    for k in (
        WatchedKind(_NETWORKING, ("v1alpha3",), "envoyfilters", "EnvoyFilter", True),
        WatchedKind(_NETWORKING, ("v1beta1",), "proxyconfigs", "ProxyConfig", True),
        WatchedKind(
            _NETWORKING, ("v1", "v1beta1", "v1alpha3"), "workloadgroups", "WorkloadGroup", True
        ),
        WatchedKind("telemetry.istio.io", ("v1", "v1alpha1"), "telemetries", "Telemetry", True),
        WatchedKind("extensions.istio.io", ("v1alpha1",), "wasmplugins", "WasmPlugin", True),
    )
}

# Watched to learn when an Istio kind's CRD is installed (or removed).
CRDS = ApiResource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)


def by_crd(crd: dict[str, Any], kinds: Iterable[WatchedKind]) -> WatchedKind | None:
    """The watched kind a CustomResourceDefinition defines, if any."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return None
    names = spec.get("names")
    plural = names.get("plural") if isinstance(names, dict) else None
    group = spec.get("group")
    return next((k for k in kinds if k.group == group and k.plural == plural), None)
