"""Which parts of a Gateway API object's status are istiolite's to write, and the status that
results from writing them: a route's `status.parents[]` entries whose `controllerName` is one of
istiolite's controllers are replaced (in place; ours that no longer apply dropped, new ones
appended); every other controller's entry is kept as it is, where it is. A GatewayClass is
written only when its controllerName is ours. Pure: the writer (gateway_api_status.py) reads the
object, calls `owned_status`, and writes the result back with the resourceVersion it read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from istiolite.model.gatewayapi.gateway import CONTROLLERS

_TIMES = ("lastTransitionTime",)


def without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def is_ours(entry: Any) -> bool:
    """Whether a status.parents[] entry was written by one of istiolite's controllers."""
    return isinstance(entry, dict) and entry.get("controllerName") in CONTROLLERS


def class_is_ours(obj: Mapping[str, Any]) -> bool:
    spec = obj.get("spec")
    return isinstance(spec, dict) and spec.get("controllerName") in CONTROLLERS


def ref_key(ref: Any) -> bytes:
    """A parentRef (or listener name) as a key, whatever the order of its fields."""
    return orjson.dumps(ref, option=orjson.OPT_SORT_KEYS)


def merge_parents(existing: Any, ours: list[dict[str, Any]]) -> list[Any]:
    """`existing` parents with istiolite's entries replaced by `ours` (matched by parentRef):
    other controllers' entries untouched and in place, ours gone stale dropped, new appended."""
    current: list[Any] = existing if isinstance(existing, list) else []
    pending = {ref_key(p["parentRef"]): p for p in ours}
    out: list[Any] = []
    for entry in current:
        if not is_ours(entry):
            out.append(entry)
            continue
        mine = pending.pop(ref_key(entry.get("parentRef")), None)
        if mine is not None:
            out.append(mine)
    out.extend(pending.values())
    return out


def owned_status(stamped: dict[str, Any], existing: Mapping[str, Any]) -> dict[str, Any] | None:
    """The whole status to write: `existing` with istiolite's fields set to `stamped` (its
    desired status, times added) and, for `parents`, only istiolite's entries replaced. None
    when that changes nothing but timestamps."""
    status = dict(existing)
    for field, value in stamped.items():
        status[field] = merge_parents(existing.get(field), value) if field == "parents" else value
    return None if without_times(status) == without_times(dict(existing)) else status


def our_parents(existing: Mapping[str, Any]) -> dict[str, Any]:
    """`existing` with only istiolite's parents: what condition times are carried over from."""
    parents = existing.get("parents")
    if not isinstance(parents, list):
        return dict(existing)
    return {**existing, "parents": [p for p in parents if is_ours(p)]}


def observed_generation(desired: Mapping[str, Any]) -> int | None:
    """The generation `desired` was computed from (its conditions' observedGeneration)."""
    places = [desired.get("conditions")]
    places += [p.get("conditions") for p in desired.get("parents", ()) if isinstance(p, dict)]
    for conditions in places:
        for c in conditions if isinstance(conditions, list) else ():
            if isinstance(c, dict) and isinstance(c.get("observedGeneration"), int):
                generation: int = c["observedGeneration"]
                return generation
    return None
