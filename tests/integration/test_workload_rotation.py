"""A real Envoy on the secure ADS port gets its workload identity over SDS and serves mutual TLS
with it: a listener presenting `default` and requiring a client certificate that `ROOTCA`
verifies, with the web service account's SPIFFE URI. With 60-second certificates Envoy's /certs
shows a new serial after about 30 s, and a steady loop of requests, each on a new TLS
connection (so each handshake uses the certificate of that moment), sees no error.

The listener is a static one of the bootstrap referencing the secrets over ADS (`sds_config:
{ads: {}}`, as istiolite's generated listeners and clusters do). (A *static cluster* cannot:
Envoy 1.40 crashes at start when one references SDS over ADS, before ADS exists; generated
clusters arrive over CDS and are not affected.)"""

from __future__ import annotations

import datetime
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from istiolite.demo.echo import EchoServer
from istiolite.security.identity import Identity
from istiolite.xds.ads import AdsService
from istiolite.xds.workload_certs import WorkloadCerts
from tests.protocol.harness import mesh
from tests.support import objects
from tests.support.certs import CertificateAuthority
from tests.support.net import free_ports, http_request
from tests.support.processes import EnvoyProcess
from tests.support.secure_xds import TlsXdsServer
from tests.support.wait import wait_for
from tests.support.workload_ca import SimpleCA, TokenAuthenticator

pytestmark = [pytest.mark.envoy]

NODE_ID = "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local"
WEB = Identity("cluster.local", "shop", "web")
ADS_SDS = {"ads": {}, "resource_api_version": "V3"}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _workload_tls() -> dict[str, Any]:
    """The common TLS context of a mesh hop: the identity `default`, the trust bundle `ROOTCA`
    (only the web service account is accepted as a peer)."""
    return {
        "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": ADS_SDS}],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"exact": WEB.spiffe_uri}}
                ]
            },
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": ADS_SDS},
        },
    }


def _http_manager(name: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM + "HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": ROUTER},
                }
            ],
        },
    }


def _static_cluster(name: str, port: int, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if tls is not None:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return cluster


def _listener(name: str, port: int, cluster: str, tls: dict[str, Any] | None) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [_http_manager(name, cluster)]}
    if tls is not None:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain],
    }


def mtls_listener(mtls_port: int, echo_port: int) -> Any:
    """mtls_port (mutual TLS with `default`/`ROOTCA`) → echo."""

    def patch(document: dict[str, Any]) -> None:
        static = document["static_resources"]
        static["clusters"].append(_static_cluster("echo", echo_port))
        static["listeners"] = [
            _listener(
                "mtls-in",
                mtls_port,
                "echo",
                {
                    "@type": TLS + "DownstreamTlsContext",
                    "require_client_certificate": True,
                    "common_tls_context": _workload_tls(),
                },
            )
        ]

    return patch


@dataclass
class Loop:
    """Requests one after the other through Envoy until stopped; keeps every failure."""

    port: int
    tls: ssl.SSLContext
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = http_request("127.0.0.1", self.port, "echo", "/", tls=self.tls)
                if reply.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{reply.status}: {reply.body[:200]}")
            except OSError as err:
                self.failures.append(repr(err))
            time.sleep(0.02)


def _envoy_serials(envoy: EnvoyProcess) -> set[str]:
    """Serial numbers of the certificate chains Envoy's admin /certs lists."""
    import json

    from tests.support.processes import http_get

    _, body = http_get(envoy.admin("/certs"))
    serials = set()
    for entry in json.loads(body).get("certificates", []):
        for cert in entry.get("cert_chain", []):
            uris = [s.get("uri") for s in cert.get("subject_alt_names", [])]
            if WEB.spiffe_uri in uris:
                serials.add(str(cert["serial_number"]).lower().lstrip("0"))
    return serials


def client_context(ca: SimpleCA, client: Any) -> ssl.SSLContext:
    """Trusts the mesh roots, presents `client` (a web workload certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # a workload certificate carries a URI SAN only
    ctx.load_verify_locations(cadata=ca.trust_bundle().decode())
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(client.chain_pem)
        key.write_bytes(client.key_pem)
        key.chmod(0o600)
        ctx.load_cert_chain(cert, key)
    return ctx


def _presented_serial(port: int, tls: ssl.SSLContext) -> int:
    """The serial of the certificate Envoy presents on the mTLS listener now."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with tls.wrap_socket(raw) as conn:
            der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@dataclass
class Setup:
    server: TlsXdsServer
    envoy: EnvoyProcess
    ca: SimpleCA
    mtls_port: int

    def streams(self) -> list[str]:
        def ids() -> list[str]:
            assert self.server.ads is not None
            return list(self.server.ads.connections)

        return self.server.on_loop(ids)

    def client_certificate(self) -> Any:
        """A certificate of the web identity from the mesh CA (issued on the server's loop)."""
        return self.server.call(self.ca.issue(WEB, datetime.timedelta(minutes=10)))


@pytest.fixture
def secure_envoy(tmp_path: Path) -> Iterator[Setup]:
    serving = CertificateAuthority("istiod serving root")
    root = tmp_path / "root-cert.pem"
    root.write_bytes(serving.cert_pem)
    token = tmp_path / "token"
    token.write_text("web-token")
    ca = SimpleCA()
    server = TlsXdsServer(
        serving.issue("istiod", dns=("istiod.istio-system.svc",)),
        TokenAuthenticator({"web-token": WEB}),
        lambda: AdsService(
            objects.context(*mesh()),
            workload_certs=WorkloadCerts(ca, ttl=datetime.timedelta(seconds=60)),
        ),
    )
    echo = EchoServer("127.0.0.1", 0, "echo").start()
    (mtls_port,) = free_ports(1)
    envoy = None
    try:
        envoy = EnvoyProcess(
            tmp_path,
            f"127.0.0.1:{server.port}",
            NODE_ID,
            delta=True,
            meta={"SERVICE_ACCOUNT": "web"},
            bootstrap_args=["--token-file", str(token), "--xds-root-cert", str(root)],
            patch=mtls_listener(mtls_port, int(echo.address[1])),
        )
        yield Setup(server, envoy, ca, mtls_port)
    finally:
        if envoy is not None:
            envoy.stop()
        echo.stop()
        server.stop()


@pytest.mark.slow
def test_the_certificate_rotates_at_half_life_without_a_failed_request(
    secure_envoy: Setup,
) -> None:
    setup = secure_envoy
    envoy = setup.envoy
    tls = client_context(setup.ca, setup.client_certificate())
    wait_for(
        lambda: http_request("127.0.0.1", setup.mtls_port, "echo", tls=tls).status == 200,
        what="a request over mutual TLS",
    )
    first = _envoy_serials(envoy)
    assert len(first) == 1, first
    assert format(_presented_serial(setup.mtls_port, tls), "x") in first
    streams = setup.streams()

    loop = Loop(setup.mtls_port, tls)
    worker = threading.Thread(target=loop.run, daemon=True)
    started = time.monotonic()
    worker.start()
    try:
        rotated = wait_for(
            lambda: _envoy_serials(envoy) - first,
            timeout=60,
            interval=0.5,
            what="a new serial in Envoy's /certs",
        )
        elapsed = time.monotonic() - started
        # A few more seconds of requests on the new certificate.
        time.sleep(3)
    finally:
        loop.stop.set()
        worker.join(timeout=10)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 100, loop.ok
    # Issued with 59-60 s left: rotated at about half that (±2 %), well before expiry.
    assert 20 <= elapsed <= 40, elapsed
    (new_serial,) = rotated
    assert format(_presented_serial(setup.mtls_port, tls), "x") == new_serial
    assert setup.streams() == streams, "the same ADS stream: nothing reconnected"


def test_an_envoy_claiming_another_service_account_is_refused_and_gets_no_key(
    tmp_path: Path,
) -> None:
    """The token proves `web`; the node says SERVICE_ACCOUNT=admin: PERMISSION_DENIED (gRPC
    status 7) on every attempt, no certificate issued, none in Envoy's /certs."""
    serving = CertificateAuthority("istiod serving root")
    root = tmp_path / "root-cert.pem"
    root.write_bytes(serving.cert_pem)
    token = tmp_path / "token"
    token.write_text("web-token")
    ca = SimpleCA()
    server = TlsXdsServer(
        serving.issue("istiod", dns=("istiod.istio-system.svc",)),
        TokenAuthenticator({"web-token": WEB}),
        lambda: AdsService(objects.context(*mesh()), workload_certs=WorkloadCerts(ca)),
    )
    envoy = None
    try:
        envoy = EnvoyProcess(
            tmp_path,
            f"127.0.0.1:{server.port}",
            NODE_ID,
            delta=True,
            meta={"SERVICE_ACCOUNT": "admin"},
            bootstrap_args=["--token-file", str(token), "--xds-root-cert", str(root)],
            patch=mtls_listener(free_ports(1)[0], 9),
            wait_ready=False,
        )
        running = envoy
        wait_for(
            lambda: running.stats().get("grpc.xds-grpc.streams_closed_7", 0) >= 2,
            timeout=20,
            what="envoy's streams denied",
        )
        assert ca.issued == []
        assert _envoy_serials(envoy) == set()
        assert server.connected() == []
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
