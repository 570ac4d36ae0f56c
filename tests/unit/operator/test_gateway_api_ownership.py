"""What of a Gateway API status is istiolite's to write: its own parents entries only (matched by
parentRef whatever the field order), other controllers' kept in place, and nothing to write when
only timestamps would change."""

from __future__ import annotations

from typing import Any

from istiolite.operator.gateway_api_ownership import (
    class_is_ours,
    merge_parents,
    observed_generation,
    owned_status,
)

OURS = "istio.io/gateway-controller"
THEIRS = "example.com/other"


def _entry(name: str, controller: str, status: str = "True", **ref: Any) -> dict[str, Any]:
    return {
        "parentRef": {"name": name, **ref},
        "controllerName": controller,
        "conditions": [{"type": "Accepted", "status": status, "observedGeneration": 2}],
    }


def test_ours_replaced_in_place_theirs_untouched() -> None:
    existing = [_entry("a", THEIRS), _entry("edge", OURS, "False"), _entry("b", THEIRS)]
    merged = merge_parents(existing, [_entry("edge", OURS)])
    assert merged == [_entry("a", THEIRS), _entry("edge", OURS), _entry("b", THEIRS)]


def test_the_same_parent_of_two_controllers_keeps_both() -> None:
    existing = [_entry("edge", THEIRS, "False")]
    merged = merge_parents(existing, [_entry("edge", OURS)])
    assert merged == [_entry("edge", THEIRS, "False"), _entry("edge", OURS)]


def test_parent_refs_match_whatever_their_field_order() -> None:
    stored = {"parentRef": {"namespace": "n", "name": "edge"}, "controllerName": OURS}
    mine = _entry("edge", OURS, namespace="n")
    assert merge_parents([stored, _entry("x", THEIRS)], [mine]) == [mine, _entry("x", THEIRS)]


def test_nothing_to_write_when_only_times_differ() -> None:
    stamped = {"parents": [{**_entry("edge", OURS), "conditions": [
        {"type": "Accepted", "status": "True", "observedGeneration": 2,
         "lastTransitionTime": "2026-01-02T00:00:00Z"}]}]}  # fmt: skip
    existing = {"parents": [_entry("x", THEIRS), {**_entry("edge", OURS), "conditions": [
        {"type": "Accepted", "status": "True", "observedGeneration": 2,
         "lastTransitionTime": "2020-01-01T00:00:00Z"}]}]}  # fmt: skip
    assert owned_status(stamped, existing) is None
    changed = owned_status({"parents": [_entry("edge", OURS, "False")]}, existing)
    assert changed is not None
    assert changed["parents"] == [_entry("x", THEIRS), _entry("edge", OURS, "False")]


def test_other_status_fields_are_kept() -> None:
    existing = {"addresses": [{"value": "10.0.0.1"}], "conditions": []}
    status = owned_status({"conditions": [{"type": "Accepted", "status": "True"}]}, existing)
    assert status is not None and status["addresses"] == [{"value": "10.0.0.1"}]


def test_class_ownership_and_generation() -> None:
    assert class_is_ours({"spec": {"controllerName": "istiolite.io/gateway-controller"}})
    assert not class_is_ours({"spec": {"controllerName": THEIRS}})
    assert not class_is_ours({})
    assert observed_generation({"parents": [_entry("edge", OURS)]}) == 2
    assert observed_generation({"parents": []}) is None
