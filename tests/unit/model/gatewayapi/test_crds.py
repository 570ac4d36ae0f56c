"""The optional Gateway API CRDs (manifests/gateway-api/): generated, structural, one per kind
istiolite watches with the versions it reads (one stored), a /status subresource where
controllers write one; they accept the repo's Gateway API objects and refuse a misspelt field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from istiolite.model.gatewayapi import crds as crd_module
from istiolite.sources.kube.resources import GATEWAY_API_GROUP, WATCHED
from tests.support.crd_schema import structural_problems, validate

ROOT = Path(__file__).resolve().parents[4]
CRDS = {c["spec"]["names"]["kind"]: c for c in crd_module.crds()}
GATEWAY_API = {w.api_kind or name: w for name, w in WATCHED.items() if w.group == GATEWAY_API_GROUP}


def test_manifests_hold_the_generated_crds() -> None:
    committed = (ROOT / "manifests" / "gateway-api" / "crds.yaml").read_text()
    assert committed == crd_module.render(), (
        "manifests/gateway-api/crds.yaml is stale: regenerate it with "
        "python -m istiolite.model.gatewayapi.crds > manifests/gateway-api/crds.yaml"
    )


def test_one_crd_per_watched_kind_with_its_versions() -> None:
    assert set(CRDS) == set(GATEWAY_API)
    for kind, crd in CRDS.items():
        watched = GATEWAY_API[kind]
        spec = crd["spec"]
        assert spec["group"] == GATEWAY_API_GROUP
        assert spec["names"]["plural"] == watched.plural
        assert crd["metadata"]["name"] == f"{watched.plural}.{GATEWAY_API_GROUP}"
        assert spec["scope"] == ("Namespaced" if watched.namespaced else "Cluster")
        versions = spec["versions"]
        assert tuple(v["name"] for v in versions) == watched.versions
        assert all(v["served"] for v in versions)
        assert [v["name"] for v in versions if v["storage"]] == [watched.versions[0]]
        with_status = [v.get("subresources") == {"status": {}} for v in versions]
        assert all(with_status) is (kind != "ReferenceGrant"), kind
        assert not any(with_status) or kind != "ReferenceGrant"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schemas_are_structural(kind: str) -> None:
    for version in CRDS[kind]["spec"]["versions"]:
        assert structural_problems(version["schema"]["openAPIV3Schema"]) == []


def _repo_objects() -> list[tuple[str, dict[str, Any]]]:
    files = sorted((ROOT / "tests" / "golden" / "cases").rglob("config/*.yaml"))
    files += sorted(
        (ROOT / "tests" / "unit" / "model" / "gatewayapi" / "status_cases").glob("*.yaml")
    )
    files += sorted((ROOT / "examples").rglob("*.yaml"))
    out = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith(
                GATEWAY_API_GROUP
            ):
                out.append(
                    (f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata']['name']}", doc)
                )
    return out


OBJECTS = _repo_objects()


# Besides the repo's objects: one of each kind the repo's config has none of.
OBJECTS += [
    (
        "inline:ReferenceGrant",
        {
            "apiVersion": f"{GATEWAY_API_GROUP}/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "certs"},
            "spec": {
                "from": [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "namespace": "edge"}],
                "to": [{"group": "", "kind": "Secret", "name": "shared-cert"}],
            },
        },
    ),
    (
        "inline:GRPCRoute",
        {
            "apiVersion": f"{GATEWAY_API_GROUP}/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "greeter", "namespace": "apps"},
            "spec": {
                "parentRefs": [{"name": "edge", "namespace": "edge", "sectionName": "grpc"}],
                "hostnames": ["grpc.example.com"],
                "rules": [
                    {
                        "matches": [
                            {
                                "method": {"service": "helloworld.Greeter", "method": "SayHello"},
                                "headers": [{"name": "x-canary", "value": "1"}],
                            }
                        ],
                        "backendRefs": [
                            {"name": "greeter-v1", "port": 50051, "weight": 80},
                            {"name": "greeter-v2", "port": 50051, "weight": 20},
                        ],
                    }
                ],
            },
        },
    ),
    (
        "inline:GatewayClass",
        {
            "apiVersion": f"{GATEWAY_API_GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "istiolite"},
            "spec": {"controllerName": "istiolite.io/gateway-controller"},
        },
    ),
]


def test_every_kind_is_checked_against_an_object() -> None:
    assert {doc["kind"] for _, doc in OBJECTS} == set(CRDS)


@pytest.mark.parametrize(("where", "doc"), OBJECTS, ids=[w for w, _ in OBJECTS])
def test_schemas_accept_the_repos_objects(where: str, doc: dict[str, Any]) -> None:
    version = doc["apiVersion"].rpartition("/")[2]
    validate(CRDS[doc["kind"]], version, doc)


TYPOS: dict[str, tuple[str, dict[str, Any]]] = {
    "GatewayClass": ("v1", {"controllerName": "a", "paramtersRef": {}}),
    "Gateway": (
        "v1",
        {"gatewayClassName": "istio", "listeners": [{"name": "a", "port": 80, "protocl": "x"}]},
    ),
    "HTTPRoute": ("v1", {"rules": [{"matches": [{"path": {"tpye": "Exact"}}]}]}),
    "GRPCRoute": ("v1", {"rules": [{"matches": [{"method": {"servce": "a"}}]}]}),
    "TLSRoute": ("v1alpha2", {"rules": [{"backendRefs": [{"name": "a", "prot": 1}]}]}),
    "TCPRoute": ("v1alpha2", {"rules": [{"backendRef": []}]}),
    "ReferenceGrant": (
        "v1beta1",
        {"from": [{"group": "", "kind": "a", "namespace": "b"}], "to": [{"knid": "Secret"}]},
    ),
}


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_schemas_refuse_a_typo(kind: str) -> None:
    version, spec = TYPOS[kind]
    doc = {"apiVersion": f"{GATEWAY_API_GROUP}/{version}", "kind": kind, "spec": spec}
    with pytest.raises(jsonschema.ValidationError):
        validate(CRDS[kind], version, doc)
