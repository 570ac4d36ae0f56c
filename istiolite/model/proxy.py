"""A connected proxy, as described by its Envoy node id and metadata (Istio's conventions)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from istiolite.model.validation import ValidationError

MESH_MTLS_METADATA = "ISTIOLITE_MESH_MTLS"


class ProxyType(StrEnum):
    SIDECAR = "sidecar"
    ROUTER = "router"


class InterceptionMode(StrEnum):
    REDIRECT = "REDIRECT"
    TPROXY = "TPROXY"
    # No iptables: outbound listeners bind real ports on 127.0.0.1.
    NONE = "NONE"


@dataclass(frozen=True, slots=True)
class Proxy:
    id: str
    type: ProxyType
    ip_addresses: tuple[str, ...]
    pod_name: str
    namespace: str
    dns_domain: str
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = ""
    interception_mode: InterceptionMode = InterceptionMode.REDIRECT
    istio_version: str = ""
    cluster_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    cluster: str = ""  # node.cluster, e.g. "reviews.default"
    envoy_version: str = ""  # from node.user_agent_build_version
    locality: str = ""  # node.locality as "region/zone/subzone" (istiod's last resort)
    # The proxy holds a mesh workload certificate (SDS `default` / `ROOTCA`), so it can speak
    # Istio mTLS: auto mTLS outbound, mTLS chains inbound under PERMISSIVE. Without one, config
    # referencing those secrets would only keep its listeners and clusters warming. Set by the
    # xDS server for connections it serves the certificate to, or by node metadata
    # ISTIOLITE_MESH_MTLS=true (a proxy given the secrets some other way; it only affects what
    # this proxy is sent).
    mesh_mtls: bool = False

    @property
    def ip(self) -> str:
        return self.ip_addresses[0]


def _string_map(value: Any, field_name: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        # pilot-agent sends structs; hand-written bootstraps often carry a JSON string.
        try:
            value = json.loads(value)
        except ValueError:
            raise ValidationError(field_name, "must be a map or a JSON object") from None
    if not isinstance(value, dict):
        raise ValidationError(field_name, "must be a map of strings")
    return {str(k): str(v) for k, v in value.items()}


def parse_proxy(node_id: str, metadata: dict[str, Any]) -> Proxy:
    """Parse `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>` plus node metadata."""
    parts = node_id.split("~")
    if len(parts) != 4:
        raise ValidationError(
            "node.id", f"{node_id!r} is not <type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>"
        )
    raw_type, ip, pod_and_ns, dns_domain = parts
    try:
        proxy_type = ProxyType(raw_type)
    except ValueError:
        raise ValidationError(
            "node.id", f"proxy type {raw_type!r} is not sidecar or router"
        ) from None
    if not ip:
        raise ValidationError("node.id", "the IP address part is empty")
    pod_name, _, ns_from_id = pod_and_ns.partition(".")
    namespace = str(metadata.get("NAMESPACE") or ns_from_id or "default")
    ips = [ip]
    for extra in str(metadata.get("INSTANCE_IPS") or "").split(","):
        if extra and extra not in ips:
            ips.append(extra)
    mode_raw = str(metadata.get("INTERCEPTION_MODE") or "REDIRECT").upper()
    try:
        mode = InterceptionMode(mode_raw)
    except ValueError:
        raise ValidationError(
            "node.metadata.INTERCEPTION_MODE", f"{mode_raw!r} is not REDIRECT, TPROXY or NONE"
        ) from None
    return Proxy(
        id=node_id,
        type=proxy_type,
        ip_addresses=tuple(ips),
        pod_name=pod_name,
        namespace=namespace,
        dns_domain=dns_domain,
        labels=_string_map(metadata.get("LABELS"), "node.metadata.LABELS"),
        service_account=str(metadata.get("SERVICE_ACCOUNT") or ""),
        interception_mode=mode,
        istio_version=str(metadata.get("ISTIO_VERSION") or ""),
        cluster_id=str(metadata.get("CLUSTER_ID") or ""),
        metadata=dict(metadata),
        mesh_mtls=str(metadata.get(MESH_MTLS_METADATA) or "").lower() in ("true", "1"),
    )
