"""The CRDs are generated from the schema the translator checks, and agree with it: what the
repo's golden cases and examples hold is accepted, a misspelt field refused, for every kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from istiolite.model import crds as crd_module
from istiolite.model.kinds import KINDS
from istiolite.model.schema import SPECS, Msg
from tests.support.crd_schema import structural_problems, validate

ROOT = Path(__file__).resolve().parents[3]
CRDS = {c["spec"]["names"]["kind"]: c for c in crd_module.crds()}


def _messages(msg: Msg, seen: dict[str, Msg]) -> dict[str, Msg]:
    seen.setdefault(msg.name, msg)
    for field in msg.fields.values():
        inner = getattr(field, "value", field)
        if isinstance(inner, Msg) and inner.name not in seen:
            _messages(inner, seen)
    return seen


def test_manifests_hold_the_generated_crds() -> None:
    committed = (ROOT / "manifests" / "base" / "crds.yaml").read_text()
    assert committed == crd_module.render(), (
        "manifests/base/crds.yaml is stale: regenerate it with "
        "python -m istiolite.model.crds > manifests/base/crds.yaml"
    )


def test_every_istio_kind_has_a_crd_with_its_versions() -> None:
    assert set(CRDS) == set(SPECS)
    for name, crd in CRDS.items():
        versions = [v["name"] for v in crd["spec"]["versions"]]
        assert tuple(versions) == KINDS[name].versions
        assert sum(v["storage"] for v in crd["spec"]["versions"]) == 1
        assert all(v["subresources"] == {"status": {}} for v in crd["spec"]["versions"])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_schemas_are_structural(kind: str) -> None:
    for version in CRDS[kind]["spec"]["versions"]:
        assert structural_problems(version["schema"]["openAPIV3Schema"]) == []


def test_repeated_fields_name_real_message_fields() -> None:
    messages: dict[str, Msg] = {}
    for spec in SPECS.values():
        _messages(spec, messages)
    for msg_name, field in crd_module.REPEATED:
        assert msg_name in messages, msg_name
        assert isinstance(messages[msg_name].fields.get(field), Msg), (msg_name, field)


def _repo_objects() -> list[tuple[Path, dict[str, Any]]]:
    files = [*sorted((ROOT / "tests" / "golden" / "cases").rglob("config/*.yaml"))]
    files += sorted((ROOT / "examples").rglob("*.yaml"))
    out = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in CRDS:
                out.append((path, doc))
    return out


OBJECTS = _repo_objects()


def test_the_repo_has_objects_of_every_kind() -> None:
    assert {doc["kind"] for _, doc in OBJECTS} == set(CRDS)


@pytest.mark.parametrize(
    ("path", "doc"),
    OBJECTS,
    ids=[f"{p.relative_to(ROOT)}:{d['kind']}/{d['metadata']['name']}" for p, d in OBJECTS],
)
def test_crd_schemas_accept_the_repos_config(path: Path, doc: dict[str, Any]) -> None:
    version = doc["apiVersion"].rpartition("/")[2]
    validate(CRDS[doc["kind"]], version, doc)


# One misspelling per kind, deep enough to need the right list/object shape on the way.
TYPOS = {
    "VirtualService": {"http": [{"route": [{"destination": {"hots": "a"}}]}]},
    "DestinationRule": {"host": "a", "subsets": [{"name": "v1", "lables": {}}]},
    "Gateway": {"servers": [{"port": {"number": 80, "protcol": "HTTP"}, "hosts": ["*"]}]},
    "ServiceEntry": {"hosts": ["a"], "ports": [{"number": 80, "nmae": "http"}]},
    "Sidecar": {"egress": [{"hosts": ["./*"], "prot": {}}]},
    "WorkloadEntry": {"address": "10.0.0.1", "lables": {}},
    "PeerAuthentication": {"mtls": {"mdoe": "STRICT"}},
    "AuthorizationPolicy": {"rules": [{"from": [{"source": {"principal": ["a"]}}]}]},
    "RequestAuthentication": {"jwtRules": [{"isuer": "a"}]},
}


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_crd_schemas_refuse_a_typo(kind: str) -> None:
    group = KINDS[kind].group
    doc = {
        "apiVersion": f"{group}/v1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": TYPOS[kind],
    }
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        validate(CRDS[kind], "v1", doc)
