"""Proxy identity from the Envoy node: Istio's node-id format and node metadata keys."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.proxy import InterceptionMode, ProxyType, parse_proxy
from istiolite.model.validation import ValidationError

SIDECAR_ID = "sidecar~10.1.2.3~web-7d9f-abcde.shop~shop.svc.cluster.local"


def error_field(node_id: str, metadata: dict[str, Any] | None = None) -> str:
    with pytest.raises(ValidationError) as err:
        parse_proxy(node_id, metadata or {})
    return err.value.field


def test_sidecar_node_id() -> None:
    proxy = parse_proxy(SIDECAR_ID, {})
    assert proxy.id == SIDECAR_ID
    assert proxy.type == ProxyType.SIDECAR
    assert proxy.ip == "10.1.2.3"
    assert proxy.ip_addresses == ("10.1.2.3",)
    assert proxy.pod_name == "web-7d9f-abcde"
    assert proxy.namespace == "shop"
    assert proxy.dns_domain == "shop.svc.cluster.local"
    assert proxy.interception_mode == InterceptionMode.REDIRECT
    assert proxy.labels == {}


def test_router_node_id() -> None:
    proxy = parse_proxy(
        "router~10.1.2.4~ingress-5c6b.istio-system~istio-system.svc.cluster.local", {}
    )
    assert proxy.type == ProxyType.ROUTER
    assert proxy.namespace == "istio-system"


@pytest.mark.parametrize(
    "node_id",
    [
        "gateway~10.1.2.3~web.shop~shop.svc.cluster.local",  # unknown type
        "Sidecar~10.1.2.3~web.shop~shop.svc.cluster.local",  # types are lower-case
        "sidecar~10.1.2.3~web.shop",  # three parts
        "sidecar~10.1.2.3~web.shop~shop.svc.cluster.local~extra",  # five parts
        "web.shop",  # one part
        "",
        "sidecar~~web.shop~shop.svc.cluster.local",  # empty IP
    ],
)
def test_malformed_node_id_names_node_id(node_id: str) -> None:
    assert error_field(node_id) == "node.id"


def test_namespace_metadata_beats_the_id() -> None:
    proxy = parse_proxy(SIDECAR_ID, {"NAMESPACE": "payments"})
    assert proxy.namespace == "payments"


def test_identity_metadata() -> None:
    proxy = parse_proxy(
        SIDECAR_ID,
        {
            "SERVICE_ACCOUNT": "web-sa",
            "ISTIO_VERSION": "1.24.0",
            "CLUSTER_ID": "Kubernetes",
        },
    )
    assert proxy.service_account == "web-sa"
    assert proxy.istio_version == "1.24.0"
    assert proxy.cluster_id == "Kubernetes"


def test_labels_as_a_map() -> None:
    proxy = parse_proxy(SIDECAR_ID, {"LABELS": {"app": "web", "version": "v1"}})
    assert proxy.labels == {"app": "web", "version": "v1"}


def test_labels_as_a_json_string() -> None:
    proxy = parse_proxy(SIDECAR_ID, {"LABELS": '{"app": "web", "version": "v1"}'})
    assert proxy.labels == {"app": "web", "version": "v1"}


@pytest.mark.parametrize("labels", ["{not json", '["app", "web"]', 42])
def test_bad_labels_name_the_metadata_key(labels: Any) -> None:
    assert error_field(SIDECAR_ID, {"LABELS": labels}) == "node.metadata.LABELS"


def test_instance_ips_add_addresses_after_the_id_ip_without_duplicates() -> None:
    proxy = parse_proxy(SIDECAR_ID, {"INSTANCE_IPS": "10.1.2.3,fd00::3"})
    assert proxy.ip_addresses == ("10.1.2.3", "fd00::3")
    assert proxy.ip == "10.1.2.3"


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("REDIRECT", InterceptionMode.REDIRECT),
        ("NONE", InterceptionMode.NONE),
        ("TPROXY", InterceptionMode.TPROXY),
        ("", InterceptionMode.REDIRECT),
    ],
)
def test_interception_mode(raw: str, mode: InterceptionMode) -> None:
    assert parse_proxy(SIDECAR_ID, {"INTERCEPTION_MODE": raw}).interception_mode == mode


def test_invalid_interception_mode_names_the_metadata_key() -> None:
    field = error_field(SIDECAR_ID, {"INTERCEPTION_MODE": "IPTABLES"})
    assert field == "node.metadata.INTERCEPTION_MODE"
