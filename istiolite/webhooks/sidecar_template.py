"""What injection adds to a pod, in Istio's shape (facts of Istio's injection template, written
here as code): the `istio-proxy` container (pilot-agent + Envoy from `istio/proxyv2`), the
`istio-init` init container (istio-iptables), the volumes both use, and the labels and
annotations of an injected pod. The `envoy` flavour puts plain Envoy there instead, started
from a bootstrap that `istiolite bootstrap` writes in an init container.

Pure functions of the pod and an `InjectionConfig`; `inject.py` decides whether to inject and
turns the result into a JSONPatch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

PROXY_UID = 1337
STATUS_PORT = 15020
HEALTH_PORT = 15021  # the sidecar's own readiness (Envoy via pilot-agent)
PROMETHEUS_PORT = 15090
TOKEN_AUDIENCE = "istio-ca"
TOKEN_DIR = "/var/run/secrets/tokens"
ROOT_CERT_DIR = "/var/run/secrets/istio"
ENVOY_DIR = "/etc/istio/proxy"
ENVOY_BOOTSTRAP = f"{ENVOY_DIR}/envoy.json"
PROXY_CONTAINER = "istio-proxy"
INIT_CONTAINER = "istio-init"
BOOTSTRAP_CONTAINER = "istiolite-bootstrap"
STATUS_ANNOTATION = "sidecar.istio.io/status"

Flavor = Literal["istio", "envoy"]
FLAVORS: tuple[Flavor, ...] = ("istio", "envoy")


@dataclass(frozen=True, slots=True)
class InjectionConfig:
    flavor: Flavor = "istio"
    proxy_image: str = "docker.io/istio/proxyv2:1.24.3"
    envoy_image: str = "docker.io/envoyproxy/envoy:v1.32-latest"
    # This control plane's own image: the envoy flavour's init containers run its CLI.
    istiolite_image: str = "istiolite:dev"
    # Where sidecars reach the CA and xDS (the secure port, as istiod's 15012).
    discovery_address: str = "istiod.istio-system.svc:15012"
    trust_domain: str = "cluster.local"
    domain: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    revision: str = "default"
    # istio-proxy as a native sidecar (an init container with restartPolicy Always, Kubernetes
    # 1.29+); per pod also with the annotation sidecar.istio.io/nativeSidecar: "true".
    native_sidecars: bool = False


@dataclass(frozen=True, slots=True)
class Workload:
    """The pod as the template reads it."""

    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    app_containers: list[str]  # names, in order
    ports: list[dict[str, Any]]  # every app container's declared ports
    workload_name: str  # the Deployment (or other owner) name
    owner: str  # kubernetes://apis/... of the owner, or ""


# Istio's default sidecar resources.
RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _pod_env() -> list[dict[str, Any]]:
    return [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field_env("HOST_IP", "status.hostIP"),
    ]


def _restricted(*, uid: int = PROXY_UID) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": uid,
        "runAsNonRoot": True,
        "runAsUser": uid,
    }


def canonical_labels(labels: dict[str, str], workload_name: str) -> dict[str, str]:
    """Istio's canonical service labels: an explicit one wins, then the usual app labels."""
    name = (
        labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload_name
    )
    revision = (
        labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )
    return {
        "security.istio.io/tlsMode": labels.get("security.istio.io/tlsMode", "istio"),
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": revision,
    }


def iptables_init(config: InjectionConfig) -> dict[str, Any]:
    """istio-init: the nat rules that send the pod's TCP through the sidecar (REDIRECT mode);
    15090, 15021 and 15020 (the sidecar's own ports) are left alone inbound."""
    rules = [
        "-p", "15001", "-z", "15006", "-u", str(PROXY_UID), "-m", "REDIRECT",
        "-i", "*", "-x", "", "-b", "*", "-d", f"{PROMETHEUS_PORT},{HEALTH_PORT},{STATUS_PORT}",
    ]  # fmt: skip
    # The same flags either way: istiolite's own command takes istio-iptables' arguments.
    if config.flavor == "envoy":
        image, args = config.istiolite_image, ["iptables", *rules]
    else:
        image = config.proxy_image
        args = ["istio-iptables", *rules, "--log_output_level=default:info"]
    return {
        "name": INIT_CONTAINER,
        "image": image,
        "args": args,
        "resources": RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }


def _istio_env(config: InjectionConfig, workload: Workload) -> list[dict[str, Any]]:
    proxy_config = {"discoveryAddress": config.discovery_address}
    env = [
        {"name": "JWT_POLICY", "value": "third-party-jwt"},
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": config.discovery_address},
        *_pod_env(),
        {"name": "ISTIO_CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "PROXY_CONFIG", "value": json.dumps(proxy_config, separators=(",", ":"))},
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(workload.ports)},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(workload.app_containers)},
        _field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_CLUSTER_ID", "value": config.cluster_id},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload.workload_name},
    ]
    if workload.owner:
        env.append({"name": "ISTIO_META_OWNER", "value": workload.owner})
    env += [
        {"name": "ISTIO_META_MESH_ID", "value": config.trust_domain},
        {"name": "TRUST_DOMAIN", "value": config.trust_domain},
    ]
    return env


def _istio_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
        {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
        {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
        {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR},
        {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
        {"name": "istio-envoy", "mountPath": ENVOY_DIR},
        {"name": "istio-token", "mountPath": TOKEN_DIR},
        {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
    ]


def istio_proxy(config: InjectionConfig, workload: Workload) -> dict[str, Any]:
    """pilot-agent + Envoy: pilot-agent gets its certificate from CA_ADDR with the istio-token
    (audience istio-ca), verifying the server against the istio-ca-root-cert ConfigMap."""
    return {
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "args": [
            "proxy",
            "sidecar",
            "--domain",
            f"$(POD_NAMESPACE).svc.{config.domain}",
            "--proxyLogLevel=warning",
            "--proxyComponentLogLevel=misc:error",
            "--log_output_level=default:info",
        ],
        "ports": [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
        "env": _istio_env(config, workload),
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
            "initialDelaySeconds": 0,
            "periodSeconds": 15,
            "timeoutSeconds": 3,
            "failureThreshold": 4,
        },
        "resources": RESOURCES,
        "securityContext": _restricted(),
        "volumeMounts": _istio_mounts(),
    }


def envoy_bootstrap_init(
    config: InjectionConfig,
    workload: Workload,
    *,
    proxy_type: str = "sidecar",
    readiness_port: int = 0,
) -> dict[str, Any]:
    """`istiolite bootstrap` writes the plain Envoy's bootstrap: Delta ADS to the secure port,
    TLS verified against the mesh root, the service-account token on every call. A gateway's
    Envoy is a `router`."""
    node_id = (
        f"{proxy_type}~$(INSTANCE_IP)~$(POD_NAME).$(POD_NAMESPACE)"
        f"~$(POD_NAMESPACE).svc.{config.domain}"
    )
    args = [
        "bootstrap",
        "--node-id", node_id,
        "--xds-address", config.discovery_address,
        "--delta",
        "--token-file", f"{TOKEN_DIR}/istio-token",
        "--xds-root-cert", f"{ROOT_CERT_DIR}/root-cert.pem",
        "--meta", "NAMESPACE=$(POD_NAMESPACE)",
        "--meta", "SERVICE_ACCOUNT=$(SERVICE_ACCOUNT)",
        "--meta", f"CLUSTER_ID={config.cluster_id}",
        "--meta", f"INTERCEPTION_MODE={'REDIRECT' if proxy_type == 'sidecar' else 'NONE'}",
        "--meta", f"WORKLOAD_NAME={workload.workload_name}",
    ]  # fmt: skip
    for key, value in sorted(workload.labels.items()):
        # $ is not a label character, so nothing here reads as a $(VAR) reference.
        args += ["--label", f"{key}={value}"]
    if readiness_port:
        # GET /healthz/ready on the pod IP answered with Envoy's /ready (admin stays private).
        args += ["--readiness-address", f"0.0.0.0:{readiness_port}"]
    args += ["--output", ENVOY_BOOTSTRAP]
    return {
        "name": BOOTSTRAP_CONTAINER,
        "image": config.istiolite_image,
        "args": args,
        "env": _pod_env(),
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _restricted(),
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": ENVOY_DIR},
            {"name": "istio-token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR, "readOnly": True},
        ],
    }


def envoy_proxy(config: InjectionConfig) -> dict[str, Any]:
    return {
        "name": PROXY_CONTAINER,
        "image": config.envoy_image,
        "command": ["envoy"],
        "args": ["-c", ENVOY_BOOTSTRAP, "--log-level", "warning"],
        "ports": [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
        "resources": RESOURCES,
        "securityContext": _restricted(),
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": ENVOY_DIR},
            {"name": "istio-token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR, "readOnly": True},
            {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
        ],
    }


def volumes(config: InjectionConfig) -> list[dict[str, Any]]:
    shared = [
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {
            "name": "istio-podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        },
        {
            "name": "istio-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "istio-token",
                            "expirationSeconds": 43200,
                            "audience": TOKEN_AUDIENCE,
                        }
                    }
                ]
            },
        },
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
    ]
    if config.flavor == "envoy":
        return shared
    return [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-data", "emptyDir": {}},
        *shared,
    ]


def status_annotation(
    init_containers: list[str], containers: list[str], volume_names: list[str], revision: str
) -> str:
    """What was injected, as Istio records it: the marker that makes injection idempotent."""
    return json.dumps(
        {
            "initContainers": init_containers,
            "containers": containers,
            "volumes": volume_names,
            "imagePullSecrets": None,
            "revision": revision,
        },
        separators=(",", ":"),
    )
