"""parse_object: the entry point every source uses; it picks the kind and names what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.endpointslice import EndpointSlice
from istiolite.model.kinds import UnknownKind, UnsupportedKind, parse_object
from istiolite.model.meta import ObjectKey
from istiolite.model.service import Service
from istiolite.model.validation import ValidationError
from istiolite.model.workload import Namespace, Node, Pod


def service(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }


def slice_(api_version: str = "discovery.k8s.io/v1") -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [],
    }


def test_service_is_keyed_by_kind_namespace_and_name() -> None:
    key, obj = parse_object(service(name="web", namespace="shop"))
    assert key == ObjectKey("Service", "shop", "web")
    assert isinstance(obj, Service)


def test_namespace_defaults_to_default() -> None:
    key, obj = parse_object(service(name="web"))
    assert key == ObjectKey("Service", "default", "web")
    assert obj.namespace == "default"


def test_endpointslice_pod_node_and_namespace_parse_to_their_models() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"podIP": "10.0.0.1"},
    }
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert isinstance(parse_object(slice_())[1], EndpointSlice)
    assert isinstance(parse_object(pod)[1], Pod)
    node_key, node_obj = parse_object(node)
    ns_key, ns_obj = parse_object(ns)
    assert isinstance(node_obj, Node) and isinstance(ns_obj, Namespace)
    # Cluster-scoped kinds have no namespace in their key (not "default").
    assert node_key == ObjectKey("Node", "", "node-a")
    assert ns_key == ObjectKey("Namespace", "", "shop")


def test_missing_name_names_metadata_name() -> None:
    with pytest.raises(ValidationError) as err:
        parse_object(service(namespace="shop"))
    assert err.value.field == "metadata.name"


def test_service_name_must_be_a_dns_label() -> None:
    with pytest.raises(ValidationError) as err:
        parse_object(service(name="Web_1"))
    assert err.value.field == "metadata.name"


def test_bad_namespace_is_named() -> None:
    with pytest.raises(ValidationError) as err:
        parse_object(service(name="web", namespace="Shop!"))
    assert err.value.field == "metadata.namespace"


@pytest.mark.parametrize(
    ("raw", "api_version"),
    [
        (service(name="web"), "apps/v1"),
        (service(name="web"), "discovery.k8s.io/v1"),
        (slice_(), "v1"),
        (slice_(), "discovery.k8s.io/v1beta1"),
    ],
)
def test_wrong_api_version_for_the_kind_is_rejected(raw: dict[str, Any], api_version: str) -> None:
    raw["apiVersion"] = api_version
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    assert err.value.field == "apiVersion"


def test_unknown_kind_is_not_a_validation_error() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    with pytest.raises(UnknownKind) as err:
        parse_object(deployment)
    assert not isinstance(err.value, ValidationError)
    assert not isinstance(err.value, UnsupportedKind)


@pytest.mark.parametrize(
    ("api_version", "kind", "planned"),
    [
        ("networking.istio.io/v1alpha3", "EnvoyFilter", False),
        ("telemetry.istio.io/v1", "Telemetry", False),
        ("extensions.istio.io/v1alpha1", "WasmPlugin", False),
        ("networking.istio.io/v1beta1", "ProxyConfig", False),
        ("networking.istio.io/v1", "WorkloadGroup", False),
        ("networking.k8s.io/v1", "Ingress", False),
        ("gateway.networking.k8s.io/v1alpha3", "BackendTLSPolicy", True),
        ("gateway.networking.k8s.io/v1alpha2", "UDPRoute", True),
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy", True),
        ("gateway.networking.x-k8s.io/v1alpha1", "XBackendTrafficPolicy", True),
    ],
)
def test_mesh_kinds_not_translated_are_reported_as_unsupported(
    api_version: str, kind: str, planned: bool
) -> None:
    raw = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "a"}}
    with pytest.raises(UnsupportedKind) as err:
        parse_object(raw)
    assert str(err.value).startswith(f"not supported by istiolite: {kind}")
    # The Gateway API's other kinds: the message names those istiolite translates.
    assert ("translates GatewayClass, Gateway, HTTPRoute" in str(err.value)) is planned
    assert err.value.kind == kind and err.value.api_version == api_version


def test_unsupported_gateway_api_kinds_say_what_happens_instead() -> None:
    def note(kind: str) -> str:
        raw = {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": kind,
            "metadata": {"name": "x", "namespace": "a"},
        }
        with pytest.raises(UnsupportedKind) as err:
            parse_object(raw)
        return err.value.note

    assert "no UDP listeners" in note("UDPRoute")
    assert "stay plaintext" in note("BackendTLSPolicy")


def test_istio_gateway_of_a_wrong_version_is_still_a_validation_error() -> None:
    raw = {"apiVersion": "networking.istio.io/v2", "kind": "Gateway", "metadata": {"name": "x"}}
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    assert err.value.field == "apiVersion"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"apiVersion": "v1", "metadata": {"name": "x"}}, "kind"),
        ({"kind": "Service", "metadata": {"name": "x"}}, "apiVersion"),
        (["not", "a", "mapping"], "<document>"),
    ],
)
def test_malformed_documents_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    assert err.value.field == field
