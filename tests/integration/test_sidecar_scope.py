"""Sidecar through a real Envoy: a namespace-scoped proxy holds only its clusters; ingress and
egress listeners with their own ports and binds carry traffic."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    dump_section,
    sidecar_envoy,
    start_sidecar_mesh,
    stop_all,
)
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def _service(name: str, namespace: str, port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


def test_scoped_proxy_holds_only_what_its_sidecar_allows(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    ports = [free_port() for _ in range(4)]
    docs = [
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "team-a"},
            "spec": {"egress": [{"hosts": ["./*"]}]},
        },
        _service("cart", "team-a", ports[0]),
        _service("search", "team-a", ports[1]),
        _service("billing", "team-b", ports[2]),
        _service("ledger", "team-b", ports[3]),
    ]
    (config / "mesh.yaml").write_text(yaml.safe_dump_all(docs))
    cp = IstioliteProcess([config], tmp_path)
    envoys: list[EnvoyProcess] = []
    try:
        for namespace in ("team-a", "team-b"):
            envoys.append(sidecar_envoy(cp, tmp_path, namespace=namespace, pod="app-1"))
        scoped, unscoped = (e.cluster_names("outbound|") for e in envoys)
        assert scoped == {
            f"outbound|{ports[0]}||cart.team-a.svc.cluster.local",
            f"outbound|{ports[1]}||search.team-a.svc.cluster.local",
        }
        assert len(unscoped) == 4
        # Only listeners for what it may reach are bound in the scoped proxy.
        listeners = dump_section(envoys[0].config_dump(), "dynamic_listeners")
        names = {item["name"] for item in listeners}
        assert names == {f"127.0.0.1_{ports[0]}", f"127.0.0.1_{ports[1]}"}
    finally:
        stop_all(*envoys, cp)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _get(
    url_host: str, port: int, host_header: str, tls: ssl.SSLContext | None = None
) -> tuple[int, str]:
    """(status, the upstream that answered) for one GET."""
    reply = http_request(url_host, port, host_header, tls=tls)
    return reply.status, reply.json()["server"] if reply.status == 200 else reply.body


def _answers(url_host: str, port: int, host: str, tls: ssl.SSLContext | None = None) -> str:
    try:
        return _get(url_host, port, host, tls)[1]
    except OSError:
        return ""


def test_sidecar_ingress_and_egress_listeners_carry_real_traffic(tmp_path: Path) -> None:
    """Without iptables, a Sidecar ingress port (plain and TLS-terminating) forwards to the
    app's defaultEndpoint, and an egress listener bound on its own loopback address routes to
    the service it imports."""
    app_port, ingress_port, tls_port = free_port(), free_port(), free_port()
    cart_ip, cart_target, cart_port = loopback_ip(), free_port(), free_port()
    egress_ip = loopback_ip()
    cert, key = _self_signed(tmp_path)
    config = tmp_path / "config"
    config.mkdir()
    sidecar_doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {
            "ingress": [
                {
                    "port": {"number": ingress_port, "protocol": "HTTP", "name": "http"},
                    "bind": "127.0.0.1",
                    "defaultEndpoint": f"127.0.0.1:{app_port}",
                },
                {
                    "port": {"number": tls_port, "protocol": "HTTPS", "name": "https"},
                    "bind": "127.0.0.1",
                    "defaultEndpoint": f"127.0.0.1:{app_port}",
                    "tls": {
                        "mode": "SIMPLE",
                        "serverCertificate": str(cert),
                        "privateKey": str(key),
                    },
                },
            ],
            "egress": [
                {
                    "port": {"number": cart_port, "protocol": "HTTP", "name": "http-cart"},
                    "bind": egress_ip,
                    "captureMode": "NONE",
                    "hosts": ["./cart.default.svc.cluster.local"],
                }
            ],
        },
    }
    mesh.write(
        config / "mesh.yaml",
        sidecar_doc,
        mesh.service("cart", "default", cart_port, target_port=cart_target),
        mesh.endpoint_slice("cart", "default", cart_target, [cart_ip]),
        # Another service the Sidecar's egress does not import: no listener, no cluster.
        mesh.service("billing", "default", free_port()),
    )
    cp = envoy = None
    servers: list[EchoServer] = []
    try:
        servers.append(EchoServer("127.0.0.1", app_port, "app").start())
        servers.append(EchoServer(cart_ip, cart_target, "cart-0").start())
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace="default")
        wait_for(lambda: _answers("127.0.0.1", ingress_port, "web") == "app", what="ingress")
        trust = ssl.create_default_context(cafile=str(cert))
        assert _get("127.0.0.1", tls_port, "web", trust) == (200, "app")
        wait_for(
            lambda: _answers(egress_ip, cart_port, "cart") == "cart-0", what="egress on its bind"
        )
        # The egress listener's route knows only cart; anything else is refused, not looped.
        assert _get(egress_ip, cart_port, "billing")[0] == 502

        listeners = dump_section(envoy.config_dump(), "dynamic_listeners")
        names = {item["name"] for item in listeners}
        assert names == {
            f"127.0.0.1_{ingress_port}",
            f"127.0.0.1_{tls_port}",
            f"{egress_ip}_{cart_port}",
        }
        assert not any("error_state" in item for item in listeners)
        cluster_names = envoy.cluster_names()
        assert {f"inbound|{ingress_port}||", f"inbound|{tls_port}||"} <= cluster_names
        assert not [n for n in cluster_names if "billing" in n]
        rejected = {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}
        assert rejected == {}
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()
