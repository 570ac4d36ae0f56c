"""A Gateway API listener's certificate Secret in another namespace: served as
`kubernetes://<namespace>/<name>` to that Gateway's router proxies only, and only while a
ReferenceGrant in the Secret's namespace allows it; anyone else asking is refused with a reason
naming the resource."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from istiolite import type_urls
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.networking import generator
from istiolite.networking.credentials import credential_denial
from istiolite.push.context import PushContext
from tests.support.certs import CertificateAuthority, KeyPair, tls_secret
from tests.support.objects import context
from tests.unit.networking.helpers import listeners, sidecar

GW = "gateway.networking.k8s.io"
RESOURCE = "kubernetes://certs/shared-cert"


@pytest.fixture(scope="module")
def pair() -> KeyPair:
    return CertificateAuthority("cross-namespace CA").issue("a.example.com")


def _gateway(name: str = "edge", namespace: str = "edge") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "hostname": "a.example.com",
                    "tls": {"certificateRefs": [{"name": "shared-cert", "namespace": "certs"}]},
                }
            ],
        },
    }


def _grant(from_namespace: str = "edge", **to: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "gateways", "namespace": "certs"},
        "spec": {
            "from": [{"group": GW, "kind": "Gateway", "namespace": from_namespace}],
            "to": [{"group": "", "kind": "Secret", **to}],
        },
    }


def _router(namespace: str = "edge", gateway: str = "edge", pod: str = "edge-1") -> Proxy:
    return parse_proxy(
        f"router~10.1.0.7~{pod}.{namespace}~{namespace}.svc.cluster.local",
        {"LABELS": {"gateway.networking.k8s.io/gateway-name": gateway}},
    )


def _secrets(ctx: PushContext, proxy: Proxy) -> dict[str, secret_pb2.Secret]:
    found = generator.generate(ctx, proxy, type_urls.SECRET)
    return {name: secret_pb2.Secret.FromString(r.payload) for name, r in found.items()}


def _status(ctx: PushContext) -> dict[str, Any]:
    statuses = ctx.gateway_api_status().items()
    gateway = next(v for k, v in statuses if k.kind == "KubernetesGateway")
    (listener,) = gateway["listeners"]
    return {c["type"]: c for c in listener["conditions"]}


def test_granted_secret_goes_to_the_gateways_proxies(pair: KeyPair) -> None:
    ctx = context(_gateway(), _grant(), tls_secret("shared-cert", "certs", pair))
    proxy = _router()
    assert credential_denial(ctx, proxy, RESOURCE) is None
    served = _secrets(ctx, proxy)
    assert set(served) == {RESOURCE}
    assert served[RESOURCE].tls_certificate.certificate_chain.inline_bytes == pair.cert_pem
    assert "0.0.0.0_443" in listeners(ctx, proxy)
    assert _status(ctx)["ResolvedRefs"]["status"] == "True"
    assert _status(ctx)["Programmed"]["status"] == "True"


def test_a_grant_naming_the_secret_allows_it_and_one_naming_another_does_not(
    pair: KeyPair,
) -> None:
    secret = tls_secret("shared-cert", "certs", pair)
    named = context(_gateway(), _grant(name="shared-cert"), secret)
    assert credential_denial(named, _router(), RESOURCE) is None
    other = context(_gateway(), _grant(name="other-cert"), secret)
    assert credential_denial(other, _router(), RESOURCE) is not None
    assert _secrets(other, _router()) == {}


@pytest.mark.parametrize(
    "proxy",
    [
        _router(gateway="other"),  # another Gateway's router in the same namespace
        _router(namespace="elsewhere"),  # the right labels, another namespace
        sidecar("edge", labels={"gateway.networking.k8s.io/gateway-name": "edge"}),
    ],
    ids=["other-gateway", "other-namespace", "sidecar"],
)
def test_no_other_proxy_gets_it(pair: KeyPair, proxy: Proxy) -> None:
    ctx = context(
        _gateway(),
        _gateway("other", "elsewhere"),
        _grant(),
        tls_secret("shared-cert", "certs", pair),
    )
    reason = credential_denial(ctx, proxy, RESOURCE)
    assert reason is not None and RESOURCE in reason
    assert RESOURCE not in _secrets(ctx, proxy)


def test_without_the_grant_nothing_is_served_and_the_listener_is_refused(pair: KeyPair) -> None:
    ctx = context(
        _gateway(), _grant(from_namespace="nope"), tls_secret("shared-cert", "certs", pair)
    )
    reason = credential_denial(ctx, _router(), RESOURCE)
    assert reason is not None and "certs/shared-cert" in reason
    assert _secrets(ctx, _router()) == {}
    assert "0.0.0.0_443" not in listeners(ctx, _router())
    resolved = _status(ctx)["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted")


def test_an_istio_gateway_cannot_name_another_namespaces_secret(pair: KeyPair) -> None:
    """`ns/name` in an Istio Gateway's credentialName is no way around the grant."""
    istio = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "sneaky", "namespace": "edge"},
        "spec": {
            "selector": {"gateway.networking.k8s.io/gateway-name": "edge"},
            "servers": [
                {
                    "port": {"number": 8443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {"mode": "SIMPLE", "credentialName": "certs/shared-cert"},
                }
            ],
        },
    }
    ctx = context(istio, tls_secret("shared-cert", "certs", pair))
    assert credential_denial(ctx, _router(), RESOURCE) is not None
    assert _secrets(ctx, _router()) == {}
    assert "0.0.0.0_8443" not in listeners(ctx, _router())


def test_own_namespace_resources_are_not_this_decisions(pair: KeyPair) -> None:
    ctx = context(_gateway())
    assert credential_denial(ctx, _router(), "kubernetes://edge-cert") is None
    assert credential_denial(ctx, _router(), "kubernetes://edge/edge-cert") is None
