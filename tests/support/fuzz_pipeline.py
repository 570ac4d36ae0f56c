"""validate → generate → serialize for one fuzzed object, in a small fixed mesh, as the server
would: the object is parsed by the real parser, indexed with the mesh in a PushContext, and every
xDS type is generated for a sidecar and a router; then each resource is decoded and dumped as JSON.

`run` returns None when validation rejects the object (after checking the error names a field the
schema knows), else what each proxy got. It fails (AssertionError) when anything else goes wrong:
an exception that is not a ValidationError, a generation error (the object was dropped by the
guard instead of being rejected by validation), a resource that does not serialize.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message

from istiolite import type_urls
from istiolite.model.kinds import parse_object
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.model.schema import OBJECTS, field_paths
from istiolite.model.validation import ValidationError
from istiolite.networking.generator import generate, message_class, offline_generator
from istiolite.push.context import PushContext
from tests.support import objects

SIDECAR_ID = f"sidecar~10.1.0.99~client.default~default.svc.{objects.DOMAIN}"
ROUTER_ID = f"router~10.1.0.200~ingress.default~default.svc.{objects.DOMAIN}"
ROUTER_LABELS = {"istio": "ingressgateway"}
PROXIES: dict[str, tuple[str, dict[str, str]]] = {
    "sidecar": (SIDECAR_ID, {"app": "client"}),
    "router": (ROUTER_ID, ROUTER_LABELS),
}

MESH: list[objects.Raw] = [
    objects.service("reviews"),
    objects.service("details"),
    objects.service("db", cluster_ip="10.96.0.9", ports=[objects.service_port("tcp", 3306)]),
    objects.endpoint_slice("reviews", endpoints=["10.1.0.7", "10.1.0.8"]),
    objects.endpoint_slice("details", endpoints=["10.1.0.9"]),
    objects.endpoint_slice("db", endpoints=["10.1.0.10"], ports=[("tcp", 3306)]),
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {
            "selector": ROUTER_LABELS,
            "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
            ],
        },
    },
]
_BASE = objects.parse(*MESH)


@dataclass(frozen=True)
class Generated:
    """What one proxy got: decoded resources by type URL, then by name."""

    proxy: str
    node_id: str
    labels: dict[str, str]
    by_type: dict[str, dict[str, message.Message]]


def _proxy(node_id: str, labels: dict[str, str]) -> Proxy:
    return parse_proxy(node_id, {"NAMESPACE": "default", "LABELS": labels})


_INDEX = re.compile(r"\[\d+\]")


def assert_names_a_field(raw: dict[str, Any], err: ValidationError) -> None:
    """The error's field is a path the kind's schema has (map keys and indices aside)."""
    assert err.message, err
    known = set(field_paths(OBJECTS[raw["kind"]]))
    path = _INDEX.sub("", err.field)
    # A prefix of the path is a schema field: deeper parts are map keys (labels, headers …).
    parts = path.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    starred = {p for p in known if ".*" in p}
    assert prefixes & known or any(
        re.fullmatch(re.escape(p).replace(r"\*", r"[^.]+"), q) for p in starred for q in prefixes
    ), f"error names no field of {raw['kind']}: {err.field!r} ({err.message})"


def run(raw: dict[str, Any]) -> list[Generated] | None:
    try:
        key, model = parse_object(raw)
    except ValidationError as err:
        assert_names_a_field(raw, err)
        return None
    ctx = PushContext({**_BASE, key: model}, domain=objects.DOMAIN, version="fuzz")
    ctx.reference_warnings()  # what the server logs on every push must not raise either
    out = []
    for name, (node_id, labels) in PROXIES.items():
        proxy = _proxy(node_id, labels)
        by_type: dict[str, dict[str, message.Message]] = {}
        for type_url in type_urls.PUSH_ORDER:
            cls = message_class(type_url)
            assert cls is not None, type_url
            decoded = {}
            for res_name, resource in generate(ctx, proxy, type_url).items():
                msg = cls.FromString(resource.payload)
                json_format.MessageToJson(msg)  # serializes as the debug pages would
                decoded[res_name] = msg
            by_type[type_url] = decoded
        out.append(Generated(name, node_id, labels, by_type))
    errors = offline_generator(ctx).cache.errors()
    assert not errors, f"passed validation but was dropped in generation: {errors}"
    return out
