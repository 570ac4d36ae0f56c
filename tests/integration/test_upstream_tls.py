"""DestinationRule `trafficPolicy.tls` through a real Envoy: TLS origination to a Python TLS
upstream (SIMPLE with a CA and SNI, a wrong CA, insecureSkipVerify, automatic SNI and SAN checks,
MUTUAL with a client certificate and a CRL), and every file-based variant accepted by Envoy.

The PKI (a CA, a server and a client certificate, a second CA nobody uses) is made per test in a
private temporary directory that is removed afterwards; key files are mode 0600.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import mesh as objects
from tests.support.certs import (
    CertificateAuthority,
    KeyPair,
    revocation_list,
    server_context,
    tls_secret,
)
from tests.support.net import Reply, free_port, http_request, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_sidecar_mesh, stop_all
from tests.support.upstream import HttpUpstream, Request
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "shop"
HOST = f"backend.{NS}.svc.cluster.local"
SERVER_NAMES = ["backend", "backend.tls.test"]  # not backend.shop: auto SAN checks can fail
CLIENT_CN = "envoy-client.shop"


# --- PKI ------------------------------------------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    authority: CertificateAuthority
    server: KeyPair
    client: KeyPair
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path
    crl_empty: Path
    crl_revoking_server: Path


def make_pki(directory: Path) -> Pki:
    ca, other = CertificateAuthority("istiolite test CA"), CertificateAuthority("some other CA")
    server = ca.issue("backend", dns=tuple(SERVER_NAMES))
    client = ca.issue(CLIENT_CN, client=True)
    client_cert, client_key = client.write(directory, "client")
    files = {
        "ca.pem": ca.cert_pem,
        "other-ca.pem": other.cert_pem,
        "ca.crl": revocation_list(ca),
        "ca-revoking-server.crl": revocation_list(ca, server),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return Pki(
        dir=directory,
        authority=ca,
        server=server,
        client=client,
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        client_cert=client_cert,
        client_key=client_key,
        crl_empty=directory / "ca.crl",
        crl_revoking_server=directory / "ca-revoking-server.crl",
    )


# --- a TLS upstream -------------------------------------------------------------------------------


class TlsUpstream(HttpUpstream):
    """The backend over TLS (see HttpUpstream: every handshake is recorded); answers with what
    its handshake saw."""

    def __init__(self, host: str, port: int, pki: Pki, *, require_client_cert: bool) -> None:
        client_ca = pki.authority if require_client_cert else None
        super().__init__(host, port, tls=server_context(pki.server, client_ca=client_ca))

    def answer(self, request: Request) -> tuple[int, bytes]:
        seen = request.handshake
        assert seen is not None
        return 200, json.dumps({"tls": True, "sni": seen.sni, "client_cn": seen.client_cn}).encode()


# --- the mesh -------------------------------------------------------------------------------------


@dataclass
class Mesh:
    tmp: Path
    config: Path
    pki: Pki
    port: int = field(default_factory=free_port)
    target: int = field(default_factory=free_port)
    ip: str = field(default_factory=loopback_ip)
    upstream: TlsUpstream | None = None
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||{HOST}"

    def get(self, host: str = "backend") -> Reply:
        return http_request("127.0.0.1", self.port, host, timeout=10)

    def rule(self, tls: dict[str, Any]) -> None:
        """(Re)write the DestinationRule for backend with this tls."""
        objects.write(
            self.config / "rule.yaml",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "backend", "namespace": NS},
                "spec": {"host": "backend", "trafficPolicy": {"tls": tls}},
            },
        )

    def start(
        self,
        tls: dict[str, Any],
        *,
        require_client_cert: bool = False,
        delta: bool = True,
        extra_config: Path | None = None,
    ) -> None:
        self.upstream = TlsUpstream(
            self.ip, self.target, self.pki, require_client_cert=require_client_cert
        ).start()
        objects.write(
            self.config / "backend.yaml",
            objects.service("backend", NS, self.port, target_port=self.target),
            objects.endpoint_slice("backend", NS, self.target, [self.ip]),
        )
        self.rule(tls)
        dirs = [self.config, *([extra_config] if extra_config else [])]
        self.istiolite, self.envoy = start_sidecar_mesh(dirs, self.tmp, namespace=NS, delta=delta)
        wait_for(lambda: self.envoy.cluster_endpoints(self.cluster), what="backend endpoints")  # type: ignore[union-attr]
        wait_for(lambda: self.get().status != 404, what="backend routable")

    def tls_config(self) -> dict[str, Any]:
        """The UpstreamTlsContext Envoy applied to the backend cluster ({} when none)."""
        assert self.envoy is not None
        for config in self.envoy.config_dump("dynamic_active_clusters")["configs"]:
            if config["cluster"]["name"] == self.cluster:
                socket = config["cluster"].get("transport_socket")
                return dict(socket["typed_config"]) if socket else {}
        raise AssertionError(f"no cluster {self.cluster}")

    def stat(self, name: str) -> int:
        assert self.envoy is not None
        return self.envoy.stats().get(f"cluster.{self.cluster}.{name}", 0)

    def await_tls(self, check: Any, what: str) -> None:
        """Wait until Envoy runs a backend cluster whose TLS context satisfies `check`."""
        wait_for(lambda: check(self.tls_config()), what=what)


@pytest.fixture
def pki() -> Iterator[Pki]:
    directory = Path(tempfile.mkdtemp(prefix="istiolite-pki-"))
    try:
        yield make_pki(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tls_mesh(tmp_path: Path, pki: Pki) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(tmp_path, config, pki)
    try:
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        if m.upstream is not None:
            m.upstream.stop()


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_simple_tls_with_ca_and_sni_reaches_the_tls_upstream(tls_mesh: Mesh, delta: bool) -> None:
    tls_mesh.start(
        {"mode": "SIMPLE", "caCertificates": str(tls_mesh.pki.ca), "sni": "backend.tls.test"},
        delta=delta,
    )
    reply = tls_mesh.get()
    assert reply.status == 200, reply.body
    assert reply.json() == {"tls": True, "sni": "backend.tls.test", "client_cn": None}
    assert tls_mesh.upstream is not None and tls_mesh.upstream.total >= 1
    config = tls_mesh.tls_config()
    assert config["sni"] == "backend.tls.test"
    # The CA file is named through SDS, as istiod's `file-root:` secret.
    combined = config["common_tls_context"]["combined_validation_context"]
    sds_name = combined["validation_context_sds_secret_config"]["name"]
    assert sds_name == f"file-root:{tls_mesh.pki.ca}"
    assert tls_mesh.stat("ssl.handshake") >= 1


def test_wrong_ca_fails_then_skip_verify_and_the_right_ca_succeed(tls_mesh: Mesh) -> None:
    pki = tls_mesh.pki
    tls_mesh.start({"mode": "SIMPLE", "caCertificates": str(pki.other_ca), "sni": "backend"})
    reply = tls_mesh.get()
    assert reply.status == 503, reply.body
    assert "upstream connect error" in reply.body
    assert tls_mesh.stat("ssl.fail_verify_error") >= 1
    assert tls_mesh.upstream is not None
    assert tls_mesh.upstream.total == 0
    assert not any(h.ok for h in tls_mesh.upstream.seen())

    # insecureSkipVerify: TLS without verification (an empty validation context).
    tls_mesh.rule({"mode": "SIMPLE", "insecureSkipVerify": True, "sni": "backend"})
    tls_mesh.await_tls(
        lambda c: c.get("common_tls_context", {}).get("validation_context") == {},
        "the unverified context",
    )
    wait_for(lambda: tls_mesh.get().status == 200, what="TLS without verification")

    tls_mesh.rule({"mode": "SIMPLE", "caCertificates": str(pki.ca), "sni": "backend"})
    wait_for(lambda: tls_mesh.get().status == 200, what="the right CA")
    assert tls_mesh.get().json()["sni"] == "backend"


def test_without_sni_envoy_sends_the_host_and_checks_the_certificate_for_it(
    tls_mesh: Mesh,
) -> None:
    tls_mesh.start({"mode": "SIMPLE", "caCertificates": str(tls_mesh.pki.ca)})
    reply = tls_mesh.get("backend")
    assert reply.status == 200, reply.body
    assert reply.json()["sni"] == "backend"  # auto_sni: from the Host header
    # backend.shop routes to the same cluster, but the certificate does not name it.
    failed_san = tls_mesh.stat("ssl.fail_verify_san")
    reply = tls_mesh.get("backend.shop")
    assert reply.status == 503, reply.body
    assert tls_mesh.stat("ssl.fail_verify_san") > failed_san
    assert any(not h.ok and h.sni == "backend.shop" for h in tls_mesh.upstream.seen())  # type: ignore[union-attr]

    # Explicit subjectAltNames: checked instead of the SNI (which stays automatic).
    tls_mesh.rule(
        {
            "mode": "SIMPLE",
            "caCertificates": str(tls_mesh.pki.ca),
            "subjectAltNames": ["backend.tls.test"],
        }
    )
    wait_for(lambda: tls_mesh.get("backend.shop").status == 200, what="SANs instead of SNI")
    tls_mesh.rule(
        {
            "mode": "SIMPLE",
            "caCertificates": str(tls_mesh.pki.ca),
            "subjectAltNames": ["somebody.else"],
        }
    )
    wait_for(lambda: tls_mesh.get("backend").status == 503, what="a SAN the server lacks")


def test_mutual_tls_presents_the_client_certificate(tls_mesh: Mesh) -> None:
    pki = tls_mesh.pki
    # The upstream requires a client certificate: SIMPLE is refused.
    tls_mesh.start(
        {"mode": "SIMPLE", "caCertificates": str(pki.ca), "sni": "backend"},
        require_client_cert=True,
    )
    assert tls_mesh.get().status == 503
    assert tls_mesh.upstream is not None and tls_mesh.upstream.total == 0

    mutual = {
        "mode": "MUTUAL",
        "clientCertificate": str(pki.client_cert),
        "privateKey": str(pki.client_key),
        "caCertificates": str(pki.ca),
        "caCrl": str(pki.crl_empty),
        "subjectAltNames": ["backend.tls.test"],
        "sni": "backend",
    }
    tls_mesh.rule(mutual)
    wait_for(lambda: tls_mesh.get().status == 200, what="mutual TLS")
    assert tls_mesh.get().json() == {"tls": True, "sni": "backend", "client_cn": CLIENT_CN}
    assert tls_mesh.upstream.seen()[-1].client_cn == CLIENT_CN

    # A CRL that revokes the server's certificate: Envoy refuses it.
    tls_mesh.rule({**mutual, "caCrl": str(pki.crl_revoking_server)})
    wait_for(lambda: tls_mesh.get().status == 503, what="the revoked server certificate")
    assert tls_mesh.stat("ssl.fail_verify_error") >= 1


def test_mutual_tls_with_a_credential_from_a_secret(tls_mesh: Mesh) -> None:
    """credentialName: key, certificate and CA come from a Secret over SDS (kubernetes://...)."""
    pki = tls_mesh.pki
    secrets = pki.dir / "secrets"  # inside the PKI directory: removed with the keys
    secrets.mkdir()

    secret = tls_secret("backend-client", NS, pki.client, ca=pki.authority.cert_pem)
    objects.write(secrets / "secret.yaml", secret)
    tls_mesh.start(
        {"mode": "MUTUAL", "credentialName": "backend-client", "sni": "backend"},
        require_client_cert=True,
        extra_config=secrets,
    )
    reply = tls_mesh.get()
    assert reply.status == 200, reply.body
    assert reply.json() == {"tls": True, "sni": "backend", "client_cn": CLIENT_CN}
    common = tls_mesh.tls_config()["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "kubernetes://backend-client"
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"]["name"] == (
        "kubernetes://backend-client-cacert"
    )


def test_every_file_based_variant_is_accepted_by_envoy(tmp_path: Path, pki: Pki) -> None:
    """Ports and subsets in each file-based mode Envoy must load (no NACK, nothing warming):
    MUTUAL with CRL and SANs, port-level SIMPLE without SNI, insecure, HTTP/2 with ALPN."""
    config = tmp_path / "config"
    config.mkdir()
    files = {
        "clientCertificate": str(pki.client_cert),
        "privateKey": str(pki.client_key),
        "caCertificates": str(pki.ca),
    }
    svc = objects.service("backend", NS, 8000)
    svc["spec"]["ports"] += [
        {"name": "grpc", "port": 8001},
        {"name": "tcp-db", "port": 8002},
        {"name": "https", "port": 8003},
    ]
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "backend", "namespace": NS},
        "spec": {
            "host": "backend",
            "trafficPolicy": {
                "tls": {
                    "mode": "MUTUAL",
                    **files,
                    "caCrl": str(pki.crl_empty),
                    "subjectAltNames": ["backend.tls.test"],
                    "sni": "backend.tls.test",
                },
                "portLevelSettings": [
                    {"port": {"number": 8001}, "tls": {"mode": "SIMPLE"}},
                    {
                        "port": {"number": 8002},
                        "tls": {"mode": "SIMPLE", "caCertificates": str(pki.ca)},
                    },
                    {
                        "port": {"number": 8003},
                        "tls": {"mode": "SIMPLE", "insecureSkipVerify": True},
                    },
                ],
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "h2",
                    "labels": {"version": "h2"},
                    "trafficPolicy": {
                        "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}},
                        "tls": {"mode": "MUTUAL", **files},
                    },
                },
                {"name": "plain", "labels": {"version": "v0"}, "trafficPolicy": {"tls": {}}},
            ],
        },
    }
    objects.write(config / "all.yaml", svc, rule)
    cp, envoy = start_sidecar_mesh([config], tmp_path, namespace=NS)
    try:
        stats = envoy.stats()
        assert {k: v for k, v in stats.items() if k.endswith("update_rejected") and v} == {}
        active = {
            c["cluster"]["name"]: c["cluster"]
            for c in envoy.config_dump("dynamic_active_clusters")["configs"]
        }
        with_tls = {n for n, c in active.items() if c.get("transport_socket") and HOST in n}
        backend = {n for n in active if HOST in n}
        assert len(backend) == 16  # 4 ports x (default + 3 subsets)
        assert backend - with_tls == {
            f"outbound|{p}|plain|{HOST}" for p in (8000, 8001, 8002, 8003)
        }
        h2 = active[f"outbound|8000|h2|{HOST}"]["transport_socket"]["typed_config"]
        assert h2["common_tls_context"]["alpn_protocols"] == ["h2"]
        grpc = active[f"outbound|8001||{HOST}"]["transport_socket"]["typed_config"]
        assert grpc["common_tls_context"]["alpn_protocols"] == ["h2"]
        assert "sni" not in grpc
    finally:
        stop_all(envoy, cp)
