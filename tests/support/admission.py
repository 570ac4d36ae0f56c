"""AdmissionReviews as the Kubernetes API server sends them, and pods to inject."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import jsonpatch

GROUP_VERSIONS = {
    "VirtualService": ("networking.istio.io", "v1"),
    "DestinationRule": ("networking.istio.io", "v1"),
    "Pod": ("", "v1"),
}


def review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    namespace: str = "default",
    kind: str | None = None,
    group: str | None = None,
    version: str | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview of `obj` (the API server's request shape)."""
    kind = kind or (obj or {}).get("kind", "Pod")
    g, v = GROUP_VERSIONS.get(kind, ("", "v1"))
    group, version = group if group is not None else g, version or v
    resource = kind.lower() + "s"
    name = ((obj or {}).get("metadata") or {}).get("name", "")
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def body(review_: dict[str, Any]) -> bytes:
    return json.dumps(review_).encode()


def virtual_service(spec: dict[str, Any], name: str = "reviews") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


VALID_VS_SPEC: dict[str, Any] = {
    "hosts": ["reviews"],
    "http": [
        {
            "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
            ]
        }
    ],
}


def deployment_pod(**overrides: Any) -> dict[str, Any]:
    """A pod as a Deployment's ReplicaSet creates it: generateName, owner, named probe port."""
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "hello-v1-5d9f8c7b6-",
            "namespace": "apps",
            "labels": {"app": "hello", "version": "v1", "pod-template-hash": "5d9f8c7b6"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "hello-v1-5d9f8c7b6",
                    "uid": "0b5b3c1e-8a3f-4d55-9c1e-0e2d3f4a5b6c",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "hello",
            "containers": [
                {
                    "name": "hello",
                    "image": "hashicorp/http-echo:1.0",
                    "args": ["-listen=:8080", "-text=v1"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5},
                    "resources": {},
                }
            ],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
        },
    }
    pod.update(overrides)
    return pod


def response_of(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    return answer["response"]  # type: ignore[no-any-return]


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]] | None:
    response = response_of(answer)
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))  # type: ignore[no-any-return]


def apply_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """As the API server applies a webhook's JSONPatch (RFC 6902)."""
    return jsonpatch.apply_patch(obj, patch)  # type: ignore[no-any-return]
