"""A gateway's credentialName Secret in Kubernetes, deleted and recreated at run time: the test
API server → `istiolite serve --kubeconfig` → a real gateway Envoy. Deleted, the HTTPS server is
taken out of the listeners (no listener left warming, the old certificate no longer served) and
the Gateway's warning names the missing Secret; recreated, the server comes back."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import mesh
from tests.support.certs import CertificateAuthority, client_context, tls_secret
from tests.support.kube_apiserver import KubeApiServer
from tests.support.net import free_port
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    gateway_envoy,
    http_get,
    stop_all,
)
from tests.support.upstream import BehaviourServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

GW_NS = "istio-system"
HOST = "hello.example.com"


def _secret(ca: CertificateAuthority) -> dict[str, object]:
    return tls_secret("hello-cert", GW_NS, ca.issue(HOST, dns=(HOST,)))


@dataclass
class KubeGateway:
    apiserver: KubeApiServer
    cp: IstioliteProcess
    envoy: EnvoyProcess
    ca: CertificateAuthority
    https_port: int

    def put_secret(self) -> None:
        self.apiserver.put(_secret(self.ca))

    def https_status(self) -> int | None:
        """The status of a verified HTTPS GET, None when no TLS server answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=5) as raw:
                with client_context(self.ca).wrap_socket(raw, server_hostname=HOST) as sock:
                    sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                                 .encode())  # fmt: skip
                    head = sock.recv(4096).decode(errors="replace")
                    return int(head.split()[1])
        except (OSError, ssl.SSLError, IndexError, ValueError):
            return None

    def listener_names(self) -> set[str]:
        configs = self.envoy.config_dump("dynamic_listeners").get("configs", [])
        return {listener["name"] for listener in configs}

    def secret_names(self) -> set[str]:
        configs = self.envoy.config_dump("dynamic_active_secrets").get("configs", [])
        return {secret["name"] for secret in configs}

    def warnings(self) -> list[dict[str, str]]:
        _, body = http_get(f"http://127.0.0.1:{self.cp.http_port}/debug/configz")
        return list(json.loads(body)["warnings"])


@pytest.fixture(params=[False, True], ids=["sotw", "delta"])
def kube_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeGateway]:
    upstream_port, https_port = free_port(), free_port()
    with KubeApiServer(watch_timeout=5.0, bookmark_interval=0.5) as apiserver:
        apiserver.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
        apiserver.put(mesh.service("hello", "web", 80, target_port=upstream_port))
        apiserver.put(mesh.endpoint_slice("hello", "web", upstream_port, ["127.0.0.1"]))
        apiserver.put(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "web-gw", "namespace": GW_NS},
                "spec": {
                    "selector": {"istio": "ingressgateway"},
                    "servers": [
                        {
                            "port": {"number": https_port, "name": "https", "protocol": "HTTPS"},
                            "hosts": [HOST],
                            "tls": {"mode": "SIMPLE", "credentialName": "hello-cert"},
                        }
                    ],
                },
            }
        )
        apiserver.put(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "hello", "namespace": "web"},
                "spec": {
                    "hosts": [HOST],
                    "gateways": [f"{GW_NS}/web-gw"],
                    "http": [{"route": [{"destination": {"host": "hello"}}]}],
                },
            }
        )
        kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
        ca = CertificateAuthority("gateway CA")
        apiserver.put(_secret(ca))
        cp = envoy = upstream = None
        try:
            upstream = BehaviourServer("127.0.0.1", upstream_port, "hello-1").start()
            # Gateway credentials over SDS on loopback: the development mode, as the other
            # gateway tests.
            cp = IstioliteProcess(
                [], tmp_path, "--kubeconfig", str(kubeconfig), "--dev-plaintext-sds"
            )
            envoy = gateway_envoy(cp, tmp_path, namespace=GW_NS, delta=request.param)
            yield KubeGateway(apiserver, cp, envoy, ca, https_port)
        finally:
            stop_all(envoy, cp)
            if upstream is not None:
                upstream.stop()


def test_a_deleted_secret_takes_its_server_out_and_a_recreated_one_brings_it_back(
    kube_gateway: KubeGateway,
) -> None:
    gw = kube_gateway
    listener = f"0.0.0.0_{gw.https_port}"
    wait_for(lambda: gw.https_status() == 200, what="HTTPS with the Secret's certificate")
    assert "kubernetes://hello-cert" in gw.secret_names()

    gw.apiserver.delete("v1", "Secret", GW_NS, "hello-cert")
    wait_for(lambda: listener not in gw.listener_names(), what="the server taken out")
    assert gw.https_status() is None
    # The key and certificate are gone from the proxy, not only unused.
    wait_for(
        lambda: "kubernetes://hello-cert" not in gw.secret_names(),
        what="the credential dropped by Envoy",
    )
    assert gw.envoy.stats()["listener_manager.total_listeners_warming"] == 0
    assert any(
        w["object"] == f"Gateway {GW_NS}/web-gw"
        and w["field"] == "spec.servers[0].tls.credentialName"
        and "hello-cert" in w["message"]
        for w in gw.warnings()
    ), gw.warnings()

    gw.put_secret()
    wait_for(lambda: gw.https_status() == 200, what="HTTPS again with the recreated Secret")
    assert gw.envoy.stats()["listener_manager.total_listeners_warming"] == 0
