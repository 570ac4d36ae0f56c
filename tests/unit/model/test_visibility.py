"""exportTo validation, as Istio's validateExportTo, on every kind that carries it."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.kinds import parse_object
from istiolite.model.validation import ValidationError
from istiolite.model.visibility import EXPORT_TO_ANNOTATION, exported_to
from tests.support.objects import service

Raw = dict[str, Any]
ANNOTATION_FIELD = f"metadata.annotations[{EXPORT_TO_ANNOTATION}]"


def virtual_service(export_to: Any, namespace: str = "shop") -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "hosts": ["web"],
            "exportTo": export_to,
            "http": [{"route": [{"destination": {"host": "web"}}]}],
        },
    }


def destination_rule(export_to: Any, namespace: str = "shop") -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"host": "web", "exportTo": export_to},
    }


def service_entry(export_to: Any, namespace: str = "shop") -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {
            "hosts": ["api.example.com"],
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": "DNS",
            "exportTo": export_to,
        },
    }


def annotated_service(value: str, namespace: str = "shop") -> Raw:
    raw = service("web", namespace)
    raw["metadata"]["annotations"] = {EXPORT_TO_ANNOTATION: value}
    return raw


def failure(raw: Raw) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_object(raw)
    return caught.value


ISTIO_KINDS = [virtual_service, destination_rule, service_entry]


@pytest.mark.parametrize("build", ISTIO_KINDS)
@pytest.mark.parametrize("value", [["."], ["*"], ["team-b"], [".", "team-b", "team-c"], []])
def test_istio_kinds_accept_dot_star_and_namespaces(build: Any, value: list[str]) -> None:
    _, obj = parse_object(build(value))
    assert obj.export_to == tuple(value)


@pytest.mark.parametrize("build", [virtual_service, destination_rule])
def test_tilde_is_for_services_only(build: Any) -> None:
    """Istio: `exportTo ~ (none) is not allowed for Istio configuration objects`."""
    error = failure(build(["~"]))
    assert error.field == "spec.exportTo[0]"
    assert "~" in error.message


def test_service_entry_and_service_accept_tilde() -> None:
    assert parse_object(service_entry(["~"]))[1].export_to == ("~",)
    assert parse_object(annotated_service("~"))[1].export_to == ("~",)


@pytest.mark.parametrize("build", ISTIO_KINDS)
@pytest.mark.parametrize("value", [["*", "team-b"], [".", "*"]])
def test_star_stands_alone(build: Any, value: list[str]) -> None:
    error = failure(build(value))
    assert error.field == "spec.exportTo"
    assert "public (*)" in error.message


@pytest.mark.parametrize(
    "build", [service_entry, lambda v: annotated_service(",".join(v))], ids=["se", "svc"]
)
def test_tilde_stands_alone(build: Any) -> None:
    error = failure(build(["~", "team-b"]))
    assert error.field in ("spec.exportTo", ANNOTATION_FIELD)
    assert "no one (~)" in error.message


@pytest.mark.parametrize("build", ISTIO_KINDS)
def test_duplicates_are_rejected_with_their_index(build: Any) -> None:
    error = failure(build(["team-b", "team-c", "team-b"]))
    assert error.field == "spec.exportTo[2]"
    assert "duplicate" in error.message


@pytest.mark.parametrize("build", ISTIO_KINDS)
def test_dot_and_own_namespace_are_duplicates(build: Any) -> None:
    error = failure(build(["shop", "."], namespace="shop"))
    assert error.field == "spec.exportTo[1]"
    assert "current namespace shop" in error.message
    assert "duplicate" in failure(build([".", "shop"], namespace="shop")).message


@pytest.mark.parametrize("build", ISTIO_KINDS)
@pytest.mark.parametrize("bad", ["Team_B", "-x", "a" * 64, "", "ns/name"])
def test_values_must_be_dns_labels(build: Any, bad: str) -> None:
    error = failure(build(["team-a", bad]))
    assert error.field == "spec.exportTo[1]"


@pytest.mark.parametrize("build", ISTIO_KINDS)
def test_values_must_be_strings(build: Any) -> None:
    assert failure(build([5])).field == "spec.exportTo[0]"
    assert failure(build("team-b")).field == "spec.exportTo"


def test_service_annotation_is_comma_separated_and_trimmed() -> None:
    _, svc = parse_object(annotated_service(" ., team-b ,team-c"))
    assert svc.export_to == (".", "team-b", "team-c")
    assert parse_object(service("plain", "shop"))[1].export_to == ()


@pytest.mark.parametrize("value", ["", " ", "team-b,,team-c", "Bad", "*,team-b", ".,shop"])
def test_service_annotation_errors_name_the_annotation(value: str) -> None:
    # The annotation, and the entry at fault when one is: ...exportTo][1].
    assert failure(annotated_service(value)).field.startswith(ANNOTATION_FIELD)


def test_service_entry_hosts_carry_the_entry_export_to() -> None:
    _, entry = parse_object(service_entry(["."]))
    assert [s.export_to for s in entry.services()] == [(".",)]


@pytest.mark.parametrize(
    ("export_to", "client", "visible"),
    [
        ((), "other", True),
        (("*",), "other", True),
        ((".",), "shop", True),
        ((".",), "other", False),
        (("other",), "other", True),
        (("other",), "shop", False),  # not even its own namespace
        (("~",), "shop", False),
        (("~",), "other", False),
        ((".",), None, False),
        ((), None, True),
    ],
)
def test_exported_to_is_istiods_is_service_visible(
    export_to: tuple[str, ...], client: str | None, visible: bool
) -> None:
    assert exported_to(export_to, "shop", client) is visible
