"""gateway.networking.k8s.io GatewayClass and Gateway (v1, v1beta1): which controller a class
names, and the listeners (port, protocol, hostname, TLS, allowed routes) a Gateway asks for."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.gatewayapi.common import (
    GROUP,
    MAX_LISTENERS,
    ApiMeta,
    hostname,
    limited,
    namespace_name,
    parse_api_meta,
)
from istiolite.model.meta import ObjectMeta
from istiolite.model.validation import (
    ValidationError,
    clip,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)

# The classes istiolite serves without a GatewayClass object (istiod installs `istio`'s).
BUILTIN_CLASSES = {
    "istio": "istio.io/gateway-controller",
    "istiolite": "istiolite.io/gateway-controller",
}
CONTROLLERS = frozenset(BUILTIN_CLASSES.values())
# The label that picks a Gateway's proxies (in its namespace), as istiod's.
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")
_LISTENER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$")
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class GatewayClass:
    meta: ObjectMeta
    api: ApiMeta
    controller: str

    @property
    def ours(self) -> bool:
        return self.controller in CONTROLLERS


def parse_gateway_class(raw: dict[str, Any]) -> GatewayClass:
    meta, api = parse_api_meta(raw, namespaced=False)
    spec = require_mapping(raw.get("spec"), "spec")
    controller = require_str(spec.get("controllerName"), "spec.controllerName", required=True)
    return GatewayClass(meta=meta, api=api, controller=controller)


@dataclass(frozen=True, slots=True)
class SecretRef:
    group: str
    kind: str
    name: str
    namespace: str  # resolved: the Gateway's own when not written


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: dict[str, str] = field(default_factory=dict)
    # (key, operator, values)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Listener:
    index: int
    name: str
    port: int
    protocol: str
    hostname: str = ""  # "" = any host
    tls_mode: str = ""  # Terminate | Passthrough | "" (no tls)
    certificate_refs: tuple[SecretRef, ...] = ()
    namespaces_from: str = "Same"  # Same | All | Selector
    namespace_selector: LabelSelector | None = None
    # (group, kind) the listener allows; empty: the protocol's defaults.
    kinds: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    type: str  # IPAddress | Hostname | NamedAddress
    value: str


@dataclass(frozen=True, slots=True)
class KubeGateway:
    meta: ObjectMeta
    api: ApiMeta
    class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[GatewayAddress, ...] = ()
    # spec.infrastructure: copied onto the deployed children.
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"


def _selector(raw: Any, where: str) -> LabelSelector:
    s = require_mapping(raw, where)
    expressions = []
    for i, item in enumerate(require_list(s.get("matchExpressions"), f"{where}.matchExpressions")):
        at = f"{where}.matchExpressions[{i}]"
        e = require_mapping(item, at)
        op = require_str(e.get("operator"), f"{at}.operator", required=True)
        if op not in _SELECTOR_OPERATORS:
            raise ValidationError(
                f"{at}.operator", f"{clip(op)!r} is not one of {', '.join(_SELECTOR_OPERATORS)}"
            )
        values = tuple(
            require_str(v, f"{at}.values[{j}]", required=True)
            for j, v in enumerate(require_list(e.get("values"), f"{at}.values"))
        )
        if op in ("In", "NotIn") and not values:
            raise ValidationError(f"{at}.values", f"is required for operator {op}")
        expressions.append((require_str(e.get("key"), f"{at}.key", required=True), op, values))
    return LabelSelector(
        match_labels=require_string_map(s.get("matchLabels"), f"{where}.matchLabels"),
        match_expressions=tuple(expressions),
    )


def _listener(raw: Any, i: int, namespace: str) -> Listener:
    where = f"spec.listeners[{i}]"
    item = require_mapping(raw, where)
    name = require_str(item.get("name"), f"{where}.name", required=True)
    if not _LISTENER_NAME.match(name):
        raise ValidationError(f"{where}.name", f"{clip(name)!r} is not a valid section name")
    protocol = require_str(item.get("protocol"), f"{where}.protocol", required=True)
    host = item.get("hostname")
    tls_mode = ""
    refs: list[SecretRef] = []
    if item.get("tls") is not None:
        tls = require_mapping(item["tls"], f"{where}.tls")
        tls_mode = require_str(tls.get("mode"), f"{where}.tls.mode") or "Terminate"
        if tls_mode not in ("Terminate", "Passthrough"):
            raise ValidationError(
                f"{where}.tls.mode", f"{clip(tls_mode)!r} is not Terminate or Passthrough"
            )
        for j, ref in enumerate(
            limited(tls.get("certificateRefs"), f"{where}.tls.certificateRefs", 64)
        ):
            at = f"{where}.tls.certificateRefs[{j}]"
            r = require_mapping(ref, at)
            refs.append(
                SecretRef(
                    group=require_str(r.get("group"), f"{at}.group"),
                    kind=require_str(r.get("kind"), f"{at}.kind") or "Secret",
                    name=require_str(r.get("name"), f"{at}.name", required=True),
                    namespace=namespace_name(r.get("namespace"), f"{at}.namespace") or namespace,
                )
            )
    if protocol == "HTTPS" and tls_mode == "":
        raise ValidationError(f"{where}.tls", "is required for protocol HTTPS")
    if protocol in ("HTTP", "TCP", "UDP") and tls_mode:
        raise ValidationError(f"{where}.tls", f"must not be set for protocol {protocol}")
    if tls_mode == "Terminate" and protocol in ("HTTPS", "TLS") and not refs:
        raise ValidationError(
            f"{where}.tls.certificateRefs", "at least one is required when mode is Terminate"
        )
    allowed = require_mapping(item.get("allowedRoutes"), f"{where}.allowedRoutes")
    ns = require_mapping(allowed.get("namespaces"), f"{where}.allowedRoutes.namespaces")
    from_ = require_str(ns.get("from"), f"{where}.allowedRoutes.namespaces.from") or "Same"
    if from_ not in ("Same", "All", "Selector"):
        raise ValidationError(
            f"{where}.allowedRoutes.namespaces.from",
            f"{clip(from_)!r} is not Same, All or Selector",
        )
    selector = None
    if from_ == "Selector":
        if ns.get("selector") is None:
            raise ValidationError(
                f"{where}.allowedRoutes.namespaces.selector", "is required when from is Selector"
            )
        selector = _selector(ns["selector"], f"{where}.allowedRoutes.namespaces.selector")
    kinds = []
    for j, k in enumerate(limited(allowed.get("kinds"), f"{where}.allowedRoutes.kinds", 8)):
        at = f"{where}.allowedRoutes.kinds[{j}]"
        km = require_mapping(k, at)
        group = km.get("group", GROUP)
        kinds.append(
            (
                require_str(group, f"{at}.group"),
                require_str(km.get("kind"), f"{at}.kind", required=True),
            )
        )
    return Listener(
        index=i,
        name=name,
        port=require_port(item.get("port"), f"{where}.port"),
        protocol=protocol,
        hostname=hostname(host, f"{where}.hostname") if host is not None else "",
        tls_mode=tls_mode,
        certificate_refs=tuple(refs),
        namespaces_from=from_,
        namespace_selector=selector,
        kinds=tuple(kinds),
    )


def parse_kube_gateway(raw: dict[str, Any]) -> KubeGateway:
    meta, api = parse_api_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    class_name = require_str(spec.get("gatewayClassName"), "spec.gatewayClassName", required=True)
    items = limited(spec.get("listeners"), "spec.listeners", MAX_LISTENERS)
    if not items:
        raise ValidationError("spec.listeners", "needs at least one listener")
    listeners = tuple(_listener(item, i, meta.namespace) for i, item in enumerate(items))
    seen: dict[str, int] = {}
    for listener in listeners:
        if listener.name in seen:
            raise ValidationError(
                f"spec.listeners[{listener.index}].name",
                f"{listener.name!r} is already the name of spec.listeners[{seen[listener.name]}]",
            )
        seen[listener.name] = listener.index
    addresses = []
    for i, item in enumerate(limited(spec.get("addresses"), "spec.addresses", 16)):
        a = require_mapping(item, f"spec.addresses[{i}]")
        kind = require_str(a.get("type"), f"spec.addresses[{i}].type") or "IPAddress"
        value = require_str(a.get("value"), f"spec.addresses[{i}].value", required=True)
        addresses.append(GatewayAddress(kind, value))
    infra = require_mapping(spec.get("infrastructure"), "spec.infrastructure")
    return KubeGateway(
        meta=meta,
        api=api,
        class_name=class_name,
        listeners=listeners,
        addresses=tuple(addresses),
        labels=require_string_map(infra.get("labels"), "spec.infrastructure.labels"),
        annotations=require_string_map(infra.get("annotations"), "spec.infrastructure.annotations"),
    )
