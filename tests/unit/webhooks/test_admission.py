"""AdmissionReview parsing: what the API server sends is read; anything else is refused with
the part named."""

from __future__ import annotations

import base64
import json

import pytest

from istiolite.webhooks.admission import (
    MAX_REVIEW_BYTES,
    MAX_WARNINGS,
    BadReview,
    allow,
    deny,
    parse_review,
)
from tests.support.admission import body, deployment_pod, review, virtual_service


def test_reads_the_api_servers_review() -> None:
    request = parse_review(body(review(virtual_service({"hosts": ["a"]}), uid="u-1")))
    assert (request.uid, request.operation, request.kind) == ("u-1", "CREATE", "VirtualService")
    assert (request.group, request.version, request.namespace) == (
        "networking.istio.io",
        "v1",
        "default",
    )
    assert request.describe() == "VirtualService default/reviews"


def test_an_object_with_only_generate_name_is_described_by_it() -> None:
    request = parse_review(body(review(deployment_pod(), namespace="apps")))
    assert request.describe() == "Pod apps/hello-v1-5d9f8c7b6-"


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (b"{not json", "body: not JSON"),
        (b"[]", "body: must be a JSON object"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}
            ).encode(),
            "admissionReviewVersions",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "request: is required",
        ),
    ],
)
def test_malformed_bodies_are_refused_naming_the_part(payload: bytes, named: str) -> None:
    with pytest.raises(BadReview, match=named):
        parse_review(payload)


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda r: r["request"].pop("uid"), "request.uid: is required"),
        (lambda r: r["request"].update(operation="PATCH"), "request.operation"),
        (
            lambda r: r["request"].update(kind="Pod"),
            "request.kind: is required and must be an object",
        ),
        (lambda r: r["request"].update(object=None), "request.object: is required for CREATE"),
        (lambda r: r["request"].update(object=[1]), "request.object: must be an object"),
        (lambda r: r["request"].update(namespace=3), "request.namespace: must be a string"),
    ],
)
def test_a_broken_request_names_its_field(mutate, named: str) -> None:  # type: ignore[no-untyped-def]
    r = review(virtual_service({"hosts": ["a"]}))
    mutate(r)
    with pytest.raises(BadReview, match=named):
        parse_review(body(r))


def test_a_delete_needs_no_object() -> None:
    r = review(None, operation="DELETE", kind="VirtualService")
    assert parse_review(body(r)).object is None


def test_the_body_is_bounded() -> None:
    with pytest.raises(BadReview, match=f"larger than {MAX_REVIEW_BYTES} bytes"):
        parse_review(b" " * (MAX_REVIEW_BYTES + 1))


def test_responses_echo_the_uid_and_carry_a_base64_json_patch() -> None:
    request = parse_review(body(review(deployment_pod(), uid="abc")))
    patch = [{"op": "add", "path": "/metadata/labels/x", "value": "y"}]
    answer = allow(request, patch=patch)
    assert answer["response"]["uid"] == "abc"
    assert answer["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(answer["response"]["patch"])) == patch
    denied = deny(request, "spec.hosts: is required")
    assert denied["response"] == {
        "uid": "abc",
        "allowed": False,
        "status": {"code": 400, "message": "spec.hosts: is required", "reason": "BadRequest"},
    }


def test_warnings_are_bounded_in_count_and_length() -> None:
    request = parse_review(body(review(deployment_pod())))
    warnings = allow(request, warnings=["w" * 1000] * 50)["response"]["warnings"]
    assert len(warnings) == MAX_WARNINGS + 1
    assert all(len(w) <= 240 for w in warnings)
    assert "more warnings not shown" in warnings[-1]
