"""What a Gateway of istiolite's classes without `spec.addresses` gets in its namespace, as
istiod's gateway deployment controller makes it: a ServiceAccount, a Deployment running a router
proxy and a Service in front of it, all named `<gateway>-<class>` and owned by the Gateway (so
Kubernetes' garbage collector deletes them with it). Pure functions of the Gateway object and a
`GatewayDeploymentConfig`; `gateway_deployment.py` reconciles the cluster towards them.

Also here: whether a child already carries what we want (`covers`), the object to write back
when it does not (`corrected`), and the `status.addresses` a Service gives its Gateway.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.gatewayapi.gateway import BUILTIN_CLASSES, GATEWAY_NAME_LABEL
from istiolite.sources.kube.refs import ObjectRef
from istiolite.webhooks import sidecar_template as tpl

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ISTIO_GATEWAY_NAME_LABEL = "istio.io/gateway-name"
# istiod marks what its controller manages with this label (and selects its children by it).
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-gateway-controller"
SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
NAME_OVERRIDE_ANNOTATION = "gateway.istio.io/name-override"
SERVICE_ACCOUNT_ANNOTATION = "gateway.istio.io/service-account"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
STATUS_PORT = tpl.HEALTH_PORT  # 15021, the Service's first port as istiod's
MAX_NAME = 63  # a Service name is a DNS label


class ChildError(ValueError):
    """The Gateway cannot be given children; the message names the Gateway and the field."""


@dataclass(frozen=True, slots=True)
class GatewayDeploymentConfig:
    """The proxy the Deployment runs: the injection flags' image choice and xDS address."""

    injection: tpl.InjectionConfig = field(default_factory=tpl.InjectionConfig)
    domain: str = "cluster.local"


@dataclass(frozen=True, slots=True)
class Child:
    ref: ObjectRef
    desired: dict[str, Any]  # metadata (labels, annotations, ownerReferences) and content


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value).items() if isinstance(v, str)}


def _where(gateway: dict[str, Any]) -> str:
    meta = _mapping(gateway.get("metadata"))
    return f"Gateway {meta.get('namespace', '')}/{meta.get('name', '')}"


def managed(gateway: dict[str, Any], classes: frozenset[str] = frozenset()) -> bool:
    """Ours to deploy: of a built-in class or one of `classes` (GatewayClasses naming our
    controller), and no `spec.addresses` (a Gateway that names its addresses uses the proxies
    already there)."""
    spec = _mapping(gateway.get("spec"))
    class_name = spec.get("gatewayClassName")
    ours = class_name in BUILTIN_CLASSES or class_name in classes
    return ours and not spec.get("addresses")


def class_controller(gateway_class: dict[str, Any]) -> str:
    return str(_mapping(gateway_class.get("spec")).get("controllerName") or "")


def deployment_name(gateway: dict[str, Any]) -> str:
    meta = _mapping(gateway.get("metadata"))
    override = _strings(meta.get("annotations")).get(NAME_OVERRIDE_ANNOTATION)
    spec = _mapping(gateway.get("spec"))
    return override or f"{meta.get('name')}-{spec.get('gatewayClassName')}"


def owner_reference(gateway: dict[str, Any]) -> dict[str, Any]:
    meta = _mapping(gateway.get("metadata"))
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
    }


def service_ports(gateway: dict[str, Any]) -> list[dict[str, Any]]:
    """status-port 15021 first, then one port per distinct listener port (the first listener
    on a port names it), appProtocol the listener's protocol in lower case, as istiod."""
    ports: list[dict[str, Any]] = [
        {"name": "status-port", "port": STATUS_PORT, "protocol": "TCP", "appProtocol": "tcp"}
    ]
    seen = {STATUS_PORT}
    listeners = _mapping(gateway.get("spec")).get("listeners")
    for i, listener in enumerate(listeners if isinstance(listeners, list) else []):
        if not isinstance(listener, dict):
            continue
        port, protocol = listener.get("port"), str(listener.get("protocol") or "TCP")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ChildError(f"{_where(gateway)}: spec.listeners[{i}].port: not a port number")
        if port in seen:
            continue
        seen.add(port)
        name = listener.get("name") or f"{protocol.lower()}-{i}"
        ports.append(
            {
                "name": str(name),
                "port": port,
                "protocol": "UDP" if protocol == "UDP" else "TCP",
                "appProtocol": protocol.lower(),
            }
        )
    return ports


def service_type(gateway: dict[str, Any]) -> str:
    meta = _mapping(gateway.get("metadata"))
    wanted = _strings(meta.get("annotations")).get(SERVICE_TYPE_ANNOTATION, "LoadBalancer")
    if wanted not in SERVICE_TYPES:
        raise ChildError(
            f"{_where(gateway)}: metadata.annotations[{SERVICE_TYPE_ANNOTATION}]: {wanted!r} "
            f"is not one of {', '.join(SERVICE_TYPES)}"
        )
    return wanted


def _infrastructure(gateway: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """`spec.infrastructure` labels and annotations, which every child carries."""
    infra = _mapping(_mapping(gateway.get("spec")).get("infrastructure"))
    return _strings(infra.get("labels")), _strings(infra.get("annotations"))


def _proxy_pod(
    gateway: dict[str, Any], name: str, labels: dict[str, str], config: GatewayDeploymentConfig
) -> dict[str, Any]:
    """The pod spec: the injection flavour's proxy, run as a router (no iptables, no app)."""
    meta = _mapping(gateway.get("metadata"))
    namespace = str(meta.get("namespace") or "")
    injection = config.injection
    workload = tpl.Workload(
        namespace=namespace,
        labels=labels,
        annotations={},
        app_containers=[],
        ports=[],
        workload_name=name,
        owner=f"kubernetes://apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    )
    init: list[dict[str, Any]] = []
    if injection.flavor == "envoy":
        proxy = tpl.envoy_proxy(injection)
        init.append(
            tpl.envoy_bootstrap_init(
                injection, workload, proxy_type="router", readiness_port=STATUS_PORT
            )
        )
        proxy["readinessProbe"] = {
            "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
            "periodSeconds": 15,
            "timeoutSeconds": 3,
            "failureThreshold": 4,
        }
    else:
        proxy = tpl.istio_proxy(injection, workload)
        proxy["args"] = ["proxy", "router", *proxy["args"][2:]]
        proxy["env"] = [
            {**e, "value": "NONE"} if e["name"] == "ISTIO_META_INTERCEPTION_MODE" else e
            for e in proxy["env"]
        ]
    proxy["ports"] = [
        {"containerPort": STATUS_PORT, "protocol": "TCP", "name": "status-port"},
        *proxy["ports"],
    ]
    pod: dict[str, Any] = {
        "serviceAccountName": _service_account_name(gateway, name),
        # A router binds its listeners' ports (80, 443) without root, as istiod's template.
        "securityContext": {
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
        },
        "containers": [proxy],
        "volumes": tpl.volumes(injection),
    }
    if init:
        pod["initContainers"] = init
    return pod


def _service_account_name(gateway: dict[str, Any], name: str) -> str:
    meta = _mapping(gateway.get("metadata"))
    return _strings(meta.get("annotations")).get(SERVICE_ACCOUNT_ANNOTATION) or name


def children(gateway: dict[str, Any], config: GatewayDeploymentConfig) -> list[Child]:
    """ServiceAccount, Deployment, Service of a managed Gateway (ChildError for one that
    cannot have them: a bad port, an unknown service type, a name too long)."""
    meta = _mapping(gateway.get("metadata"))
    gw_name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if not meta.get("uid"):
        raise ChildError(f"{_where(gateway)}: metadata.uid: required to own its children")
    name = deployment_name(gateway)
    if len(name) > MAX_NAME:
        raise ChildError(
            f"{_where(gateway)}: the children's name {name!r} is longer than {MAX_NAME} "
            f"characters (set metadata.annotations[{NAME_OVERRIDE_ANNOTATION}])"
        )
    infra_labels, infra_annotations = _infrastructure(gateway)
    identity = {GATEWAY_NAME_LABEL: gw_name, ISTIO_GATEWAY_NAME_LABEL: gw_name}
    labels = {**infra_labels, **identity, MANAGED_LABEL: MANAGED_VALUE}
    owners = [owner_reference(gateway)]

    def metadata(extra: dict[str, str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": {**labels, **(extra or {})}, "ownerReferences": owners}
        if infra_annotations:
            out["annotations"] = dict(infra_annotations)
        return out

    pod_labels = {
        **infra_labels,
        **identity,
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": "latest",
        "sidecar.istio.io/inject": "false",
    }
    pod_annotations = {
        **infra_annotations,
        "prometheus.io/path": "/stats/prometheus",
        "prometheus.io/port": str(tpl.PROMETHEUS_PORT),
        "prometheus.io/scrape": "true",
    }
    selector = {GATEWAY_NAME_LABEL: gw_name}
    sa_name = _service_account_name(gateway, name)
    service_spec: dict[str, Any] = {
        "type": service_type(gateway),
        "selector": selector,
        "ports": service_ports(gateway),
    }
    return [
        Child(
            ObjectRef("v1", "ServiceAccount", "serviceaccounts", namespace, sa_name),
            {"metadata": metadata()},
        ),
        Child(
            ObjectRef("apps/v1", "Deployment", "deployments", namespace, name),
            {
                "metadata": metadata(),
                "spec": {
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                        "spec": _proxy_pod(gateway, name, pod_labels, config),
                    },
                },
            },
        ),
        Child(
            ObjectRef("v1", "Service", "services", namespace, name),
            {"metadata": metadata(), "spec": service_spec},
        ),
    ]


# --- compare and correct ------------------------------------------------------------------------


def covers(current: Any, desired: Any) -> bool:
    """Whether `current` carries everything `desired` says: every key of a mapping (the API
    server's defaults may add others), lists element by element and of the same length."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            k in current and covers(current[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(covers(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired and type(current) is type(desired))


def _merged(current: Any, desired: Any) -> Any:
    """Mappings merged key by key (ours win); anything else, lists included, is ours."""
    if isinstance(desired, dict) and isinstance(current, dict):
        out = dict(current)
        for key, value in desired.items():
            out[key] = _merged(current.get(key), value)
        return out
    return copy.deepcopy(desired)


def corrected(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """`current` with what we own put back: to PUT with its resourceVersion. Service ports keep
    the nodePort the server allocated for the same port (a PUT without one would change it),
    unless the Service becomes a ClusterIP one, which may have none."""
    out: dict[str, Any] = _merged(current, desired)
    old_ports = _mapping(current.get("spec")).get("ports")
    new_ports = _mapping(out.get("spec")).get("ports")
    cluster_ip = _mapping(out.get("spec")).get("type") == "ClusterIP"
    if isinstance(old_ports, list) and isinstance(new_ports, list) and not cluster_ip:
        node_ports = {
            p.get("port"): p["nodePort"]
            for p in old_ports
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int)
        }
        for port in new_ports:
            if port.get("port") in node_ports and "nodePort" not in port:
                port["nodePort"] = node_ports[port["port"]]
    return out


# --- status.addresses ---------------------------------------------------------------------------


def gateway_addresses(service: dict[str, Any], domain: str) -> list[dict[str, str]]:
    """As istiod: the load balancer's ingress IPs and hostnames once it has them, else the
    Service's cluster DNS name as a Hostname address."""
    ingress = _mapping(_mapping(service.get("status")).get("loadBalancer")).get("ingress")
    out: list[dict[str, str]] = []
    for entry in ingress if isinstance(ingress, list) else []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("ip"), str) and entry["ip"]:
            out.append({"type": "IPAddress", "value": entry["ip"]})
        elif isinstance(entry.get("hostname"), str) and entry["hostname"]:
            out.append({"type": "Hostname", "value": entry["hostname"]})
    if out:
        return out
    meta = _mapping(service.get("metadata"))
    host = f"{meta.get('name')}.{meta.get('namespace')}.svc.{domain}"
    return [{"type": "Hostname", "value": host}]
