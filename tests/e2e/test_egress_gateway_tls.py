"""istio.io's "Egress gateway for HTTPS traffic" (TLS passthrough), with real interception: an app
opens TLS to `edition.cnn.com`:443; its sidecar (REDIRECT) takes the connection on istiod's
`0.0.0.0_443` SNI listener and sends it to the egress gateway, which sends it on, by SNI, to the
ServiceEntry's endpoint — not back to itself. The app verifies the upstream's own certificate,
so the bytes were never opened on the way."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from shutil import which
from typing import Any

import pytest

from tests.e2e.harness import MeshNetwork, Pod, SidecarEnvoy
from tests.support import mesh as yaml_mesh
from tests.support.certs import CertificateAuthority, client_context, server_context
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.e2e]

POD_IP = "10.200.0.1"
EGRESS_IP = "10.200.0.60"  # the egress gateway's Envoy
UPSTREAM_IP = "10.200.0.61"  # what DNS would give for edition.cnn.com
EGRESS_VIP = "10.200.1.60"
HOST = "edition.cnn.com"
EGRESS_HOST = "istio-egressgateway.istio-system.svc.cluster.local"
SIDECAR_TO_EGRESS = f"outbound|443|cnn|{EGRESS_HOST}"
GATEWAY_TO_HOST = f"outbound|443||{HOST}"


class TlsUpstream(socketserver.ThreadingTCPServer):
    """Answers `<tag>:<bytes>` over TLS; remembers who connected."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ip: str, port: int, tag: str, tls: ssl.SSLContext) -> None:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.peers.append(self.client_address[0])
                try:
                    conn = outer.tls.wrap_socket(self.request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                with conn:
                    conn.sendall(outer.tag + b":" + conn.recv(4096))

        super().__init__((ip, port), Handler)
        self.tag, self.tls = tag.encode(), tls
        self.peers: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


def egress_objects() -> list[dict[str, Any]]:
    tls_443 = {"number": 443, "name": "tls", "protocol": "TLS"}
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": "cnn", "namespace": "default"},
            # The task's entry is `resolution: DNS`; STATIC stands in for the DNS answer here.
            "spec": {
                "hosts": [HOST],
                "ports": [tls_443],
                "resolution": "STATIC",
                "endpoints": [{"address": UPSTREAM_IP}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "istio-egressgateway", "namespace": "default"},
            "spec": {
                "selector": {"istio": "egressgateway"},
                "servers": [{"port": tls_443, "hosts": [HOST], "tls": {"mode": "PASSTHROUGH"}}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "egressgateway-for-cnn", "namespace": "default"},
            "spec": {"host": EGRESS_HOST, "subsets": [{"name": "cnn"}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "direct-cnn-through-egress-gateway", "namespace": "default"},
            "spec": {
                "hosts": [HOST],
                "gateways": ["mesh", "istio-egressgateway"],
                "tls": [
                    {
                        "match": [{"gateways": ["mesh"], "port": 443, "sniHosts": [HOST]}],
                        "route": [
                            {
                                "destination": {
                                    "host": EGRESS_HOST,
                                    "subset": "cnn",
                                    "port": {"number": 443},
                                }
                            }
                        ],
                    },
                    {
                        "match": [
                            {"gateways": ["istio-egressgateway"], "port": 443, "sniHosts": [HOST]}
                        ],
                        "route": [
                            {"destination": {"host": HOST, "port": {"number": 443}}, "weight": 100}
                        ],
                    },
                ],
            },
        },
    ]


@dataclass
class Scenario:
    pod: Pod
    gateway: SidecarEnvoy
    upstream: TlsUpstream
    ca: CertificateAuthority


@pytest.fixture(scope="module")
def scenario(mesh_network: MeshNetwork) -> Iterator[Scenario]:
    net = mesh_network
    ca = CertificateAuthority("egress upstream CA")
    for ip in (EGRESS_IP, UPSTREAM_IP):
        net.add_address(ip)
    upstream = net.ns.call(TlsUpstream, UPSTREAM_IP, 443, "cnn", server_context(ca.issue(HOST)))
    net.stack.callback(upstream.stop)
    yaml_mesh.write(
        net.config_dir / "egress.yaml",
        # As Istio's chart: service port 443, the gateway listening on 8443.
        yaml_mesh.service(
            "istio-egressgateway",
            "istio-system",
            443,
            target_port=8443,
            port_name="tls",
            cluster_ip=EGRESS_VIP,
            selector={"istio": "egressgateway"},
        ),
        yaml_mesh.endpoint_slice("istio-egressgateway", "istio-system", 8443, [EGRESS_IP],
                                 port_name="tls"),
        *egress_objects(),
    )  # fmt: skip
    istiolite = net.start_istiolite()
    # The egress gateway: a `router` Envoy on the network's own namespace.
    gateway_dir = net.workdir / "egress-gateway"
    gateway_dir.mkdir()
    gateway = SidecarEnvoy(
        net.ns,
        gateway_dir,
        net.workdir / "envoy-egress-gateway.log",
        istiolite.xds_address,
        f"router~{EGRESS_IP}~egress-1.istio-system~istio-system.svc.cluster.local",
        namespace="istio-system",
        pod_ip=EGRESS_IP,
        labels={"istio": "egressgateway"},
        identity=[which("setpriv") or "setpriv"],
    )
    net.stack.callback(gateway.stop)
    wait_for(gateway.synced, timeout=30, what="egress gateway synced")
    pod = net.add_pod("app", POD_IP)
    yield Scenario(pod, gateway, upstream, ca)


def _tls_exchange(ca: CertificateAuthority, ip: str, port: int, sni: str) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname=sni) as conn:
            conn.sendall(b"hi")
            return conn.recv(4096)


def _delta(before: Any, after: Any, name: str) -> int:
    return int(after.get(name, 0) - before.get(name, 0))


def test_sidecar_sends_the_host_through_the_egress_gateway_by_sni(scenario: Scenario) -> None:
    sidecar, gateway = scenario.pod.envoy, scenario.gateway
    side_before, gw_before = sidecar.stats(), gateway.stats()
    reply = scenario.pod.ns.call(_tls_exchange, scenario.ca, UPSTREAM_IP, 443, HOST)
    side_after, gw_after = sidecar.stats(), gateway.stats()
    assert reply == b"cnn:hi"
    # The sidecar's 0.0.0.0_443 took it (not PassthroughCluster) and chose the egress gateway …
    assert _delta(side_before, side_after, f"cluster.{SIDECAR_TO_EGRESS}.upstream_cx_total") == 1
    assert _delta(side_before, side_after, "cluster.PassthroughCluster.upstream_cx_total") == 0
    # … which sent it to the host's own cluster, not back to itself.
    assert _delta(gw_before, gw_after, f"cluster.{GATEWAY_TO_HOST}.upstream_cx_total") == 1
    assert scenario.upstream.peers[-1] != POD_IP


def test_other_tls_on_443_is_not_captured(scenario: Scenario) -> None:
    """A destination on 443 that names another host falls through as before (ALLOW_ANY)."""
    sidecar = scenario.pod.envoy
    before = sidecar.stats()
    reply = scenario.pod.ns.call(_tls_exchange, scenario.ca, UPSTREAM_IP, 443, HOST)
    assert reply == b"cnn:hi"
    # The upstream presents edition.cnn.com, so a client naming another host fails its
    # handshake; what matters is that it left through PassthroughCluster, to where it dialled.
    with pytest.raises(ssl.SSLError):
        scenario.pod.ns.call(_tls_exchange, scenario.ca, UPSTREAM_IP, 443, "other.example.org")
    after = sidecar.stats()
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_cx_total") == 1
    assert _delta(before, after, f"cluster.{SIDECAR_TO_EGRESS}.upstream_cx_total") == 1
