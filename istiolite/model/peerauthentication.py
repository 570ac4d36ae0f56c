"""security.istio.io PeerAuthentication: which mutual TLS a workload's sidecar accepts inbound.

A policy in the root namespace without a selector is mesh-wide; one elsewhere without a selector
covers its namespace; one with `selector.matchLabels` covers the workloads it selects (outside the
root namespace only, as istiod). `portLevelMtls` (workload port → mode) needs a selector, as
istiod's validation says. How the levels combine is `compose` (istiod's
ComposePeerAuthentication).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.sidecar import ROOT_NAMESPACE
from istiolite.model.validation import (
    ValidationError,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)


class MtlsMode(StrEnum):
    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


_MODES = ", ".join(m.value for m in MtlsMode)


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    meta: ObjectMeta
    selector: Mapping[str, str] = field(default_factory=dict)  # empty: namespace or mesh wide
    mode: MtlsMode = MtlsMode.UNSET
    port_modes: Mapping[int, MtlsMode] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True, slots=True)
class EffectiveMtls:
    """The mode a workload's sidecar enforces, per port where its workload policy says so.
    Hashable: part of listener cache keys."""

    mode: MtlsMode = MtlsMode.PERMISSIVE
    port_modes: tuple[tuple[int, MtlsMode], ...] = ()

    def for_port(self, port: int) -> MtlsMode:
        for number, mode in self.port_modes:
            if number == port:
                return mode
        return self.mode


DEFAULT_MTLS = EffectiveMtls()


def _mode(raw: Any, where: str) -> MtlsMode:
    if raw is None:
        return MtlsMode.UNSET
    mtls = require_mapping(raw, where)
    text = require_str(mtls.get("mode"), f"{where}.mode") or "UNSET"
    try:
        return MtlsMode(text)
    except ValueError:
        raise ValidationError(f"{where}.mode", f"{text!r} is not one of {_MODES}") from None


def parse_peer_authentication(raw: dict[str, Any]) -> PeerAuthentication:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    selector_raw = require_mapping(spec.get("selector"), "spec.selector")
    selector = require_string_map(selector_raw.get("matchLabels"), "spec.selector.matchLabels")
    mode = _mode(spec.get("mtls"), "spec.mtls")
    ports_raw = require_mapping(spec.get("portLevelMtls"), "spec.portLevelMtls")
    if spec.get("portLevelMtls") is not None and not ports_raw:
        raise ValidationError("spec.portLevelMtls", "must name at least one port when set")
    if ports_raw and not selector:
        raise ValidationError(
            "spec.portLevelMtls", "needs spec.selector (port-level mTLS applies to workloads)"
        )
    port_modes: dict[int, MtlsMode] = {}
    for key, value in ports_raw.items():
        where = f"spec.portLevelMtls.{key}"
        try:
            number = int(str(key))
        except ValueError:
            raise ValidationError(where, f"{str(key)[:40]!r} is not a port number") from None
        require_port(number, where)
        if value is None:
            raise ValidationError(where, "needs a mode")
        port_modes[number] = _mode(value, where)
    return PeerAuthentication(
        meta=meta, selector=selector, mode=mode, port_modes=dict(sorted(port_modes.items()))
    )


def compose(policies: Iterable[PeerAuthentication], namespace: str) -> EffectiveMtls:
    """istiod's ComposePeerAuthentication for a workload in `namespace`, given every policy that
    applies to it (mesh, its namespace's, those selecting it), oldest first (here: by
    namespace/name). The first of each level counts; UNSET inherits from the level above
    (mesh → namespace → workload); a port-level UNSET takes the workload's result."""
    mesh = namespace_level = workload = None
    for policy in policies:
        if not policy.selector:
            if policy.namespace == ROOT_NAMESPACE:
                mesh = mesh or policy
            elif policy.namespace == namespace:
                namespace_level = namespace_level or policy
        elif policy.namespace == namespace and policy.namespace != ROOT_NAMESPACE:
            workload = workload or policy
    mode = MtlsMode.PERMISSIVE
    for level in (mesh, namespace_level, workload):
        if level is not None and level.mode != MtlsMode.UNSET:
            mode = level.mode
    ports: tuple[tuple[int, MtlsMode], ...] = ()
    if workload is not None:
        ports = tuple(
            (port, mode if port_mode == MtlsMode.UNSET else port_mode)
            for port, port_mode in workload.port_modes.items()
        )
    return EffectiveMtls(mode, ports)


def namespace_mode(policies: Iterable[PeerAuthentication], namespace: str) -> MtlsMode:
    """istiod's GetNamespaceMutualTLSMode: the namespace policy's mode (UNSET inherits), else the
    mesh policy's (UNSET: PERMISSIVE); UNSET when neither exists. Auto mTLS reads it as a hint
    for a service's port (workload and port-level policies are not consulted, as istiod)."""
    mesh = namespace_level = None
    for policy in policies:
        if policy.selector:
            continue
        if policy.namespace == ROOT_NAMESPACE:
            mesh = mesh or policy
        elif policy.namespace == namespace:
            namespace_level = namespace_level or policy
    inherited = MtlsMode.UNSET
    if mesh is not None:
        inherited = mesh.mode if mesh.mode != MtlsMode.UNSET else MtlsMode.PERMISSIVE
    if namespace_level is not None:
        if namespace_level.mode != MtlsMode.UNSET:
            return namespace_level.mode
        return inherited if inherited != MtlsMode.UNSET else MtlsMode.PERMISSIVE
    return inherited
