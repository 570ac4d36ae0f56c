"""Two real `istiolite serve` replicas against one test Kubernetes API server: one leader writes,
the other only serves; both sign with the one root kept in Secret istio-system/istio-ca-secret;
the root ConfigMap reaches a new namespace at once and comes back after deletion; status
conditions name the field of an invalid VirtualService; the leader stopped, the other takes the
Lease and writes; the leader killed (no release), the other takes it after the lease expires."""

from __future__ import annotations

import base64
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from istiolite._generated.istio.v1.auth import ca_pb2
from tests.support.kube_apiserver import KubeApiServer
from tests.support.processes import IstioliteProcess, Process, http_get, stop_all
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

NS = "istio-system"
LEASE_SECONDS = 4  # renewed within 2 s, tried every 1 s
CREATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
V1 = "networking.istio.io/v1"


@dataclass
class Cluster:
    apiserver: KubeApiServer
    kubeconfig: Path
    work: Path

    def replica(self, name: str) -> IstioliteProcess:
        workdir = self.work / name
        workdir.mkdir()
        config = workdir / "config"
        config.mkdir()
        return IstioliteProcess(
            [config],
            workdir,
            "--kubeconfig", str(self.kubeconfig),
            "--leader-lease-duration", f"{LEASE_SECONDS}s",
            env={"POD_NAME": name, "POD_NAMESPACE": NS},
        )  # fmt: skip

    def holder(self) -> str:
        lease = self.apiserver.get("coordination.k8s.io/v1", "Lease", NS, "istiolite-leader")
        return str(lease["spec"].get("holderIdentity") or "") if lease else ""

    def root_pem(self) -> bytes:
        secret = self.apiserver.get("v1", "Secret", NS, "istio-ca-secret")
        assert secret is not None
        return base64.b64decode(secret["data"]["ca-cert.pem"])

    def configmap(self, namespace: str) -> dict[str, Any] | None:
        return self.apiserver.get("v1", "ConfigMap", namespace, "istio-ca-root-cert")

    def namespace(self, name: str) -> None:
        self.apiserver.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with KubeApiServer() as apiserver:
        yield Cluster(apiserver, apiserver.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path)


def _events(proc: IstioliteProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in proc.log_events() if e.get("event") == event]


def _published(cluster: Cluster, namespace: str) -> bool:
    cm = cluster.configmap(namespace)
    return cm is not None and cm["data"].get("root-cert.pem") == cluster.root_pem().decode()


def _timed(check: Callable[[], bool], what: str, timeout: float) -> float:
    started = time.monotonic()
    wait_for(check, timeout=timeout, what=what)
    return time.monotonic() - started


def _chain_from(proc: IstioliteProcess, cluster: Cluster, root: bytes) -> list[x509.Certificate]:
    """A workload certificate from the replica's CA API (as pilot-agent asks for one)."""
    token = cluster.apiserver.add_token("shop", "reviews")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    with grpc.secure_channel(
        f"127.0.0.1:{proc.secure_grpc_port}",
        creds,
        options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")],
    ) as channel:
        call = channel.unary_unary(
            CREATE,
            request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
            response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
        )
        response = call(
            ca_pb2.IstioCertificateRequest(csr=csr.decode(), validity_duration=3600),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=20,
        )
    return [x509.load_pem_x509_certificate(p.encode()) for p in response.cert_chain]


def _status(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.apiserver.get(V1, "VirtualService", "shop", name)
    return (obj or {}).get("status") or {}


def test_one_leader_writes_and_the_other_takes_over(cluster: Cluster) -> None:
    a = b = None
    try:
        a = cluster.replica("replica-a")
        wait_for(lambda: cluster.holder() == "replica-a", timeout=15, what="a leads")
        b = cluster.replica("replica-b")
        root = cluster.root_pem()

        # One root: both replicas' CA APIs (over TLS verified with it) sign chains ending in it.
        for proc in (a, b):
            chain = _chain_from(proc, cluster, root)
            assert chain[-1].public_bytes(serialization.Encoding.PEM) == root
            for child, parent in itertools.pairwise(chain):
                child.verify_directly_issued_by(parent)
        assert len(_events(a, "CA root created in the cluster")) == 1
        assert not _events(b, "CA root created in the cluster")

        # The leader publishes the root: to every namespace, to a new one at once, again after
        # a deletion.
        for ns in ("default", "kube-system", NS):
            wait_for(lambda ns=ns: _published(cluster, ns), timeout=15, what=f"root in {ns}")
        assert cluster.configmap("kube-public") is None
        cluster.namespace("shop")
        took = _timed(lambda: _published(cluster, "shop"), "root in a new namespace", 10)
        cluster.apiserver.delete("v1", "ConfigMap", "shop", "istio-ca-root-cert")
        back = _timed(lambda: _published(cluster, "shop"), "root recreated", 10)
        print(f"root ConfigMap: new namespace {took:.3f} s, recreated {back:.3f} s")

        # Status on a valid and an invalid VirtualService, the invalid one's field named.
        for name, host in (("good", "reviews"), ("bad", "")):
            cluster.apiserver.put(
                {
                    "apiVersion": V1,
                    "kind": "VirtualService",
                    "metadata": {"name": name, "namespace": "shop"},
                    "spec": {
                        "hosts": ["reviews"],
                        "http": [{"route": [{"destination": {"host": host}}]}],
                    },
                }
            )
        wait_for(lambda: "conditions" in _status(cluster, "good"), timeout=15, what="status")
        wait_for(lambda: "conditions" in _status(cluster, "bad"), timeout=15, what="status")
        assert _status(cluster, "good")["conditions"][0]["status"] == "True"
        bad = _status(cluster, "bad")["conditions"][0]
        assert bad["status"] == "False"
        assert "spec.http[0].route[0].destination.host" in bad["message"]

        # Only the leader wrote.
        assert _events(a, "root ConfigMap created") and _events(a, "status written")
        assert not _events(b, "root ConfigMap created") and not _events(b, "status written")
        assert not _events(b, "became the leader")
        page = http_get(f"http://127.0.0.1:{b.http_port}/debug/push_status")[1]
        assert '"holder": "replica-a"' in page.replace('":"', '": "')

        # The leader stops (and releases the Lease): b leads within the lease duration.
        a.stop()
        took = _timed(lambda: cluster.holder() == "replica-b", "b leads", LEASE_SECONDS)
        print(f"take-over after a clean stop: {took:.3f} s")
        cluster.namespace("after-a")
        wait_for(lambda: _published(cluster, "after-a"), timeout=10, what="b publishes")
        assert _events(b, "root ConfigMap created")

        # No private key in either replica's log.
        secret = cluster.apiserver.get("v1", "Secret", NS, "istio-ca-secret")
        assert secret is not None
        key_line = base64.b64decode(secret["data"]["ca-key.pem"]).decode().splitlines()[1]
        assert key_line not in a.log() and key_line not in b.log()
    finally:
        stop_all(a, b)


def test_a_killed_leader_is_replaced_after_the_lease_expires(cluster: Cluster) -> None:
    a = b = None
    try:
        a = cluster.replica("replica-a")
        wait_for(lambda: cluster.holder() == "replica-a", timeout=15, what="a leads")
        b = cluster.replica("replica-b")
        a.proc.kill()  # no release: b must wait out the lease
        a.proc.wait(timeout=10)
        took = _timed(lambda: cluster.holder() == "replica-b", "b leads", 3 * LEASE_SECONDS)
        print(f"take-over after a kill: {took:.3f} s (lease {LEASE_SECONDS} s)")
        cluster.namespace("after-kill")
        wait_for(lambda: _published(cluster, "after-kill"), timeout=10, what="b publishes")
    finally:
        stop_all(a, b)


def test_the_ca_waits_for_the_api_server(cluster: Cluster) -> None:
    """Started while the API server is down: nothing is served (no certificate from a root
    that is not the cluster's) until it answers; then the cluster's root is created and used."""
    cluster.apiserver.go_down()
    workdir = cluster.work / "late"
    workdir.mkdir()
    argv = [
        sys.executable, "-m", "istiolite.cli", "serve",
        "--kubeconfig", str(cluster.kubeconfig),
        "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
        "--monitoring-addr", "127.0.0.1:0", "--secure-grpc-addr", "127.0.0.1:0",
    ]  # fmt: skip
    proc = Process(argv, workdir / "istiolite.log", {"POD_NAME": "late", "POD_NAMESPACE": NS})
    down = True
    try:
        wait_for(lambda: "cannot load the CA from the cluster" in proc.log(), timeout=20,
                 what="the CA load retried")  # fmt: skip
        assert proc.alive() and '"event": "serving"' not in proc.log()
        cluster.apiserver.come_up()
        down = False
        wait_for(lambda: '"event": "serving"' in proc.log(), timeout=30, what="serving")
        assert "CA loaded from the cluster" in proc.log()
        assert cluster.apiserver.get("v1", "Secret", NS, "istio-ca-secret") is not None
    finally:
        proc.stop()  # first: whatever else fails, the process does not outlive the test
        if down:
            cluster.apiserver.come_up()
    assert proc.proc.returncode == 0
