"""CustomResourceDefinitions of the Istio kinds istiolite serves, generated from `schema.py`: one
source of truth for the fields `kubectl apply` accepts in a cluster and those the file source
and /validate accept. `python -m istiolite.model.crds` prints them (manifests/base/crds.yaml is
that output; a test keeps the two equal).

Closed schemas: each message lists its fields, so the API server's field validation refuses an
unknown one as kubectl's strict mode does (Kubernetes forbids `additionalProperties: false`;
undeclared fields are what it prunes and reports). A scalar-ish field (`S` in schema.py: a
scalar, a list of scalars or a map the user keys) keeps its value as given; the translator checks
its type. Versions served as Istio serves them, with Istio's storage versions.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from istiolite.model.kinds import KINDS
from istiolite.model.schema import SPECS, MapOf, Msg

# Message fields that are lists of messages (repeated in Istio's protos); every other message
# field holds one message. By (message name, field name).
REPEATED: frozenset[tuple[str, str]] = frozenset(
    {
        ("VirtualService", "http"),
        ("VirtualService", "tls"),
        ("VirtualService", "tcp"),
        ("HTTPRoute", "match"),
        ("HTTPRoute", "route"),
        ("HTTPRoute", "mirrors"),
        ("TLSRoute", "match"),
        ("TLSRoute", "route"),
        ("TCPRoute", "match"),
        ("TCPRoute", "route"),
        ("CorsPolicy", "allowOrigins"),
        ("HTTPCookie", "attributes"),
        ("LocalityLoadBalancerSetting", "distribute"),
        ("LocalityLoadBalancerSetting", "failover"),
        ("DestinationRule", "subsets"),
        ("TrafficPolicy", "portLevelSettings"),
        ("ServerTLSSettings", "tlsCertificates"),
        ("Gateway", "servers"),
        ("ServiceEntry", "ports"),
        ("ServiceEntry", "endpoints"),
        ("Sidecar", "ingress"),
        ("Sidecar", "egress"),
        ("AuthorizationPolicy", "rules"),
        ("AuthorizationPolicy", "targetRefs"),
        ("Rule", "from"),
        ("Rule", "to"),
        ("Rule", "when"),
        ("RequestAuthentication", "jwtRules"),
        ("RequestAuthentication", "targetRefs"),
        ("JWTRule", "fromHeaders"),
        ("JWTRule", "outputClaimToHeaders"),
    }
)

PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "ServiceEntry": "serviceentries",
    "Sidecar": "sidecars",
    "Gateway": "gateways",
    "WorkloadEntry": "workloadentries",
    "PeerAuthentication": "peerauthentications",
    "AuthorizationPolicy": "authorizationpolicies",
    "RequestAuthentication": "requestauthentications",
}
SHORT_NAMES = {
    "VirtualService": ["vs"],
    "DestinationRule": ["dr"],
    "ServiceEntry": ["se"],
    "Gateway": ["gw"],
    "WorkloadEntry": ["we"],
    "PeerAuthentication": ["pa"],
    "AuthorizationPolicy": ["ap"],
    "RequestAuthentication": ["ra"],
}
# The version etcd stores each group in (Istio's choice, so an existing install keeps reading).
STORAGE_VERSION = {"networking.istio.io": "v1alpha3", "security.istio.io": "v1beta1"}

_ANY: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


def message_schema(msg: Msg) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name in sorted(msg.fields):
        field = msg.fields[name]
        if field is None:
            properties[name] = dict(_ANY)
        elif isinstance(field, MapOf):
            properties[name] = {
                "type": "object",
                "additionalProperties": message_schema(field.value),
            }
        elif (msg.name, name) in REPEATED:
            properties[name] = {"type": "array", "items": message_schema(field)}
        else:
            properties[name] = message_schema(field)
    return {"type": "object", "properties": properties}


def crd(kind_name: str) -> dict[str, Any]:
    kind = KINDS[kind_name]
    plural = PLURALS[kind_name]
    schema = {
        "type": "object",
        "properties": {
            "spec": message_schema(SPECS[kind_name]),
            # written by controllers (conditions, validationMessages, observedGeneration)
            "status": {"type": "object", **_ANY},
        },
    }
    names: dict[str, Any] = {
        "kind": kind_name,
        "listKind": f"{kind_name}List",
        "plural": plural,
        "singular": kind_name.lower(),
        "categories": ["istio-io", kind.group.replace(".", "-")],
    }
    if kind_name in SHORT_NAMES:
        names["shortNames"] = SHORT_NAMES[kind_name]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{kind.group}",
            "labels": {"app.kubernetes.io/part-of": "istiolite"},
        },
        "spec": {
            "group": kind.group,
            "names": names,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == STORAGE_VERSION[kind.group],
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": schema},
                }
                for version in kind.versions
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    return [crd(name) for name in sorted(SPECS)]


class _NoAliases(yaml.SafeDumper):
    """Every version's schema written out in full: no YAML anchors for tools to trip on."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = (
        "# Generated by `python -m istiolite.model.crds` from istiolite/model/schema.py;"
        " do not edit.\n"
    )
    body = yaml.dump_all(crds(), Dumper=_NoAliases, sort_keys=False, explicit_start=True)
    return header + body


if __name__ == "__main__":
    sys.stdout.write(render())
