"""Gateway API status as a pure function of the PushContext: golden files per case (input YAML →
the status each object gets). Regenerate after an intended change with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.push.context import PushContext

CASES = Path(__file__).parent / "status_cases"
BASE = CASES / "base.yaml"


def _objects(path: Path) -> dict[ObjectKey, Any]:
    objects: dict[ObjectKey, Any] = {}
    for file in (BASE, path):
        for doc in yaml.safe_load_all(file.read_text()):
            if doc:
                key, obj = parse_object(doc)
                objects[key] = obj
    return objects


def _context(path: Path) -> PushContext:
    return PushContext(_objects(path), domain="cluster.local", version="test")


def _status(path: Path) -> dict[str, Any]:
    return {str(k): v for k, v in sorted(_context(path).gateway_api_status().items(), key=str)}


@pytest.mark.parametrize(
    "case", sorted(p for p in CASES.glob("*.yaml") if p != BASE), ids=lambda p: p.stem
)
def test_status_matches_golden(case: Path) -> None:
    golden = case.with_suffix(".status.json")
    got = _status(case)
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text())


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_the_listed_cases_say_what_the_spec_says() -> None:
    """The reasons the issue names, checked apart from the golden files' wording."""
    routes = _status(CASES / "missing_backend.yaml")
    missing = routes["HTTPRoute web/missing"]["parents"][0]
    assert _conditions(missing)["ResolvedRefs"] == ("False", "BackendNotFound")
    assert _conditions(missing)["Accepted"] == ("True", "Accepted")
    other = routes["HTTPRoute other/elsewhere"]["parents"][0]
    assert _conditions(other)["ResolvedRefs"] == ("False", "RefNotPermitted")

    hosts = _status(CASES / "hostname_mismatch.yaml")
    wrong = hosts["HTTPRoute web/wrong-host"]["parents"][0]
    assert _conditions(wrong)["Accepted"] == ("False", "NoMatchingListenerHostname")
    refused = hosts["HTTPRoute other/not-allowed"]["parents"][0]
    assert _conditions(refused)["Accepted"] == ("False", "NotAllowedByListeners")
    section = hosts["HTTPRoute web/no-section"]["parents"][0]
    assert _conditions(section)["Accepted"] == ("False", "NoMatchingParent")
    assert hosts["KubernetesGateway edge/edge"]["listeners"][0]["attachedRoutes"] == 0

    certs = _status(CASES / "certificate_refs.yaml")["KubernetesGateway edge/edge"]
    by_name = {item["name"]: _conditions(item) for item in certs["listeners"]}
    assert by_name["good"]["Programmed"] == ("True", "Programmed")
    assert by_name["missing"]["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert by_name["cross"]["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert by_name["configmap"]["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert _conditions(certs)["Accepted"] == ("True", "ListenersNotValid")
    assert _conditions(certs)["Programmed"] == ("True", "Programmed")

    conflicts = _status(CASES / "conflicting_listeners.yaml")
    assert "KubernetesGateway edge/foreign" not in conflicts
    listeners = {
        item["name"]: _conditions(item)
        for item in conflicts["KubernetesGateway edge/edge"]["listeners"]
    }
    assert listeners["first"]["Conflicted"] == ("False", "NoConflicts")
    assert listeners["same-host"]["Conflicted"] == ("True", "HostnameConflict")
    assert listeners["tcp"]["Conflicted"] == ("True", "ProtocolConflict")
    assert listeners["udp"]["Accepted"] == ("False", "UnsupportedProtocol")


def test_generation_is_observed() -> None:
    status = _status(CASES / "accepted_route.yaml")
    assert {
        c["observedGeneration"] for c in status["HTTPRoute web/shop"]["parents"][0]["conditions"]
    } == {2}
    gateway = status["KubernetesGateway edge/edge"]
    assert {c["observedGeneration"] for c in gateway["conditions"]} == {3}
    assert gateway["listeners"][0]["attachedRoutes"] == 1


def test_a_secret_added_later_fixes_the_listener() -> None:
    """A Secret change alone derives the context (no new conversion); the status reads Secrets
    when asked, so it follows."""
    objects = _objects(CASES / "certificate_refs.yaml")
    ctx = PushContext(objects, domain="cluster.local", version="1")
    gateway = ObjectKey("KubernetesGateway", "edge", "edge")
    assert _conditions(ctx.gateway_api_status()[gateway]["listeners"][1])["ResolvedRefs"][0] == (
        "False"
    )
    added = ObjectKey("Secret", "edge", "nope")
    newer = {**objects, added: objects[ObjectKey("Secret", "edge", "edge-cert")]}
    derived = ctx.derive(newer, {added}, objects, version="2")
    assert derived.gateway_api is ctx.gateway_api  # not converted again
    listener = derived.gateway_api_status()[gateway]["listeners"][1]
    assert _conditions(listener)["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert _conditions(listener)["Programmed"] == ("True", "Programmed")


def test_problems_are_warnings_for_configz_and_validate() -> None:
    warnings = _context(CASES / "missing_backend.yaml").reference_warnings()
    found = {(w.object, w.field, w.message.split(":")[1].strip()) for w in warnings}
    assert ("HTTPRoute web/missing", "status.parents[0] (edge)", "BackendNotFound") in found
    assert ("HTTPRoute other/elsewhere", "status.parents[0] (edge)", "RefNotPermitted") in found
    clean = _context(CASES / "accepted_route.yaml").reference_warnings()
    assert [w for w in clean if "HTTPRoute" in w.object or "Gateway" in w.object] == []


def test_a_granted_certificate_of_another_namespace_resolves() -> None:
    gateway = _status(CASES / "certificate_refs_granted.yaml")["KubernetesGateway edge/edge"]
    by_name = {item["name"]: _conditions(item) for item in gateway["listeners"]}
    assert by_name["granted"]["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert by_name["granted"]["Programmed"] == ("True", "Programmed")
    assert by_name["not-named"]["ResolvedRefs"] == ("False", "RefNotPermitted")
