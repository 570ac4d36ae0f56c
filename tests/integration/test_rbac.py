"""RBAC grants nothing the code does not use, and the code uses nothing RBAC does not grant:
a real `istiolite serve --kubeconfig` (reading, leading, writing, checking a token) against the
test API server, whose log of every call is compared with manifests/base/rbac.yaml both ways."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from istiolite._generated.istio.v1.auth import ca_pb2
from istiolite.model.kinds import KINDS
from istiolite.sources.kube.resources import NOT_TRANSLATED, WATCHED
from tests.support.kube_apiserver import KubeApiServer, RecordedRequest
from tests.support.processes import IstioliteProcess
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
CREATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
# One object of every Istio kind: the leader reads each and writes its status.
SPECS: dict[str, dict[str, Any]] = {
    "VirtualService": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": ""}}]}]},
    "DestinationRule": {"host": "a.shop.svc.cluster.local"},
    "Gateway": {"selector": {"istio": "ingressgateway"}, "servers": []},
    "ServiceEntry": {
        "hosts": ["example.com"],
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "DNS",
    },
    "Sidecar": {"egress": [{"hosts": ["./*"]}]},
    "WorkloadEntry": {"address": "10.0.0.1"},
    "PeerAuthentication": {"mtls": {"mode": "STRICT"}},
    "AuthorizationPolicy": {},
    "RequestAuthentication": {"jwtRules": [{"issuer": "https://issuer.example", "jwks": "{}"}]},
}

_GW = "gateway.networking.k8s.io"
_RULES = {"rules": [{"backendRefs": [{"name": "web", "port": 9000}]}]}
# One object of every Gateway API kind whose status the leader writes (a GatewayClass of ours, a
# Gateway of that class, a route of each kind attached to it) and a ReferenceGrant it reads.
GATEWAY_API_OBJECTS: list[dict[str, Any]] = [
    {
        "apiVersion": f"{_GW}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "istio", "generation": 1},
        "spec": {"controllerName": "istio.io/gateway-controller"},
    },
    {
        "apiVersion": f"{_GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop", "generation": 1},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "tls", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                {"name": "tcp", "port": 9000, "protocol": "TCP"},
            ],
        },
    },
    *(
        {
            "apiVersion": f"{_GW}/{version}",
            "kind": kind,
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"parentRefs": [{"name": "edge"}], **spec},
        }
        for kind, version, spec in (
            ("HTTPRoute", "v1", {}),
            ("GRPCRoute", "v1", {}),
            ("TLSRoute", "v1alpha2", {"hostnames": ["web.example.com"], **_RULES}),
            ("TCPRoute", "v1alpha2", _RULES),
        )
    ),
    {
        "apiVersion": f"{_GW}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "routes", "namespace": "shop"},
        "spec": {
            "from": [{"group": _GW, "kind": "HTTPRoute", "namespace": "other"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    },
]


@dataclass(frozen=True)
class Call:
    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.verb} {self.resource}.{self.group or 'core'} {where}"


def _call(request: RecordedRequest) -> Call | None:
    parts = request.path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None  # discovery (/api, /apis, /version): allowed to every authenticated user
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    if request.method == "GET":
        if name:
            verb = "get"
        else:
            verb = "watch" if request.query.get("watch") in ("1", "true") else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[
            request.method
        ]
    if not name and verb in ("list", "watch"):
        selector = request.query.get("fieldSelector", "")
        if selector.startswith("metadata.name="):
            name = selector.partition("=")[2]  # what resourceNames allows for list/watch
    return Call(verb, group, resource, namespace, name)


def _rules() -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, namespace, rule) of every Role and ClusterRole in the manifest."""
    out = []
    for doc in yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml").read_text()):
        if doc and doc["kind"] in ("Role", "ClusterRole"):
            namespace = doc["metadata"].get("namespace", "")
            out += [(doc["kind"], namespace, rule) for rule in doc["rules"]]
    return out


def _allows(rule: dict[str, Any], scope: str, call: Call) -> bool:
    if scope and call.namespace != scope:
        return False
    names = rule.get("resourceNames")
    return (
        call.group in rule["apiGroups"]
        and call.resource in rule["resources"]
        and call.verb in rule["verbs"]
        and (not names or call.name in names)
    )


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Call]]:
    work = tmp_path_factory.mktemp("rbac")
    config = work / "config"
    config.mkdir()
    with KubeApiServer() as apiserver:
        for name in ("istio-system", "shop"):
            apiserver.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        # a stale root ConfigMap: the leader corrects it (update)
        apiserver.put(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"},
                "data": {"root-cert.pem": "an old root"},
            }
        )
        for doc in yaml.safe_load_all((ROOT / "manifests" / "base" / "webhooks.yaml").read_text()):
            apiserver.put(doc)
        for kind, spec in SPECS.items():
            group = KINDS[kind].group
            apiserver.put(
                {
                    "apiVersion": f"{group}/v1",
                    "kind": kind,
                    "metadata": {"name": "one", "namespace": "shop", "generation": 1},
                    "spec": spec,
                }
            )
        # The Gateway API's CRDs, as manifests/gateway-api/ installs them: istiolite watches
        # its kinds once they are installed, and writes their /status subresources.
        crds = (ROOT / "manifests" / "gateway-api" / "crds.yaml").read_text()
        for crd in yaml.safe_load_all(crds):
            if crd:
                apiserver.put(crd)
        for doc in GATEWAY_API_OBJECTS:
            apiserver.put(doc)
        # The CRDs of the Istio kinds istiolite only reports: it watches them once installed.
        for name, watched in [*WATCHED.items(), *NOT_TRANSLATED.items()]:
            if not watched.translated and watched.group != "gateway.networking.k8s.io":
                apiserver.install_crd(
                    watched.group,
                    watched.api_kind or name,
                    watched.plural,
                    watched.versions,
                    namespaced=watched.namespaced,
                )
        istiolite = IstioliteProcess(
            [config],
            work,
            "--kubeconfig", str(apiserver.write_kubeconfig(work / "kubeconfig")),
            "--leader-lease-duration", "4s",
        )  # fmt: skip
        try:
            token = apiserver.add_token("shop", "reviews")
            _create_certificate(istiolite.secure_grpc_port, token, apiserver)

            def done() -> bool:
                webhook = apiserver.get(
                    "admissionregistration.k8s.io/v1",
                    "ValidatingWebhookConfiguration",
                    "",
                    "istio-validator-istio-system",
                )
                cm = apiserver.get("v1", "ConfigMap", "shop", "istio-ca-root-cert")
                statuses = [
                    apiserver.get(f"{KINDS[kind].group}/v1", kind, "shop", "one") or {}
                    for kind in SPECS
                ]
                statuses += [
                    apiserver.get(
                        doc["apiVersion"],
                        doc["kind"],
                        doc["metadata"].get("namespace", ""),
                        doc["metadata"]["name"],
                    )
                    or {}
                    for doc in GATEWAY_API_OBJECTS
                    if doc["kind"] != "ReferenceGrant"  # no status
                ]
                renewed = any(
                    r.method == "PUT" and "/leases/" in r.path for r in apiserver.requests
                )
                return bool(
                    webhook
                    and webhook["webhooks"][0]["clientConfig"].get("caBundle")
                    and cm
                    and cm["data"]["root-cert.pem"] != "an old root"
                    and all(obj.get("status") for obj in statuses)
                    and renewed
                )

            wait_for(done, timeout=30, what="the leader's writes and a Lease renewal")
            _edit_gateway_children(apiserver)
            time.sleep(0.5)
        finally:
            istiolite.stop()
        yield [c for r in list(apiserver.requests) if (c := _call(r)) is not None]


def _edit_gateway_children(apiserver: KubeApiServer) -> None:
    """The Gateway's ServiceAccount, Deployment and Service, made by the gateway deployment,
    edited by someone else: the leader puts each back (an update)."""
    children = (("v1", "ServiceAccount"), ("apps/v1", "Deployment"), ("v1", "Service"))
    for api_version, kind in children:
        wait_for(
            lambda v=api_version, k=kind: apiserver.get(v, k, "shop", "edge-istio"),
            timeout=30,
            what=f"the Gateway's {kind}",
        )
    for api_version, kind in children:
        obj = apiserver.get(api_version, kind, "shop", "edge-istio")
        assert obj is not None
        obj["metadata"]["labels"] = {"edited": "yes"}
        apiserver.put(obj)
    for api_version, kind in children:
        wait_for(
            lambda v=api_version, k=kind: (
                (apiserver.get(v, k, "shop", "edge-istio") or {})
                .get("metadata", {})
                .get("labels", {})
                .get("istio.io/gateway-name")
            ),
            timeout=30,
            what=f"the Gateway's {kind} put back",
        )


def _create_certificate(port: int, token: str, apiserver: KubeApiServer) -> None:
    """As pilot-agent asks: a CSR with its service-account token (a TokenReview follows)."""
    root = wait_for(
        lambda: apiserver.get("v1", "ConfigMap", "istio-system", "istio-ca-root-cert"),
        timeout=30,
        what="the root ConfigMap in istio-system",
    )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    creds = grpc.ssl_channel_credentials(root_certificates=root["data"]["root-cert.pem"].encode())
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        call = channel.unary_unary(
            CREATE,
            request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
            response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
        )
        request = ca_pb2.IstioCertificateRequest(csr=csr.decode(), validity_duration=3600)
        response = call(
            request,
            metadata=[("authorization", f"Bearer {token}"), ("clusterid", "Kubernetes")],
            timeout=20,
        )
    assert response.cert_chain


def test_every_call_is_granted(calls: list[Call]) -> None:
    rules = _rules()
    refused = sorted({str(c) for c in calls if not any(_allows(r, ns, c) for _k, ns, r in rules)})
    assert refused == [], "calls the RBAC rules would refuse"


def test_every_grant_is_used(calls: list[Call]) -> None:
    unused = []
    for kind, namespace, rule in _rules():
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    if not any(
                        c.verb == verb
                        and c.group == group
                        and c.resource == resource
                        and _allows(rule, namespace, c)
                        for c in calls
                    ):
                        unused.append(f"{kind} {namespace}: {verb} {resource}.{group or 'core'}")
    assert unused == [], "grants no call used:\n" + "\n".join(unused)
