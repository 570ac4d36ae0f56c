"""AuthorizationPolicy through a real Envoy: a sidecar without iptables serves an HTTP port and a
TCP port (Sidecar ingress, TLS MUTUAL), and callers present client certificates carrying SPIFFE
identities, so RBAC judges the peer principal as it would with the mesh CA."""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.certs import CertificateAuthority, KeyPair, spiffe_pair
from tests.support.net import free_ports, http_request
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    dump_section,
    http_get,
    start_sidecar_mesh,
    stop_all,
)
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

NAMESPACE = "shop"
ALICE = "cluster.local/ns/shop/sa/alice"
BOB = "cluster.local/ns/shop/sa/bob"


def _client_context(ca: CertificateAuthority, pair: KeyPair) -> ssl.SSLContext:
    """Trusts the test CA (no host name: Envoy's certificate names web.shop, we dial an IP)
    and presents `pair`."""
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    ctx.check_hostname = False
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = pair.write(Path(tmp), "client")
        ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class Mesh:
    config: Path
    cp: IstioliteProcess
    envoy: EnvoyProcess
    http_port: int
    tcp_port: int
    alice: ssl.SSLContext
    bob: ssl.SSLContext

    def get(self, who: ssl.SSLContext, path: str = "/") -> tuple[int, str]:
        reply = http_request("127.0.0.1", self.http_port, "web.shop", path, tls=who)
        return reply.status, reply.body

    def tcp(self, who: ssl.SSLContext) -> bytes:
        """What the app behind the TCP port answers one raw request (b"": Envoy closed it)."""
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5) as raw:
            with who.wrap_socket(raw) as conn:
                conn.sendall(b"GET /tcp HTTP/1.0\r\nHost: web\r\n\r\n")
                chunks = []
                try:
                    while chunk := conn.recv(4096):
                        chunks.append(chunk)
                except (ConnectionResetError, ssl.SSLError):
                    pass
                return b"".join(chunks)

    def apply(self, *policies: dict[str, Any]) -> None:
        (self.config / "policies.yaml").write_text(yaml.safe_dump_all(list(policies)))

    def configz(self) -> dict[str, Any]:
        status, body = http_get(f"http://127.0.0.1:{self.cp.http_port}/debug/configz")
        assert status == 200
        return dict(yaml.safe_load(body))


def _policy(name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE, **meta},
        "spec": spec,
    }


ALLOW_ALICE = _policy(
    "allow-alice",
    {
        "selector": {"matchLabels": {"app": "web"}},
        "rules": [{"from": [{"source": {"principals": [ALICE]}}]}],
    },
)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Mesh]:
    """istiolite + a sidecar (labels app=web) with an HTTP and a TCP ingress port, both TLS
    MUTUAL against a test CA, in front of one echo app."""
    app_port, http_port, tcp_port = free_ports(3)
    ca = CertificateAuthority("mesh test CA")
    server_cert, server_key = ca.issue("web.shop", dns=("web.shop",)).write(tmp_path, "web")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    tls = {
        "mode": "MUTUAL",
        "serverCertificate": str(server_cert),
        "privateKey": str(server_key),
        "caCertificates": str(ca_file),
    }
    config = tmp_path / "config"
    config.mkdir()
    ingress = [
        {
            "port": {"number": port, "protocol": protocol, "name": name},
            "bind": "127.0.0.1",
            "defaultEndpoint": f"127.0.0.1:{app_port}",
            "tls": tls,
        }
        for port, protocol, name in ((http_port, "HTTPS", "https"), (tcp_port, "TLS", "tls"))
    ]
    mesh.write(
        config / "sidecar.yaml",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"workloadSelector": {"labels": {"app": "web"}}, "ingress": ingress},
        },
    )
    app = EchoServer("127.0.0.1", app_port, "web-app").start()
    cp = envoy = None
    try:
        cp, envoy = start_sidecar_mesh(
            [config], tmp_path, namespace=NAMESPACE, pod="web-1", labels={"app": "web"}
        )
        m = Mesh(
            config,
            cp,
            envoy,
            http_port,
            tcp_port,
            _client_context(ca, spiffe_pair(ca, f"spiffe://{ALICE}")),
            _client_context(ca, spiffe_pair(ca, f"spiffe://{BOB}")),
        )
        wait_for(lambda: m.get(m.bob)[0] == 200, what="web answers without policies")
        yield m
    finally:
        stop_all(envoy, cp)
        app.stop()


def _no_rejections(envoy: EnvoyProcess) -> None:
    listeners = dump_section(envoy.config_dump(), "dynamic_listeners")
    assert not any("error_state" in item for item in listeners)
    rejected = {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}
    assert rejected == {}


def test_allow_deny_and_audit_judge_the_peer_identity(web: Mesh) -> None:
    web.apply(
        ALLOW_ALICE,
        _policy(
            "no-admin",
            {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]},
        ),
        _policy(
            "audit-alice",
            {"action": "AUDIT", "rules": [{"from": [{"source": {"principals": [ALICE]}}]}]},
        ),
    )
    # ALLOW from alice only: bob is refused as Istio refuses, alice served.
    wait_for(lambda: web.get(web.bob) == (403, "RBAC: access denied"), what="bob refused")
    assert web.get(web.alice)[0] == 200
    # DENY on a path wins over the ALLOW, for alice too.
    assert web.get(web.alice, "/admin/users") == (403, "RBAC: access denied")
    assert web.get(web.alice, "/administrators")[0] == 200  # `/admin/*` is a path prefix
    # AUDIT (an RBAC filter with action LOG) matches alice's requests and blocks none of them.
    dump = json.dumps(dump_section(web.envoy.config_dump(), "dynamic_listeners"))
    assert '"action": "LOG"' in dump and "ns[shop]-policy[audit-alice]-rule[0]" in dump
    assert web.get(web.alice, "/audited")[0] == 200
    _no_rejections(web.envoy)


def test_tcp_policy_closes_a_disallowed_connection(web: Mesh) -> None:
    assert b"web-app" in web.tcp(web.bob)  # no policy yet
    web.apply(ALLOW_ALICE)
    wait_for(lambda: web.tcp(web.bob) == b"", what="bob's TCP connection closed")
    assert b"web-app" in web.tcp(web.alice)
    denied = sum(v for k, v in web.envoy.stats().items() if k.endswith("tcp.rbac.denied"))
    assert denied >= 1
    _no_rejections(web.envoy)


def test_an_http_only_allow_rule_allows_nothing_on_a_tcp_port(web: Mesh) -> None:
    """As istiod: `paths` cannot be judged on a TCP connection, so the rule is dropped there and
    the ALLOW policy (still in force) lets no TCP connection through; HTTP works."""
    web.apply(
        _policy(
            "paths-only",
            {
                "selector": {"matchLabels": {"app": "web"}},
                "rules": [{"to": [{"operation": {"paths": ["/public/*"]}}]}],
            },
        )
    )
    wait_for(lambda: web.get(web.bob, "/private")[0] == 403, what="paths policy applied")
    assert web.get(web.bob, "/public/x")[0] == 200
    assert web.tcp(web.alice) == b""
    warnings = web.configz()["warnings"]
    assert any(
        w["object"] == "AuthorizationPolicy shop/paths-only" and "HTTP-only paths" in w["message"]
        for w in warnings
    )


def test_bad_policies_are_named_and_the_rest_still_applies(web: Mesh) -> None:
    web.apply(
        ALLOW_ALICE,
        _policy(
            "bad-cidr",
            {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]},
        ),
        _policy(
            "bad-principal",
            {"rules": [{"from": [{"source": {"principals": [f"spiffe://{BOB}"]}}]}]},
        ),
        _policy("nobody", {"selector": {"matchLabels": {"app": "nothing"}}, "rules": [{}]}),
    )
    wait_for(lambda: web.get(web.bob)[0] == 403, what="the valid policy applied")
    assert web.get(web.alice)[0] == 200
    configz = web.configz()
    errors = {e["object"]: (e["field"], e["message"]) for e in configz["errors"]}
    field, message = errors["AuthorizationPolicy shop/bad-cidr"]
    assert field == "spec.rules[0].from[0].source.ipBlocks[0]"
    assert "bad CIDR range '10.0.0.0/33'" in message
    field, message = errors["AuthorizationPolicy shop/bad-principal"]
    assert field == "spec.rules[0].from[0].source.principals[0]"
    assert "without 'spiffe://'" in message
    nobody = [w for w in configz["warnings"] if w["object"] == "AuthorizationPolicy shop/nobody"]
    assert nobody and "no Pod or WorkloadEntry" in nobody[0]["message"]
    _no_rejections(web.envoy)
