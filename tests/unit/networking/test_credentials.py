"""SDS: the Secrets a proxy may use, as Istio names them: `kubernetes://<name>` (certificate and
key) and `kubernetes://<name>-cacert` (the trust bundle), from the proxy's own namespace only."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from istiolite import type_urls
from istiolite.networking import generator
from istiolite.networking.credentials import credential_secrets
from istiolite.push.context import PushContext
from istiolite.render import render
from tests.support.certs import CertificateAuthority, KeyPair, tls_secret
from tests.support.objects import context
from tests.unit.networking.helpers import router, sidecar

GW_NS = "istio-system"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("credentials unit CA")


@pytest.fixture(scope="module")
def client_ca() -> CertificateAuthority:
    return CertificateAuthority("client CA")


@pytest.fixture(scope="module")
def pair(ca: CertificateAuthority) -> KeyPair:
    return ca.issue("hello.example.com", dns=("hello.example.com",))


def ca_secret(name: str, namespace: str, bundle: bytes, key: str = "ca.crt") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(bundle).decode()},
    }


def by_name(ctx: PushContext, namespace: str = GW_NS) -> dict[str, secret_pb2.Secret]:
    found = credential_secrets(ctx, namespace)
    names = [s.name for s in found]
    assert names == sorted(names), "SDS resources come in name order"
    return {s.name: s for s in found}


def test_key_pair_is_served_as_kubernetes_name(pair: KeyPair) -> None:
    found = by_name(context(tls_secret("hello-cert", GW_NS, pair)))
    assert set(found) == {"kubernetes://hello-cert"}
    cert = found["kubernetes://hello-cert"].tls_certificate
    assert cert.certificate_chain.inline_bytes == pair.cert_pem
    assert cert.private_key.inline_bytes == pair.key_pem


def test_ca_crt_is_served_as_the_cacert_resource(
    pair: KeyPair, client_ca: CertificateAuthority
) -> None:
    found = by_name(context(tls_secret("mtls-cert", GW_NS, pair, ca=client_ca.cert_pem)))
    assert set(found) == {"kubernetes://mtls-cert", "kubernetes://mtls-cert-cacert"}
    validation = found["kubernetes://mtls-cert-cacert"]
    assert validation.validation_context.trusted_ca.inline_bytes == client_ca.cert_pem
    # The trust bundle resource carries no key.
    assert not validation.HasField("tls_certificate")
    assert b"PRIVATE KEY" not in validation.SerializeToString()


def test_generic_cacert_key(pair: KeyPair, client_ca: CertificateAuthority) -> None:
    raw = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "generic", "namespace": GW_NS},
        "data": {
            "cert": base64.b64encode(pair.cert_pem).decode(),
            "key": base64.b64encode(pair.key_pem).decode(),
            "cacert": base64.b64encode(client_ca.cert_pem).decode(),
        },
    }
    found = by_name(context(raw))
    assert set(found) == {"kubernetes://generic", "kubernetes://generic-cacert"}
    cacert = found["kubernetes://generic-cacert"]
    assert cacert.validation_context.trusted_ca.inline_bytes == client_ca.cert_pem


def test_a_separate_cacert_secret_wins_over_ca_crt(
    ca: CertificateAuthority, pair: KeyPair, client_ca: CertificateAuthority
) -> None:
    # `mtls-cert` carries a ca.crt, but `mtls-cert-cacert` exists too: as istiod, it wins.
    ctx = context(
        tls_secret("mtls-cert", GW_NS, pair, ca=ca.cert_pem),
        ca_secret("mtls-cert-cacert", GW_NS, client_ca.cert_pem),
    )
    found = by_name(ctx)
    assert set(found) == {"kubernetes://mtls-cert", "kubernetes://mtls-cert-cacert"}
    bundle = found["kubernetes://mtls-cert-cacert"].validation_context.trusted_ca.inline_bytes
    assert bundle == client_ca.cert_pem


def test_cacert_secret_alone(client_ca: CertificateAuthority) -> None:
    found = by_name(context(ca_secret("mtls-cert-cacert", GW_NS, client_ca.cert_pem, "cacert")))
    assert set(found) == {"kubernetes://mtls-cert-cacert"}


def test_only_the_proxy_namespace(pair: KeyPair, client_ca: CertificateAuthority) -> None:
    ctx = context(
        tls_secret("hello-cert", GW_NS, pair),
        tls_secret("other-cert", "web", pair, ca=client_ca.cert_pem),
    )
    assert set(by_name(ctx, GW_NS)) == {"kubernetes://hello-cert"}
    assert set(by_name(ctx, "web")) == {"kubernetes://other-cert", "kubernetes://other-cert-cacert"}
    assert by_name(ctx, "elsewhere") == {}


def test_secrets_without_tls_material_are_not_served() -> None:
    raw = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db-password", "namespace": GW_NS},
        "data": {"password": base64.b64encode(b"hunter2").decode()},
    }
    assert by_name(context(raw)) == {}


def https_gateway(credential: str, mode: str = "SIMPLE") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "web-gateway", "namespace": GW_NS},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["hello.example.com"],
                    "tls": {"mode": mode, "credentialName": credential},
                }
            ],
        },
    }


def mutual_rule(namespace: str, credential: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "backend-mtls", "namespace": namespace},
        "spec": {
            "host": "backend.example.com",
            "exportTo": ["."],
            "trafficPolicy": {"tls": {"mode": "MUTUAL", "credentialName": credential}},
        },
    }


def test_generator_serves_only_the_secrets_the_proxy_config_references(
    pair: KeyPair, client_ca: CertificateAuthority
) -> None:
    ctx = context(
        https_gateway("hello-cert"),
        tls_secret("hello-cert", GW_NS, pair, ca=client_ca.cert_pem),
        tls_secret("unreferenced-cert", GW_NS, pair),
        mutual_rule("web", "web-cert"),
        tls_secret("web-cert", "web", pair, ca=client_ca.cert_pem),
        tls_secret("web-other", "web", pair),
    )
    gateway = generator.generate(ctx, router(GW_NS), type_urls.SECRET)
    # SIMPLE: the certificate only; the unreferenced Secret of the same namespace never appears.
    assert set(gateway) == {"kubernetes://hello-cert"}
    resource = gateway["kubernetes://hello-cert"]
    assert resource.type_url == type_urls.SECRET
    decoded = secret_pb2.Secret.FromString(resource.payload)
    assert decoded.tls_certificate.private_key.inline_bytes == pair.key_pem
    # A DestinationRule's MUTUAL credential: the client certificate and its CA.
    assert set(generator.generate(ctx, sidecar("web"), type_urls.SECRET)) == {
        "kubernetes://web-cert",
        "kubernetes://web-cert-cacert",
    }


def test_sidecar_claiming_the_gateway_namespace_gets_nothing(pair: KeyPair) -> None:
    ctx = context(https_gateway("hello-cert"), tls_secret("hello-cert", GW_NS, pair))
    assert generator.generate(ctx, sidecar(GW_NS), type_urls.SECRET) == {}
    # A router whose labels no Gateway selects is no better off.
    other = router(GW_NS)
    other.labels.clear()
    assert generator.generate(ctx, other, type_urls.SECRET) == {}


def test_mutual_gateway_server_gets_its_client_ca(
    pair: KeyPair, client_ca: CertificateAuthority
) -> None:
    ctx = context(
        https_gateway("mtls-cert", "MUTUAL"),
        tls_secret("mtls-cert", GW_NS, pair, ca=client_ca.cert_pem),
    )
    assert set(generator.generate(ctx, router(GW_NS), type_urls.SECRET)) == {
        "kubernetes://mtls-cert",
        "kubernetes://mtls-cert-cacert",
    }


# -- `istiolite render` and the golden files ---------------------------------------------------

GOLDEN_CASE = Path(__file__).parents[2] / "golden" / "cases" / "gateway"


def _key_material(config: Path) -> list[str]:
    """Every base64 value of a private key in the case's Secrets, and every line of its PEM."""
    out = []
    for path in sorted(config.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Secret":
                continue
            for key in ("tls.key", "key"):
                if key in doc.get("data", {}):
                    encoded = doc["data"][key]
                    pem = base64.b64decode(encoded).decode()
                    out.append(encoded)
                    out += [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    return out


def test_render_of_the_gateway_case_carries_no_key_material() -> None:
    config = GOLDEN_CASE / "config"
    secrets = _key_material(config)
    assert len(secrets) > 6, "the gateway golden case should hold private keys to check"
    rendered = render(
        [config],
        "router~10.1.9.20~ingress-1.istio-system~istio-system.svc.cluster.local",
        {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}},
        "cluster.local",
    )
    golden = (GOLDEN_CASE / "ingress.golden.json").read_text()
    for text in (rendered, golden):
        assert "PRIVATE KEY" not in text
        for material in secrets:
            assert material not in text
    # render shows what a proxy is configured with, not the Secrets: the SDS names only.
    dump = json.loads(rendered)
    assert not [c for c in dump["configs"] if c["@type"].endswith("SecretsConfigDump")]
    assert "kubernetes://hello-cert" in rendered
