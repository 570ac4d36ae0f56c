"""Mesh mutual TLS end to end with real parts: a real `istiolite serve` with its CA (`--ca-dir`)
and TokenReview against a test Kubernetes API server, and two real Envoy sidecars (without
iptables) bootstrapped on the secure port with their service-account tokens, each getting its
own SPIFFE identity over SDS.

The client (`demo/client-sa`) reaches `server.demo.svc.cluster.local:8080` through its egress
listener; auto mTLS carries the request to the server sidecar's ingress listener (`demo/server-sa`,
Pod labelled `security.istio.io/tlsMode: istio`), and the app behind it sees the caller in
`x-forwarded-client-cert`. Both Envoys hold certificates of their own identity chaining to the
root in the CA directory. PeerAuthentication STRICT for the server closes plaintext callers,
while the client sidecar keeps working; PERMISSIVE (the default) takes both."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.kube_apiserver import KubeApiServer
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, http_get, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

NS = "demo"
SERVICE_PORT = 8080
HOST = f"server.{NS}.svc.cluster.local"
CLIENT_URI = f"spiffe://cluster.local/ns/{NS}/sa/client-sa"
SERVER_URI = f"spiffe://cluster.local/ns/{NS}/sa/server-sa"


@dataclass
class Mesh:
    config: Path
    ca_dir: Path
    istiolite: IstioliteProcess
    client: EnvoyProcess
    server: EnvoyProcess
    server_ip: str
    inbound_port: int
    egress_ip: str
    apiserver: KubeApiServer
    tokens: dict[str, str]

    def via_client(self) -> Any:
        """One request through the client sidecar's egress listener."""
        return http_request(self.egress_ip, SERVICE_PORT, HOST)

    def plain(self) -> Any:
        """One plaintext request straight to the server sidecar's inbound port."""
        return http_request(self.server_ip, self.inbound_port, HOST)

    def peer_authentication(self, mode: str, port_level: dict[int, str] | None = None) -> None:
        spec: dict[str, Any] = {
            "selector": {"matchLabels": {"app": "server"}},
            "mtls": {"mode": mode},
        }
        if port_level:
            spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in port_level.items()}
        mesh.write(
            self.config / "peer-authentication.yaml",
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": "server", "namespace": NS},
                "spec": spec,
            },
        )


def _config(config: Path, server_ip: str, inbound_port: int, app_port: int, egress_ip: str) -> None:
    mesh.write(
        config / "mesh.yaml",
        mesh.service("server", NS, SERVICE_PORT, target_port=inbound_port),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "server-0",
                "namespace": NS,
                "labels": {"app": "server", "security.istio.io/tlsMode": "istio"},
            },
            "spec": {"serviceAccountName": "server-sa"},
            "status": {"podIP": server_ip},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "server-abc",
                "namespace": NS,
                "labels": {"kubernetes.io/service-name": "server"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": inbound_port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [server_ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": "server-0"},
                }
            ],
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "server", "namespace": NS},
            "spec": {
                "workloadSelector": {"labels": {"app": "server"}},
                "ingress": [
                    {
                        "port": {"number": inbound_port, "protocol": "HTTP", "name": "http"},
                        "bind": server_ip,
                        "defaultEndpoint": f"127.0.0.1:{app_port}",
                    }
                ],
                # Imports nothing: the server sidecar binds no outbound listener.
                "egress": [{"hosts": ["istio-system/nothing.invalid"]}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "client", "namespace": NS},
            "spec": {
                "workloadSelector": {"labels": {"app": "client"}},
                "egress": [
                    {
                        "port": {"number": SERVICE_PORT, "protocol": "HTTP", "name": "http"},
                        "bind": egress_ip,
                        "captureMode": "NONE",
                        "hosts": [f"./{HOST}"],
                    }
                ],
            },
        },
    )


def _sidecar(
    cp: IstioliteProcess,
    workdir: Path,
    ca_dir: Path,
    token: Path,
    *,
    ip: str,
    pod: str,
    service_account: str,
    app: str,
) -> EnvoyProcess:
    envoy = EnvoyProcess(
        workdir,
        f"127.0.0.1:{cp.secure_grpc_port}",
        f"sidecar~{ip}~{pod}.{NS}~{NS}.svc.cluster.local",
        delta=True,
        meta={"NAMESPACE": NS, "SERVICE_ACCOUNT": service_account, "INTERCEPTION_MODE": "NONE"},
        labels={"app": app, "security.istio.io/tlsMode": "istio"},
        bootstrap_args=[
            "--token-file",
            str(token),
            "--xds-root-cert",
            str(ca_dir / "root-cert.pem"),
        ],
    )
    try:
        wait_for(envoy.synced, timeout=30, what=f"envoy {pod} synced")
    except BaseException:
        envoy.stop()
        raise
    return envoy


@pytest.fixture
def trust_domain() -> str:
    return "cluster.local"


@pytest.fixture
def running(tmp_path: Path, trust_domain: str) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    ca_dir = tmp_path / "ca"
    server_ip, egress_ip = loopback_ip(), loopback_ip()
    inbound_port, app_port = free_port(server_ip), free_port()
    _config(config, server_ip, inbound_port, app_port, egress_ip)
    app = EchoServer("127.0.0.1", app_port, "server-app").start()
    cp: IstioliteProcess | None = None
    envoys: list[EnvoyProcess] = []
    try:
        with KubeApiServer() as apiserver:
            kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
            tokens: dict[str, Path] = {}
            values: dict[str, str] = {}
            for sa in ("client-sa", "server-sa"):
                tokens[sa] = tmp_path / f"{sa}.token"
                values[sa] = apiserver.add_token(NS, sa, audiences=("istio-ca",))
                tokens[sa].write_text(values[sa])
            cp = IstioliteProcess(
                [config], tmp_path, "--ca-dir", str(ca_dir), "--kubeconfig", str(kubeconfig),
                "--trust-domain", trust_domain,
            )  # fmt: skip
            assert cp.secure_grpc_port
            envoys.append(
                _sidecar(
                    cp,
                    tmp_path,
                    ca_dir,
                    token=tokens["server-sa"],
                    ip=server_ip,
                    pod="server-0",
                    service_account="server-sa",
                    app="server",
                )
            )
            envoys.append(
                _sidecar(
                    cp,
                    tmp_path,
                    ca_dir,
                    token=tokens["client-sa"],
                    ip="127.0.0.1",
                    pod="client-0",
                    service_account="client-sa",
                    app="client",
                )
            )
            server, client = envoys
            yield Mesh(
                config,
                ca_dir,
                cp,
                client,
                server,
                server_ip,
                inbound_port,
                egress_ip,
                apiserver,
                values,
            )
    finally:
        stop_all(*envoys, cp)
        app.stop()


def _headers(reply: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in reply.json()["headers"].items()}


def _ok(request: Any) -> bool:
    try:
        return bool(request().status == 200)
    except OSError:
        return False


def _refused(request: Any) -> bool:
    try:
        request()
    except OSError:
        return True
    return False


def _chain(envoy: EnvoyProcess) -> list[x509.Certificate]:
    """The `default` certificate chain Envoy holds (from its secrets dump; keys redacted)."""
    dump = envoy.config_dump("dynamic_active_secrets")
    for config in dump["configs"]:
        secret = config.get("secret", {})
        if secret.get("name") == "default":
            inline = secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
            return x509.load_pem_x509_certificates(base64.b64decode(inline))
    raise AssertionError(f"no `default` secret in {json.dumps(dump)[:2000]}")


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def _certs_uris(envoy: EnvoyProcess) -> dict[str, set[str]]:
    """Serial → SAN URIs of each certificate chain entry in Envoy's admin /certs."""
    _, body = http_get(envoy.admin("/certs"))
    found: dict[str, set[str]] = {}
    for entry in json.loads(body).get("certificates", []):
        for cert in entry.get("cert_chain", []):
            serial = str(cert["serial_number"]).lower().lstrip("0")
            found[serial] = {s["uri"] for s in cert.get("subject_alt_names", []) if "uri" in s}
    return found


def _serials_of(envoy: EnvoyProcess, uri: str) -> list[str]:
    return [serial for serial, uris in _certs_uris(envoy).items() if uri in uris]


def test_mesh_mtls_between_two_sidecars(running: Mesh) -> None:
    m = running
    # Both proxies were authenticated on the secure port by TokenReview of their own tokens.
    reviewed = {r.body["spec"]["token"] for r in m.apiserver.reviews()}
    assert set(m.tokens.values()) <= reviewed
    # (1) client sidecar → server sidecar over mTLS → app, which sees the caller's identity.
    wait_for(lambda: _ok(m.via_client), timeout=30, what="a request through the client sidecar")
    reply = m.via_client()
    assert reply.json()["server"] == "server-app"
    xfcc = _headers(reply).get("x-forwarded-client-cert", "")
    assert f"URI={CLIENT_URI}" in xfcc, xfcc
    # The hop went over TLS: the server's inbound listener counted handshakes.
    inbound = f"listener.{m.server_ip}_{m.inbound_port}.ssl.handshake"
    assert m.server.stats().get(inbound, 0) > 0, inbound

    # (2) Each Envoy holds its own identity, chained to the root in --ca-dir.
    root = x509.load_pem_x509_certificate((m.ca_dir / "root-cert.pem").read_bytes())
    for envoy, uri in ((m.client, CLIENT_URI), (m.server, SERVER_URI)):
        shown = wait_for(functools.partial(_serials_of, envoy, uri), what=f"{uri} in /certs")
        chain = _chain(envoy)
        leaf = chain[0]
        assert _uris(leaf) == [uri]
        assert format(leaf.serial_number, "x") in shown
        for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
            if cert == root:
                break
            cert.verify_directly_issued_by(issuer)

    # (3) PERMISSIVE (no policy): plaintext straight to the inbound port is accepted too.
    assert m.plain().status == 200
    assert "x-forwarded-client-cert" not in _headers(m.plain())
    # STRICT for the server workload: plaintext is closed, the mesh client still gets 200.
    m.peer_authentication("STRICT")
    wait_for(lambda: _refused(m.plain), timeout=30, what="plaintext refused under STRICT")
    for _ in range(3):
        assert _refused(m.plain)
        assert m.via_client().status == 200
    # Back to PERMISSIVE: both again.
    m.peer_authentication("PERMISSIVE")
    wait_for(lambda: _ok(m.plain), timeout=30, what="plaintext accepted under PERMISSIVE")
    assert m.via_client().status == 200

    # DISABLE: the server serves plaintext only, and the client's auto mTLS follows the
    # destination's policy (istiod), so the sidecar's request still arrives, without XFCC.
    m.peer_authentication("DISABLE")

    def plaintext_hop() -> bool:
        reply = m.via_client()
        return reply.status == 200 and "x-forwarded-client-cert" not in _headers(reply)

    wait_for(plaintext_hop, timeout=30, what="the sidecar's request in plaintext under DISABLE")
    assert _ok(m.plain)

    # Port level: STRICT for the workload but PERMISSIVE on the inbound port → plaintext accepted
    # there again, and the sidecar's hop is mutual TLS once more (XFCC back).
    m.peer_authentication("STRICT", {m.inbound_port: "PERMISSIVE"})

    def mtls_hop() -> bool:
        reply = m.via_client()
        return f"URI={CLIENT_URI}" in _headers(reply).get("x-forwarded-client-cert", "")

    wait_for(mtls_hop, timeout=30, what="mutual TLS again under STRICT with a PERMISSIVE port")
    assert _ok(m.plain)
    # And the opposite: DISABLE for the workload, STRICT on the port → plaintext closed.
    m.peer_authentication("DISABLE", {m.inbound_port: "STRICT"})
    wait_for(lambda: _refused(m.plain), timeout=30, what="plaintext refused on a STRICT port")


@pytest.mark.parametrize("trust_domain", ["example.org"])
def test_mesh_mtls_in_a_trust_domain_other_than_the_dns_domain(running: Mesh) -> None:
    """--trust-domain example.org (or the mesh config's trustDomain): the CA issues
    spiffe://example.org/... and the client's cluster verifies exactly those identities, so the
    mTLS hop works and the server sees the caller in that trust domain."""
    m = running
    wait_for(lambda: _ok(m.via_client), timeout=30, what="a request through the client sidecar")
    xfcc = _headers(m.via_client()).get("x-forwarded-client-cert", "")
    assert f"URI=spiffe://example.org/ns/{NS}/sa/client-sa" in xfcc, xfcc
    clusters = m.client.config_dump("dynamic_active_clusters")["configs"]
    (server_cluster,) = [
        c["cluster"] for c in clusters if c["cluster"]["name"] == f"outbound|{SERVICE_PORT}||{HOST}"
    ]
    verified = json.dumps(server_cluster)
    assert f"spiffe://example.org/ns/{NS}/sa/server-sa" in verified
    assert "spiffe://cluster.local/" not in verified
