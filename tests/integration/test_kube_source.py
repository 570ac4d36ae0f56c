"""Kubernetes as the source, end to end: the test API server (driven as a cluster would be) →
`istiolite serve --kubeconfig` → a real Envoy carrying real requests."""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from istiolite.demo.echo import EchoServer
from tests.support import certs, mesh
from tests.support.kube_apiserver import KubeApiServer
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    http_get,
    sidecar_envoy,
    stop_all,
)
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

NAMESPACE = "shop"
DEBUG_PAGES = ["/debug/syncz", "/debug/configz", "/debug/registryz", "/debug/push_status"]


@dataclass
class KubeMesh:
    apiserver: KubeApiServer
    workdir: Path
    service_port: int
    target_port: int
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    upstreams: dict[str, EchoServer] = field(default_factory=dict)

    def start_upstream(self, name: str) -> str:
        ip = loopback_ip()
        self.upstreams[ip] = EchoServer(ip, self.target_port, name).start()
        return ip

    def request(self, host: str) -> tuple[int, str]:
        reply = http_request("127.0.0.1", self.service_port, host, "/")
        if reply.status == 200 and reply.body.startswith("{"):
            return reply.status, reply.json()["server"]
        return reply.status, reply.body

    def cluster(self, service: str) -> str:
        return f"outbound|{self.service_port}||{service}.{NAMESPACE}.svc.cluster.local"

    def put_service(self, name: str, ips: list[str], *, slice_name: str = "") -> None:
        self.apiserver.put(
            mesh.service(name, NAMESPACE, self.service_port, target_port=self.target_port)
        )
        self.put_slice(name, ips, slice_name=slice_name)

    def put_slice(self, service: str, ips: list[str], *, slice_name: str = "") -> None:
        obj = mesh.endpoint_slice(service, NAMESPACE, self.target_port, ips)
        obj["metadata"]["name"] = slice_name or f"{service}-slice"
        self.apiserver.put(obj)

    def served(self, host: str, count: int = 20) -> set[str]:
        return {self.request(host)[1] for _ in range(count)}


def _virtual_service(name: str, host: str, destination: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "hosts": [host],
            "http": [{"route": [{"destination": {"host": destination, "port": {"number": port}}}]}],
        },
    }


@pytest.fixture
def istio_crds() -> bool:
    return True


@pytest.fixture
def kube_mesh(tmp_path: Path, istio_crds: bool) -> Iterator[KubeMesh]:
    """alpha (2 pods) in the cluster; istiolite reading only the cluster; one sidecar Envoy."""
    with KubeApiServer(
        watch_timeout=5.0, bookmark_interval=0.5, istio_crds=istio_crds
    ) as apiserver:
        m = KubeMesh(apiserver, tmp_path, service_port=free_port(), target_port=free_port())
        try:
            apiserver.put(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            )
            m.put_service("alpha", [m.start_upstream("alpha-0"), m.start_upstream("alpha-1")])
            kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
            m.istiolite = IstioliteProcess(
                [], tmp_path, "--kubeconfig", str(kubeconfig), "--log-level", "debug"
            )
            m.envoy = sidecar_envoy(
                m.istiolite, tmp_path, namespace=NAMESPACE, labels={"app": "client"}
            )
            wait_for(lambda: m.request("alpha")[0] == 200, what="first request through envoy")
            yield m
        finally:
            stop_all(m.envoy, m.istiolite)
            for server in m.upstreams.values():
                server.stop()


class Load:
    """Requests through Envoy in a thread (bounded in count and time) counting failures."""

    def __init__(self, kube_mesh: KubeMesh, host: str, seconds: float) -> None:
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._mesh, self._host, self._seconds = kube_mesh, host, seconds
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        deadline = time.monotonic() + self._seconds
        for _ in range(50_000):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, _ = self._mesh.request(self._host)
            except OSError as err:
                self.failures.append(repr(err))
                continue
            self.statuses[status] += 1
            if status != 200:
                self.failures.append(str(status))
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        wait_for(lambda: sum(self.statuses.values()) > 10, what="load running")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._seconds + 30)


def test_services_slices_and_virtual_services_from_the_cluster_steer_traffic(
    kube_mesh: KubeMesh,
) -> None:
    m, server = kube_mesh, kube_mesh.apiserver
    assert m.served("alpha") == {"alpha-0", "alpha-1"}
    # A new Service with its EndpointSlice becomes routable.
    assert m.request("gamma")[0] == 502
    m.put_service("gamma", [m.start_upstream("gamma-0")])
    wait_for(lambda: m.request("gamma") == (200, "gamma-0"), what="gamma routable")
    # A changed EndpointSlice: alpha-1 leaves.
    alpha_ips = sorted(ip for ip, s in m.upstreams.items() if s.name.startswith("alpha"))
    alpha_0 = next(ip for ip in alpha_ips if m.upstreams[ip].name == "alpha-0")
    m.put_slice("alpha", [alpha_0])
    wait_for(lambda: m.served("alpha") == {"alpha-0"}, what="alpha-1 removed")
    # A VirtualService sends alpha's traffic to gamma; deleting it restores alpha.
    server.put(_virtual_service("alpha-to-gamma", "alpha", "gamma", m.service_port))
    wait_for(lambda: m.served("alpha") == {"gamma-0"}, what="virtual service applied")
    server.delete("networking.istio.io/v1", "VirtualService", NAMESPACE, "alpha-to-gamma")
    wait_for(lambda: m.served("alpha") == {"alpha-0"}, what="virtual service removed")
    # A deleted Service is gone from Envoy.
    server.delete("v1", "Service", NAMESPACE, "gamma")
    wait_for(lambda: m.request("gamma")[0] == 502, what="gamma removed")


def test_slice_deleted_during_a_410_gap_stops_getting_traffic(kube_mesh: KubeMesh) -> None:
    m, server = kube_mesh, kube_mesh.apiserver
    extra = m.start_upstream("alpha-extra")
    m.put_slice("alpha", [extra], slice_name="alpha-extra")
    wait_for(lambda: "alpha-extra" in m.served("alpha", 30), what="second slice in use")
    assert m.envoy is not None
    envoy = m.envoy
    server.go_down()
    server.delete("discovery.k8s.io/v1", "EndpointSlice", NAMESPACE, "alpha-extra")
    server.compact()  # the watch cannot resume: 410, relist, the delete found by the diff
    server.come_up()
    wait_for(
        lambda: len(envoy.cluster_endpoints(m.cluster("alpha"))) == 2,
        timeout=60,
        what="envoy drops the deleted slice's endpoint",
    )
    assert m.served("alpha", 30) == {"alpha-0", "alpha-1"}


def test_api_outage_keeps_serving_and_reconverges(kube_mesh: KubeMesh) -> None:
    m, server = kube_mesh, kube_mesh.apiserver
    with Load(m, "alpha", seconds=60) as load:
        server.go_down()
        started = time.monotonic()
        m.put_service("delta", [m.start_upstream("delta-0")])  # written while unreachable
        wait_for(lambda: time.monotonic() - started >= 10, timeout=15, what="10 s outage")
        server.come_up()
        wait_for(lambda: m.request("delta") == (200, "delta-0"), timeout=60, what="reconverged")
    assert load.failures == [], load.failures[:5]
    assert load.statuses[200] > 100


@pytest.mark.parametrize("istio_crds", [False])
def test_crd_installed_after_start_is_picked_up(kube_mesh: KubeMesh) -> None:
    m, server = kube_mesh, kube_mesh.apiserver
    m.put_service("gamma", [m.start_upstream("gamma-0")])
    wait_for(lambda: m.request("gamma") == (200, "gamma-0"))
    server.install_crd(
        "networking.istio.io", "VirtualService", "virtualservices", ("v1", "v1beta1")
    )
    server.put(_virtual_service("alpha-to-gamma", "alpha", "gamma", m.service_port))
    wait_for(lambda: m.served("alpha") == {"gamma-0"}, timeout=30, what="VS of the new CRD")


def test_invalid_virtual_service_is_named_and_the_rest_still_works(kube_mesh: KubeMesh) -> None:
    m, server = kube_mesh, kube_mesh.apiserver
    assert m.istiolite is not None
    m.put_service("gamma", [m.start_upstream("gamma-0")])
    bad = _virtual_service("broken", "gamma", "alpha", 70000)
    server.put(bad)
    server.put(_virtual_service("alpha-to-gamma", "alpha", "gamma", m.service_port))
    wait_for(lambda: m.served("alpha") == {"gamma-0"}, what="the valid VS applied")
    assert m.request("gamma") == (200, "gamma-0")  # the broken one is not applied
    istiolite = m.istiolite
    rejected = wait_for(
        lambda: [e for e in istiolite.log_events() if e.get("event") == "invalid object rejected"],
        what="rejection logged",
    )
    assert rejected[0]["object"] == f"VirtualService {NAMESPACE}/broken"
    assert rejected[0]["field"] == "spec.http[0].route[0].destination.port.number"


def test_secret_private_key_never_in_logs_or_debug_pages(kube_mesh: KubeMesh) -> None:
    m, server = kube_mesh, kube_mesh.apiserver
    assert m.istiolite is not None
    pair = certs.CertificateAuthority().issue("web.example.com", dns=("web.example.com",))
    key_b64 = base64.b64encode(pair.key_pem).decode()
    key_body = "".join(pair.key_pem.decode().splitlines()[1:-1])
    server.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "web-cert", "namespace": NAMESPACE},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(pair.cert_pem).decode(), "tls.key": key_b64},
        }
    )
    port = m.istiolite.http_port
    wait_for(
        lambda: "web-cert" in http_get(f"http://127.0.0.1:{port}/debug/configz")[1],
        what="secret read",
    )
    outputs = [m.istiolite.log()]
    for page in DEBUG_PAGES:
        status, body = http_get(f"http://127.0.0.1:{port}{page}")
        assert status == 200, page
        outputs.append(body)
    text = "\n".join(outputs).replace("\\n", "")
    for secret in (key_b64, key_body, key_body[:64]):
        assert secret not in text
