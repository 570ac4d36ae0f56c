"""One typed settings object: command-line flags, with ISTIOLITE_* environment defaults."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def env_default(name: str, default: str) -> str:
    return os.environ.get(f"ISTIOLITE_{name}", default)


def split_host_port(value: str) -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT' or ':PORT' (all interfaces)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def parse_duration(value: str) -> timedelta:
    """A Go-style duration: `24h`, `90m`, `1h30m`, `45s`, `2160h` (also `d` for days)."""
    text = value.strip()
    total, i = 0.0, 0
    if not text:
        raise ValueError("empty duration")
    while i < len(text):
        j = i
        while j < len(text) and (text[j].isdigit() or text[j] == "."):
            j += 1
        k = j
        while k < len(text) and text[k].isalpha():
            k += 1
        number, unit = text[i:j], text[j:k]
        if not number or unit not in _DURATION_UNITS or number.count(".") > 1 or len(number) > 12:
            raise ValueError(f"{value!r} is not a duration like 24h, 90m or 1h30m")
        total += float(number) * _DURATION_UNITS[unit]
        i = k
    return timedelta(seconds=total)


@dataclass(slots=True)
class Settings:
    config_dirs: list[Path] = field(default_factory=list)
    # Istio's mesh config file (the `mesh` key of ConfigMap istio), watched; None: defaults.
    mesh_config: Path | None = None
    grpc_addr: str = ":15010"
    http_addr: str = ":8080"
    monitoring_addr: str = ":15014"
    trust_domain: str = "cluster.local"
    # The cluster this istiolite serves, as istiod's CLUSTER_ID: a caller whose `clusterid`
    # metadata names another cluster is not judged with this cluster's TokenReview.
    cluster_id: str = "Kubernetes"
    domain: str = "cluster.local"
    debounce_quiet: float = 0.1
    debounce_max: float = 10.0
    push_concurrency: int = 100
    xds_send_timeout: float = 5.0
    grpc_max_recv_size: int = 4 * 1024 * 1024
    log_format: str = "json"
    log_level: str = "info"
    # Debug pages (/debug/*) on the HTTP port: "local" answers loopback peers only, "true"
    # every peer (istiod's ENABLE_DEBUG_ON_HTTP), "false" serves none.
    debug_on_http: str = "local"
    # Development only: SDS key material on the plaintext gRPC port (to loopback/Unix peers).
    dev_plaintext_sds: bool = False
    # The secure port (TLS; xDS + the CA API). The CLI's default is istiod's ":15012"; here ""
    # means not served, so an in-process Istiolite binds no fixed port unless asked.
    secure_grpc_addr: str = ""
    extra_sans: list[str] = field(default_factory=list)
    # The mesh CA: its directory (None: an in-memory root), key type, workload certificate TTLs.
    ca_dir: Path | None = None
    ca_key_type: str = "ecdsa"
    workload_cert_ttl: timedelta = timedelta(hours=24)
    max_workload_cert_ttl: timedelta = timedelta(days=90)
    # Kubernetes API (TokenReview): a kubeconfig, else the in-cluster config inside a pod.
    kubeconfig: Path | None = None
    # A local token authority beside TokenReview: the issuer's public key (PEM or JWKS) and name.
    token_issuer_key: Path | None = None
    token_issuer: str = "https://kubernetes.default.svc.cluster.local"
    # Kubernetes objects read only from these namespaces (None: all), istiod's
    # discoverySelectors in their simplest form; bounds memory on large clusters.
    watch_namespaces: frozenset[str] | None = None
    # With a cluster: istiolite's namespace (the Lease, the CA Secret) and its identity in the
    # leader election, from the pod (POD_NAMESPACE, POD_NAME) as istiod's.
    pod_namespace: str = field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE") or "istio-system"
    )
    pod_name: str = field(
        default_factory=lambda: os.environ.get("POD_NAME") or socket.gethostname()
    )
    # The Lease's duration; renewed within half of it, tried every quarter (istiod: 30 s).
    leader_lease_duration: float = 30.0
    # RequestAuthentication jwksUri key sets: refreshed this often (istiod: 20 minutes).
    jwks_refresh_interval: float = 20 * 60.0
    # Admission webhooks (HTTPS; /validate, /inject). The CLI's default is istiod's ":15017";
    # here "" means not served.
    webhook_addr: str = ""
    # Sidecar injection: "istio" (istio/proxyv2, pilot-agent) or "envoy" (plain Envoy).
    injection_flavor: str = "istio"
    proxy_image: str = "docker.io/istio/proxyv2:1.24.3"
    envoy_image: str = "docker.io/envoyproxy/envoy:v1.32-latest"
    istiolite_image: str = "istiolite:dev"
    native_sidecars: bool = False
    # With Kubernetes: Deployment + Service + ServiceAccount for each Gateway of ours.
    gateway_deployment: bool = True
