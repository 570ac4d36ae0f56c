"""/validate decides as the translator reads: the denial names the field, unapplied fields are
warnings, DELETE and kinds istiolite does not read pass."""

from __future__ import annotations

import copy

import pytest

from istiolite.webhooks.admission import parse_review
from istiolite.webhooks.validate import VALIDATED_KINDS, validate_review
from tests.support.admission import VALID_VS_SPEC, body, response_of, review, virtual_service


def _validate(obj, **kw):  # type: ignore[no-untyped-def]
    return response_of(validate_review(parse_review(body(review(obj, **kw)))))


def test_a_valid_virtual_service_is_allowed_without_warnings() -> None:
    response = _validate(virtual_service(VALID_VS_SPEC))
    assert response["allowed"] is True
    assert "warnings" not in response


def test_an_invalid_value_is_denied_naming_the_field() -> None:
    spec = copy.deepcopy(VALID_VS_SPEC)
    spec["http"][0]["route"][1]["weight"] = "ten"
    response = _validate(virtual_service(spec))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith("configuration is invalid: VirtualService default/reviews: ")
    assert "spec.http[0].route[1].weight" in message


def test_a_typo_is_denied_with_a_suggestion() -> None:
    spec = copy.deepcopy(VALID_VS_SPEC)
    spec["http"][0]["retris"] = {"attempts": 3}
    message = _validate(virtual_service(spec))["status"]["message"]
    assert 'spec.http[0].retris: unknown field "retris"' in message
    assert 'did you mean "retries"' in message


def test_accepted_but_unapplied_fields_come_back_as_warnings() -> None:
    spec = copy.deepcopy(VALID_VS_SPEC)
    spec["http"][0]["retries"] = {"attempts": 2, "retryRemoteLocalities": True}
    response = _validate(virtual_service(spec))
    assert response["allowed"] is True
    assert response["warnings"] == [
        "VirtualService default/reviews: spec.http[0].retries.retryRemoteLocalities: "
        "accepted but not applied yet"
    ]


def test_the_namespace_comes_from_the_request_when_the_body_has_none() -> None:
    vs = virtual_service(VALID_VS_SPEC)
    del vs["metadata"]["namespace"]
    vs["spec"]["hosts"] = ["reviews"]
    assert _validate(vs, namespace="shop")["allowed"] is True
    vs["metadata"] = {"generateName": "canary-"}
    assert _validate(vs, namespace="shop")["allowed"] is True


def test_delete_is_always_allowed() -> None:
    assert _validate(None, operation="DELETE", kind="VirtualService")["allowed"] is True


def test_kinds_istiolite_does_not_read_are_allowed() -> None:
    envoy_filter = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"whatever": True},
    }
    response = _validate(envoy_filter, group="networking.istio.io", version="v1alpha3")
    assert response["allowed"] is True


@pytest.mark.parametrize("kind", sorted(VALIDATED_KINDS))
def test_every_istio_kind_is_validated(kind: str) -> None:
    group = VALIDATED_KINDS[kind].group
    obj = {
        "apiVersion": f"{group}/v1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"notAField": 1},
    }
    response = _validate(obj, kind=kind, group=group, version="v1")
    assert response["allowed"] is False
    assert 'spec.notAField: unknown field "notAField"' in response["status"]["message"]


def test_validated_kinds_are_the_istio_ones() -> None:
    assert {k.group for k in VALIDATED_KINDS.values()} == {
        "networking.istio.io",
        "security.istio.io",
    }
    assert "VirtualService" in VALIDATED_KINDS and "Service" not in VALIDATED_KINDS


@pytest.mark.parametrize(
    ("group", "version", "kind"),
    [
        ("networking.istio.io", "v1alpha3", "EnvoyFilter"),
        ("networking.istio.io", "v1beta1", "ProxyConfig"),
        ("telemetry.istio.io", "v1", "Telemetry"),
        ("extensions.istio.io", "v1alpha1", "WasmPlugin"),
    ],
)
def test_mesh_kinds_istiolite_does_not_translate_are_allowed_with_a_warning_naming_them(
    group: str, version: str, kind: str
) -> None:
    obj = {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "shop"},
        "spec": {"anything": True},
    }
    response = _validate(obj, group=group, version=version, namespace="shop")
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning.startswith(f"{kind} shop/x: not supported by istiolite: {kind} ")
    assert "no effect" in warning


def test_other_kinds_pass_without_a_warning() -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    response = _validate(configmap, group="", version="v1")
    assert response["allowed"] is True and "warnings" not in response
    # A Gateway API kind istiolite translates is not called unsupported.
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop"},
        "spec": {"gatewayClassName": "istio", "listeners": []},
    }
    response = _validate(gateway, group="gateway.networking.k8s.io", version="v1")
    assert response["allowed"] is True and "warnings" not in response
