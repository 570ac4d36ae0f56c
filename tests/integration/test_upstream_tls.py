"""DestinationRule `trafficPolicy.tls` through a real Envoy: TLS origination to a Python TLS
upstream (SIMPLE with a CA and SNI, a wrong CA, insecureSkipVerify, automatic SNI and SAN checks,
MUTUAL with a client certificate and a CRL), and every file-based variant accepted by Envoy.

The PKI (a CA, a server and a client certificate, a second CA nobody uses) is made per test in a
private temporary directory that is removed afterwards; key files are mode 0600.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import mesh as objects
from tests.support.net import free_port, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_sidecar_mesh, stop_all
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
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    crl_empty: Path
    crl_revoking_server: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    cn: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier,
    dns: list[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _crl(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, revoked: list[int]
) -> x509.CertificateRevocationList:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - datetime.timedelta(minutes=1))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    ca, ca_key = _ca("istiolite test CA")
    other, _ = _ca("some other CA")
    server, server_key = _leaf(
        "backend", ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, dns=SERVER_NAMES
    )
    client, client_key = _leaf(CLIENT_CN, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH, dns=[])
    pki = Pki(
        dir=directory,
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        crl_empty=directory / "ca.crl",
        crl_revoking_server=directory / "ca-revoking-server.crl",
    )
    _write_cert(pki.ca, ca)
    _write_cert(pki.other_ca, other)
    _write_cert(pki.server_cert, server)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.client_cert, client)
    _write_key(pki.client_key, client_key)
    pki.crl_empty.write_bytes(_crl(ca, ca_key, []).public_bytes(serialization.Encoding.PEM))
    pki.crl_revoking_server.write_bytes(
        _crl(ca, ca_key, [server.serial_number]).public_bytes(serialization.Encoding.PEM)
    )
    return pki


# --- a TLS upstream -------------------------------------------------------------------------------


@dataclass
class Handshake:
    ok: bool
    sni: str | None
    client_cn: str | None


class TlsUpstream:
    """HTTP/1.1 over TLS on one address, a thread per connection; records every handshake (its
    SNI and the client certificate's CN) and answers with what it saw."""

    def __init__(self, host: str, port: int, pki: Pki, *, require_client_cert: bool) -> None:
        self.handshakes: list[Handshake] = []
        self.requests = 0
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(pki.ca)
        local = threading.local()

        def remember_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            local.sni = name

        context.sni_callback = remember_sni  # type: ignore[assignment]
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                local.sni = None
                self.request.settimeout(10)
                try:
                    self.request = context.wrap_socket(self.request, server_side=True)
                except (ssl.SSLError, OSError):
                    upstream._record(Handshake(False, local.sni, None))
                    raise
                cert = self.request.getpeercert() or {}
                cn = next(
                    (v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"),
                    None,
                )
                self.seen = Handshake(True, local.sni, cn)
                upstream._record(self.seen)
                super().setup()

            def do_GET(self) -> None:
                with upstream._lock:
                    upstream.requests += 1
                body = json.dumps(
                    {"tls": True, "sni": self.seen.sni, "client_cn": self.seen.client_cn}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # failed handshakes are recorded, not printed

        self._httpd = Server((host, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, handshake: Handshake) -> None:
        with self._lock:
            self.handshakes.append(handshake)

    def seen(self) -> list[Handshake]:
        with self._lock:
            return list(self.handshakes)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- the mesh -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: str

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


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
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/", headers={"Host": host})
            resp = conn.getresponse()
            return Reply(resp.status, resp.read().decode(errors="replace"))
        finally:
            conn.close()

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
        )
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
    assert tls_mesh.upstream is not None and tls_mesh.upstream.requests >= 1
    config = tls_mesh.tls_config()
    assert config["sni"] == "backend.tls.test"
    assert config["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": str(tls_mesh.pki.ca)
    }
    assert tls_mesh.stat("ssl.handshake") >= 1


def test_wrong_ca_fails_then_skip_verify_and_the_right_ca_succeed(tls_mesh: Mesh) -> None:
    pki = tls_mesh.pki
    tls_mesh.start({"mode": "SIMPLE", "caCertificates": str(pki.other_ca), "sni": "backend"})
    reply = tls_mesh.get()
    assert reply.status == 503, reply.body
    assert "upstream connect error" in reply.body
    assert tls_mesh.stat("ssl.fail_verify_error") >= 1
    assert tls_mesh.upstream is not None
    assert tls_mesh.upstream.requests == 0
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
    assert tls_mesh.upstream is not None and tls_mesh.upstream.requests == 0

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

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    objects.write(
        secrets / "secret.yaml",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "backend-client", "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": b64(pki.client_cert),
                "tls.key": b64(pki.client_key),
                "ca.crt": b64(pki.ca),
            },
        },
    )
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
