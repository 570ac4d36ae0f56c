"""CustomResourceDefinitions for the Gateway API kinds istiolite reads, for clusters that do not
have the Gateway API installed (istiod installs none: users apply the upstream bundle; either
works with istiolite). Written from the fields istiolite's parser reads (gateway.py, routes.py,
reference_grant.py) and the rest of each kind's spec as the Gateway API reference documents it;
`python -m istiolite.model.gatewayapi.crds` prints them (manifests/gateway-api/crds.yaml is that
output, a test keeps the two equal).

Structural schemas, closed where istiolite knows every field (a misspelt field is pruned and
reported by the API server); filters, session persistence and status are kept as given
(`x-kubernetes-preserve-unknown-fields`): the parser checks what it uses. Every version istiolite
reads is served; the first one (istiolite's preferred) is stored. Each kind but ReferenceGrant
has the /status subresource its controllers write.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from istiolite.model.kinds import KINDS

GROUP = "gateway.networking.k8s.io"

_ANY: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer", "format": "int32"}
_PORT: dict[str, Any] = {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535}


def _obj(*required: str, **properties: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def _list(item: dict[str, Any], max_items: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": item}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def _string_map() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": dict(_STR)}


def _label_selector() -> dict[str, Any]:
    return _obj(
        matchLabels=_string_map(),
        matchExpressions=_list(
            _obj("key", "operator", key=_STR, operator=_STR, values=_list(_STR))
        ),
    )


def _parent_ref() -> dict[str, Any]:
    return _obj(
        "name",
        group=_STR,
        kind=_STR,
        namespace=_STR,
        name=_STR,
        sectionName=_STR,
        port=_PORT,
    )


def _backend_ref(*, filters: bool) -> dict[str, Any]:
    fields: dict[str, dict[str, Any]] = {
        "group": _STR,
        "kind": _STR,
        "name": _STR,
        "namespace": _STR,
        "port": _PORT,
        "weight": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 1000000},
    }
    if filters:
        fields["filters"] = _list(_ANY, 16)
    return _obj("name", **fields)


def _header_match() -> dict[str, Any]:
    return _obj("name", "value", type=_STR, name=_STR, value=_STR)


def _route_common() -> dict[str, dict[str, Any]]:
    return {"parentRefs": _list(_parent_ref(), 32)}


def _http_route_spec() -> dict[str, Any]:
    match = _obj(
        path=_obj(type=_STR, value=_STR),
        headers=_list(_header_match(), 16),
        queryParams=_list(_header_match(), 16),
        method=_STR,
    )
    rule = _obj(
        name=_STR,
        matches=_list(match, 64),
        filters=_list(_ANY, 16),
        backendRefs=_list(_backend_ref(filters=True), 16),
        timeouts=_obj(request=_STR, backendRequest=_STR),
        retry=_obj(codes=_list(_INT), attempts=_INT, backoff=_STR),
        sessionPersistence=_ANY,
    )
    return _obj(**_route_common(), hostnames=_list(_STR, 16), rules=_list(rule, 16))


def _grpc_route_spec() -> dict[str, Any]:
    match = _obj(
        method=_obj(type=_STR, service=_STR, method=_STR),
        headers=_list(_header_match(), 16),
    )
    rule = _obj(
        name=_STR,
        matches=_list(match, 64),
        filters=_list(_ANY, 16),
        backendRefs=_list(_backend_ref(filters=True), 16),
        sessionPersistence=_ANY,
    )
    return _obj(**_route_common(), hostnames=_list(_STR, 16), rules=_list(rule, 16))


def _l4_route_spec(*, hostnames: bool) -> dict[str, Any]:
    rule = _obj(name=_STR, backendRefs=_list(_backend_ref(filters=False), 16))
    fields = _route_common()
    if hostnames:
        fields["hostnames"] = _list(_STR, 16)
    return _obj("rules", **fields, rules=_list(rule, 16))


def _gateway_spec() -> dict[str, Any]:
    certificate_ref = _obj("name", group=_STR, kind=_STR, name=_STR, namespace=_STR)
    listener = _obj(
        "name",
        "port",
        "protocol",
        name=_STR,
        hostname=_STR,
        port=_PORT,
        protocol=_STR,
        tls=_obj(
            mode=_STR,
            certificateRefs=_list(certificate_ref, 64),
            frontendValidation=_ANY,
            options=_string_map(),
        ),
        allowedRoutes=_obj(
            namespaces=_obj(**{"from": _STR, "selector": _label_selector()}),
            kinds=_list(_obj("kind", group=_STR, kind=_STR), 8),
        ),
    )
    return _obj(
        "gatewayClassName",
        "listeners",
        gatewayClassName=_STR,
        listeners=_list(listener, 64),
        addresses=_list(_obj("value", type=_STR, value=_STR), 16),
        infrastructure=_obj(
            labels=_string_map(),
            annotations=_string_map(),
            parametersRef=_obj("group", "kind", "name", group=_STR, kind=_STR, name=_STR),
        ),
        backendTLS=_ANY,
    )


def _gateway_class_spec() -> dict[str, Any]:
    return _obj(
        "controllerName",
        controllerName=_STR,
        description=_STR,
        parametersRef=_obj(
            "group", "kind", "name", group=_STR, kind=_STR, name=_STR, namespace=_STR
        ),
    )


def _reference_grant_spec() -> dict[str, Any]:
    return _obj(
        "from",
        "to",
        **{
            "from": _list(
                _obj("group", "kind", "namespace", group=_STR, kind=_STR, namespace=_STR), 16
            ),
            "to": _list(_obj("group", "kind", group=_STR, kind=_STR, name=_STR), 16),
        },
    )


# By istiolite's kind name (KINDS): the API kind, its spec schema, whether it has a status.
_KINDS: dict[str, tuple[str, Any, bool]] = {
    "GatewayClass": ("GatewayClass", _gateway_class_spec, True),
    "KubernetesGateway": ("Gateway", _gateway_spec, True),
    "HTTPRoute": ("HTTPRoute", _http_route_spec, True),
    "GRPCRoute": ("GRPCRoute", _grpc_route_spec, True),
    "TLSRoute": ("TLSRoute", lambda: _l4_route_spec(hostnames=True), True),
    "TCPRoute": ("TCPRoute", lambda: _l4_route_spec(hostnames=False), True),
    "ReferenceGrant": ("ReferenceGrant", _reference_grant_spec, False),
}
_SHORT_NAMES = {
    "GatewayClass": ["gc"],
    "KubernetesGateway": ["gtw"],
    "ReferenceGrant": ["refgrant"],
}


def _plural(kind: str) -> str:
    return kind.lower() + ("es" if kind.endswith("s") else "s")


def crd(name: str) -> dict[str, Any]:
    kind = KINDS[name]
    api_kind, spec, has_status = _KINDS[name]
    plural = _plural(api_kind)
    properties: dict[str, Any] = {"spec": spec()}
    if has_status:
        properties["status"] = dict(_ANY)
    schema = {"type": "object", "required": ["spec"], "properties": properties}
    names: dict[str, Any] = {
        "kind": api_kind,
        "listKind": f"{api_kind}List",
        "plural": plural,
        "singular": api_kind.lower(),
        "categories": ["gateway-api"],
    }
    if name in _SHORT_NAMES:
        names["shortNames"] = _SHORT_NAMES[name]
    versions = []
    for i, version in enumerate(kind.versions):
        entry: dict[str, Any] = {"name": version, "served": True, "storage": i == 0}
        if has_status:
            entry["subresources"] = {"status": {}}
        entry["schema"] = {"openAPIV3Schema": schema}
        versions.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "istiolite"},
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": versions,
        },
    }


def crds() -> list[dict[str, Any]]:
    return [crd(name) for name in sorted(_KINDS)]


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = (
        "# Generated by `python -m istiolite.model.gatewayapi.crds`; do not edit.\n"
        "# The Gateway API kinds istiolite reads, for a cluster without the upstream bundle.\n"
    )
    body = yaml.dump_all(crds(), Dumper=_NoAliases, sort_keys=False, explicit_start=True)
    return header + body


if __name__ == "__main__":
    sys.stdout.write(render())
