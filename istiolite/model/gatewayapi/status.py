"""The status each Gateway API object gets, in the spec's shape, as a pure function of a
conversion (and of the Secrets its listeners name, read at call time: a Secret may change without
a new conversion). No timestamps: the writer adds `lastTransitionTime` when a condition changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from istiolite.model.gatewayapi.common import GROUP
from istiolite.model.gatewayapi.convert import (
    ACCEPTED,
    GATEWAY_KIND,
    PROGRAMMED,
    RESOLVED_REFS,
    Condition,
    Conversion,
    GatewayResult,
    ListenerResult,
)
from istiolite.model.meta import ObjectKey


class _Secret(Protocol):
    @property
    def has_key_pair(self) -> bool: ...


SecretLookup = Callable[[str, str], _Secret | None]


def _condition(c: Condition, generation: int) -> dict[str, Any]:
    return {
        "type": c.type,
        "status": "True" if c.status else "False",
        "reason": c.reason,
        "message": c.message,
        "observedGeneration": generation,
    }


def _listener(lr: ListenerResult, secrets: SecretLookup, generation: int) -> dict[str, Any]:
    conditions = list(lr.conditions)
    programmed = lr.usable
    for namespace, name in lr.secrets:
        secret = secrets(namespace, name)
        if secret is None or not secret.has_key_pair:
            why = "not found" if secret is None else "holds no usable tls.crt and tls.key"
            conditions = [
                c
                if c.type != RESOLVED_REFS
                else Condition(
                    RESOLVED_REFS,
                    False,
                    "InvalidCertificateRef",
                    f"Secret {namespace}/{name} {why}",
                )
                for c in conditions
            ]
            programmed = False
            break
    conditions.append(
        Condition(PROGRAMMED, True, PROGRAMMED, "listener programmed")
        if programmed
        else Condition(PROGRAMMED, False, "Invalid", "listener not programmed: see its conditions")
    )
    return {
        "name": lr.listener.name,
        "supportedKinds": [{"group": GROUP, "kind": k} for k in lr.kinds],
        "attachedRoutes": lr.attached,
        "conditions": [_condition(c, generation) for c in conditions],
    }


def gateway_status(result: GatewayResult, secrets: SecretLookup) -> dict[str, Any]:
    generation = result.gateway.api.generation
    listeners = [_listener(lr, secrets, generation) for lr in result.listeners]
    programmed = [
        any(c["type"] == PROGRAMMED and c["status"] == "True" for c in item["conditions"])
        for item in listeners
    ]
    if all(programmed):
        accepted = Condition(ACCEPTED, True, ACCEPTED, "gateway accepted")
    else:
        bad = ", ".join(
            repr(lr.listener.name)
            for lr, ok in zip(result.listeners, programmed, strict=True)
            if not ok
        )
        accepted = Condition(
            ACCEPTED, any(programmed), "ListenersNotValid", f"listeners not valid: {bad}"
        )
    program = (
        Condition(PROGRAMMED, True, PROGRAMMED, "configuration served to the gateway's proxies")
        if any(programmed)
        else Condition(PROGRAMMED, False, "Invalid", "no listener could be programmed")
    )
    return {
        "conditions": [_condition(accepted, generation), _condition(program, generation)],
        "listeners": listeners,
    }


def statuses(conversion: Conversion, secrets: SecretLookup) -> dict[ObjectKey, dict[str, Any]]:
    """Every Gateway API object of ours, by key, with the status the spec has it carry."""
    out: dict[ObjectKey, dict[str, Any]] = {}
    for name, cls in conversion.classes.items():
        accepted = Condition(ACCEPTED, True, ACCEPTED, f"handled by {cls.controller}")
        out[ObjectKey("GatewayClass", "", name)] = {
            "conditions": [_condition(accepted, cls.api.generation)]
        }
    for result in conversion.gateway_results.values():
        gw = result.gateway
        out[ObjectKey(GATEWAY_KIND, gw.namespace, gw.meta.name)] = gateway_status(result, secrets)
    for key, parents in conversion.route_parents.items():
        generation = conversion.route_generations.get(key, 0)
        out[key] = {
            "parents": [
                {
                    "parentRef": p.ref,
                    "controllerName": p.controller,
                    "conditions": [
                        _condition(p.accepted, generation),
                        _condition(p.resolved, generation),
                    ],
                }
                for p in parents
            ]
        }
    return out


def problems(status: dict[ObjectKey, dict[str, Any]]) -> list[tuple[ObjectKey, str, str]]:
    """(object, status field, message) for each condition that reports a problem: what the
    debug pages and `istiolite validate` show before anything is written to the cluster."""
    out = []
    for key, body in sorted(status.items(), key=lambda item: str(item[0])):
        places: list[tuple[str, list[dict[str, Any]]]] = [
            ("status.conditions", body.get("conditions", []))
        ]
        for i, listener in enumerate(body.get("listeners", [])):
            places.append((f"status.listeners[{i}] ({listener['name']})", listener["conditions"]))
        for i, parent in enumerate(body.get("parents", [])):
            places.append(
                (f"status.parents[{i}] ({parent['parentRef']['name']})", parent["conditions"])
            )
        for where, conditions in places:
            for c in conditions:
                bad = c["status"] == ("True" if c["type"] == "Conflicted" else "False")
                if bad and c["type"] != PROGRAMMED:
                    out.append((key, where, f"{c['type']}: {c['reason']}: {c['message']}"))
    return out
