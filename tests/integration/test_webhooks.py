"""The admission webhooks of a real `istiolite serve --webhook-addr`, called as the Kubernetes
API server calls them: HTTPS to istiod.istio-system.svc verified against the mesh root
(the caBundle), AdmissionReview v1 POSTed to /validate and /inject."""

from __future__ import annotations

import copy
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cryptography import x509

from istiolite.webhooks.admission import MAX_REVIEW_BYTES
from tests.support.admission import (
    VALID_VS_SPEC,
    apply_patch,
    body,
    deployment_pod,
    patch_of,
    response_of,
    review,
    virtual_service,
)
from tests.support.processes import IstioliteProcess, http_get

SERVER_NAME = "istiod.istio-system.svc"
NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: plain
"""


class _VerifiedHTTPS(http.client.HTTPSConnection):
    """Connects to 127.0.0.1 and verifies the certificate for istiod's service name, as the API
    server does when it calls the webhook Service."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=10)
        self._ctx = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=SERVER_NAME)


@dataclass
class Webhooks:
    istiolite: IstioliteProcess
    root: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root))

    def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        conn = _VerifiedHTTPS(self.istiolite.webhook_port, self.context())
        try:
            conn.request("POST", path, payload, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def admit(self, path: str, review_: dict[str, Any]) -> dict[str, Any]:
        status, data = self.post(path, body(review_))
        assert status == 200, data
        answer: dict[str, Any] = json.loads(data)
        assert answer["response"]["uid"] == review_["request"]["uid"]
        return answer


@pytest.fixture(scope="module")
def webhooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhooks]:
    work = tmp_path_factory.mktemp("webhooks")
    config = work / "config"
    config.mkdir()
    (config / "namespaces.yaml").write_text(NAMESPACES)
    istiolite = IstioliteProcess([config], work, "--ca-dir", str(work / "ca"))
    try:
        assert istiolite.webhook_port, "the serving log line names the webhook port"
        yield Webhooks(istiolite, work / "ca" / "root-cert.pem")
    finally:
        istiolite.stop()


def test_the_certificate_is_for_istiods_service_and_chains_to_the_mesh_root(
    webhooks: Webhooks,
) -> None:
    with socket.create_connection(
        ("127.0.0.1", webhooks.istiolite.webhook_port), timeout=10
    ) as raw:
        with webhooks.context().wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    names = san.value.get_values_for_type(x509.DNSName)
    assert {"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"} <= set(names)
    # another name is refused by the client's verification
    with socket.create_connection(
        ("127.0.0.1", webhooks.istiolite.webhook_port), timeout=10
    ) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            webhooks.context().wrap_socket(raw, server_hostname="evil.example.com")


def test_plain_http_is_not_served(webhooks: Webhooks) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", webhooks.istiolite.webhook_port, timeout=10)
    try:
        conn.request("POST", "/validate", body(review(virtual_service(VALID_VS_SPEC))))
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            response = conn.getresponse()
            response.read()
            # an HTTP reply to plaintext would be a failure of this test
            raise AssertionError(f"plaintext request answered: {response.status}")
    finally:
        conn.close()


def test_validate_allows_valid_denies_invalid_and_warns(webhooks: Webhooks) -> None:
    allowed = response_of(webhooks.admit("/validate", review(virtual_service(VALID_VS_SPEC))))
    assert allowed["allowed"] is True and "warnings" not in allowed

    bad = copy.deepcopy(VALID_VS_SPEC)
    bad["http"][0]["route"][0]["destination"]["host"] = ""
    denied = response_of(webhooks.admit("/validate", review(virtual_service(bad))))
    assert denied["allowed"] is False
    assert "spec.http[0].route[0].destination.host" in denied["status"]["message"]

    unapplied = copy.deepcopy(VALID_VS_SPEC)
    unapplied["http"][0]["mirrorPercent"] = 5
    warned = response_of(webhooks.admit("/validate", review(virtual_service(unapplied))))
    assert warned["allowed"] is True
    assert warned["warnings"] == [
        "VirtualService default/reviews: spec.http[0].mirrorPercent: "
        "accepted but not applied yet: use mirrorPercentage"
    ]


def test_a_malformed_review_is_a_400_naming_the_problem(webhooks: Webhooks) -> None:
    status, data = webhooks.post("/validate", b'{"apiVersion": "admission.k8s.io/v1"')
    assert status == 400 and b"not JSON" in data
    status, data = webhooks.post(
        "/inject",
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
    )
    assert status == 400 and b"request: is required" in data


def test_inject_patches_pods_of_labelled_namespaces_only(webhooks: Webhooks) -> None:
    pod = deployment_pod()
    patch = patch_of(webhooks.admit("/inject", review(pod, namespace="apps")))
    assert patch is not None
    injected = apply_patch(copy.deepcopy(pod), patch)
    kubernetes_validate.validate(injected, kubernetes_validate.latest_version(), strict=True)
    assert [c["name"] for c in injected["spec"]["containers"]] == ["hello", "istio-proxy"]
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["istio-init"]
    assert injected["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    # a second pass of the webhook (reinvocationPolicy) changes nothing
    assert patch_of(webhooks.admit("/inject", review(injected, namespace="apps"))) is None
    # the namespace without the label, and a pod opting out, get no patch
    assert patch_of(webhooks.admit("/inject", review(deployment_pod(), namespace="plain"))) is None
    opted_out = deployment_pod()
    opted_out["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
    assert patch_of(webhooks.admit("/inject", review(opted_out, namespace="apps"))) is None


def test_requests_are_counted_on_the_monitoring_port(webhooks: Webhooks) -> None:
    bad = copy.deepcopy(VALID_VS_SPEC)
    bad["hosts"] = 7
    webhooks.admit("/validate", review(virtual_service(bad)))
    status, text = http_get(f"http://127.0.0.1:{webhooks.istiolite.monitoring_port}/metrics")
    assert status == 200
    assert (
        'galley_validation_failed{group="networking.istio.io",version="v1",'
        'resource="virtualservices",reason="invalid"}' in text
    )
    assert "sidecar_injection_requests_total" in text


def test_bodies_are_bounded_and_only_post_is_served(webhooks: Webhooks) -> None:
    status, _data = webhooks.post("/validate", b" " * (MAX_REVIEW_BYTES + 1))
    assert status == 413
    conn = _VerifiedHTTPS(webhooks.istiolite.webhook_port, webhooks.context())
    try:
        conn.request("GET", "/inject")
        response = conn.getresponse()
        assert response.status == 405 and response.getheader("Allow") == "POST"
        response.read()
    finally:
        conn.close()
