"""What a Gateway's ServiceAccount, Deployment and Service look like (istiod's names, labels,
owner, ports, service type, proxy image), and how a child is compared and corrected."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.operator.gateway_children import (
    ChildError,
    GatewayDeploymentConfig,
    children,
    corrected,
    covers,
    gateway_addresses,
    managed,
)
from istiolite.webhooks.sidecar_template import InjectionConfig


def _gateway(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "gatewayClassName": "istio",
        "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "http-alt", "port": 80, "protocol": "HTTP", "hostname": "b.example"},
            {"name": "tls", "port": 443, "protocol": "TLS"},
        ],
    }
    body.update(spec)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop", "uid": "u-1", "annotations": {}},
        "spec": body,
    }


def _by_kind(gateway: dict[str, Any], config: GatewayDeploymentConfig | None = None) -> Any:
    return {c.ref.kind: c for c in children(gateway, config or GatewayDeploymentConfig())}


def test_names_namespace_owner_and_labels_as_istiod() -> None:
    made = _by_kind(_gateway())
    assert sorted(made) == ["Deployment", "Service", "ServiceAccount"]
    for child in made.values():
        assert (child.ref.namespace, child.ref.name) == ("shop", "edge-istio")
        meta = child.desired["metadata"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": "edge",
                "uid": "u-1",
                "controller": True,
            }
        ]
        assert meta["labels"]["gateway.networking.k8s.io/gateway-name"] == "edge"
        assert meta["labels"]["istio.io/gateway-name"] == "edge"
    deployment = made["Deployment"].desired["spec"]
    selector = {"gateway.networking.k8s.io/gateway-name": "edge"}
    assert deployment["selector"] == {"matchLabels": selector}
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert pod_labels["gateway.networking.k8s.io/gateway-name"] == "edge"
    assert pod_labels["sidecar.istio.io/inject"] == "false"
    assert deployment["template"]["spec"]["serviceAccountName"] == "edge-istio"
    assert made["Service"].desired["spec"]["selector"] == selector


def test_name_and_service_account_overrides() -> None:
    gateway = _gateway()
    gateway["metadata"]["annotations"] = {
        "gateway.istio.io/name-override": "front",
        "gateway.istio.io/service-account": "front-sa",
    }
    made = _by_kind(gateway)
    assert made["Deployment"].ref.name == made["Service"].ref.name == "front"
    assert made["ServiceAccount"].ref.name == "front-sa"
    pod = made["Deployment"].desired["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "front-sa"


def test_service_ports_deduplicated_by_port_and_named_as_istiod() -> None:
    ports = _by_kind(_gateway())["Service"].desired["spec"]["ports"]
    assert [(p["name"], p["port"], p["appProtocol"]) for p in ports] == [
        ("status-port", 15021, "tcp"),
        ("http", 80, "http"),
        ("tls", 443, "tls"),
    ]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [(None, "LoadBalancer"), ("ClusterIP", "ClusterIP"), ("NodePort", "NodePort")],
)
def test_service_type_from_the_annotation(annotation: str | None, expected: str) -> None:
    gateway = _gateway()
    if annotation:
        gateway["metadata"]["annotations"]["networking.istio.io/service-type"] = annotation
    assert _by_kind(gateway)["Service"].desired["spec"]["type"] == expected


def test_unknown_service_type_names_the_gateway_and_annotation() -> None:
    gateway = _gateway()
    gateway["metadata"]["annotations"]["networking.istio.io/service-type"] = "Bogus"
    with pytest.raises(ChildError, match=r"Gateway shop/edge.*service-type.*Bogus"):
        children(gateway, GatewayDeploymentConfig())


def test_istio_flavour_runs_proxyv2_as_a_router_with_probe_and_restricted_context() -> None:
    config = GatewayDeploymentConfig(InjectionConfig(proxy_image="reg/proxyv2:9"))
    pod = _by_kind(_gateway(), config)["Deployment"].desired["spec"]["template"]["spec"]
    [proxy] = pod["containers"]
    assert proxy["image"] == "reg/proxyv2:9"
    assert proxy["args"][:2] == ["proxy", "router"]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert proxy["securityContext"]["runAsNonRoot"] is True
    assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert proxy["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert "initContainers" not in pod  # no iptables for a gateway
    sysctls = pod["securityContext"]["sysctls"]
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in sysctls


def test_envoy_flavour_runs_plain_envoy_bootstrapped_as_a_router() -> None:
    config = GatewayDeploymentConfig(
        InjectionConfig(flavor="envoy", envoy_image="reg/envoy:1", istiolite_image="reg/il:2")
    )
    pod = _by_kind(_gateway(), config)["Deployment"].desired["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == ["reg/envoy:1"]
    [init] = pod["initContainers"]
    assert init["image"] == "reg/il:2"
    node_id = init["args"][init["args"].index("--node-id") + 1]
    assert node_id.startswith("router~")
    # Readiness: the bootstrap's listener on 15021 answers with Envoy's own /ready.
    assert init["args"][init["args"].index("--readiness-address") + 1] == "0.0.0.0:15021"
    [proxy] = pod["containers"]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}


def test_managed_only_for_our_classes_without_addresses() -> None:
    assert managed(_gateway())
    assert managed(_gateway(gatewayClassName="istiolite"))
    assert not managed(_gateway(gatewayClassName="other"))
    assert not managed(_gateway(addresses=[{"type": "Hostname", "value": "gw.shop"}]))
    # A GatewayClass object naming our controller makes its name ours too.
    assert managed(_gateway(gatewayClassName="custom"), frozenset({"custom"}))


def test_covers_ignores_server_defaults_but_not_edits() -> None:
    desired = {"spec": {"ports": [{"port": 80, "name": "http"}], "type": "LoadBalancer"}}
    defaulted = {
        "spec": {
            "ports": [{"port": 80, "name": "http", "protocol": "TCP", "nodePort": 30080}],
            "type": "LoadBalancer",
            "clusterIP": "10.0.0.9",
        }
    }
    assert covers(defaulted, desired)
    edited = {"spec": {**defaulted["spec"], "ports": [{"port": 81, "name": "http"}]}}
    assert not covers(edited, desired)
    added = {"spec": {**defaulted["spec"], "ports": [*defaulted["spec"]["ports"], {"port": 9}]}}
    assert not covers(added, desired)


def test_corrected_puts_ours_back_and_keeps_the_rest() -> None:
    current = {
        "metadata": {"name": "s", "resourceVersion": "7", "labels": {"mine": "x", "a": "edited"}},
        "spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 80, "nodePort": 30080}, {"port": 9}]},
    }
    desired = {"metadata": {"labels": {"a": "b"}}, "spec": {"ports": [{"port": 80}]}}
    fixed = corrected(current, desired)
    assert fixed["metadata"] == {
        "name": "s",
        "resourceVersion": "7",
        "labels": {"mine": "x", "a": "b"},
    }
    assert fixed["spec"] == {"clusterIP": "10.0.0.9", "ports": [{"port": 80, "nodePort": 30080}]}


def test_addresses_from_load_balancer_else_service_hostname() -> None:
    service: dict[str, Any] = {"metadata": {"name": "edge-istio", "namespace": "shop"}}
    assert gateway_addresses(service, "cluster.local") == [
        {"type": "Hostname", "value": "edge-istio.shop.svc.cluster.local"}
    ]
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"hostname": "lb"}]}}
    assert gateway_addresses(service, "cluster.local") == [
        {"type": "IPAddress", "value": "192.0.2.7"},
        {"type": "Hostname", "value": "lb"},
    ]


def test_corrected_drops_node_ports_when_the_service_becomes_cluster_ip() -> None:
    current = {"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}]}}
    desired = {"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}
    assert corrected(current, desired)["spec"] == {"type": "ClusterIP", "ports": [{"port": 80}]}
