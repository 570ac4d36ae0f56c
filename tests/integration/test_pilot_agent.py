"""Istio's own sidecar agent against a real `istiolite serve --secure-grpc-addr --ca-dir
--kubeconfig`: pilot-agent's calls replayed (tests/support/pilot_agent.py) — the trust bundle
read from the `istio-ca-root-cert` ConfigMap istiolite published, CreateCertificate with the
pod's token and ClusterID, then Envoy's Delta ADS start-up with the agent's node and the
agent's own NameTable / ProxyConfig requests on the same stream."""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support import mesh
from tests.support.kube_apiserver import KubeApiServer
from tests.support.pilot_agent import (
    CDS,
    EDS,
    ISTIOD_SAN,
    LDS,
    NAME_TABLE,
    PROXY_CONFIG,
    PilotAgent,
    Pod,
    generate_csr,
)
from tests.support.processes import IstioliteProcess
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow]

NAMESPACE = "shop"
PORT = 9080
_pod_numbers = itertools.count(1)


@dataclass
class Cluster:
    apiserver: KubeApiServer
    istiolite: IstioliteProcess
    ca_dir: Path

    def root_from_configmap(self, namespace: str = NAMESPACE) -> bytes:
        """The trust bundle as the pod sees it: ConfigMap istio-ca-root-cert, mounted at
        /var/run/secrets/istio/root-cert.pem."""
        found = wait_for(
            lambda: self.apiserver.get("v1", "ConfigMap", namespace, "istio-ca-root-cert"),
            timeout=30,
            what=f"istio-ca-root-cert in {namespace}",
        )
        return str(found["data"]["root-cert.pem"]).encode()

    def syncz(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.istiolite.http_port}/debug/syncz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            found: list[dict[str, Any]] = json.loads(resp.read())
        return found

    def agent(self, service_account: str = "reviews", **pod: object) -> PilotAgent:
        n = next(_pod_numbers)
        the_pod = Pod(
            name=f"reviews-v1-5d8f7c-{n:05d}",
            namespace=NAMESPACE,
            service_account=service_account,
            ip=f"10.244.0.{n}",
            labels={"app": "reviews", "version": "v1"},
            **pod,  # type: ignore[arg-type]
        )
        return PilotAgent(
            the_pod,
            self.apiserver.add_token(NAMESPACE, service_account),
            self.root_from_configmap(),
            f"127.0.0.1:{self.istiolite.secure_grpc_port}",
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("pilot-agent")
    with KubeApiServer() as apiserver:
        apiserver.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        for name, ip in (("reviews", "10.244.1.1"), ("ratings", "10.244.1.2")):
            apiserver.put(mesh.service(name, NAMESPACE, PORT))
            apiserver.put(mesh.endpoint_slice(name, NAMESPACE, PORT, [ip]))
        istiolite = IstioliteProcess(
            [],
            work,
            "--ca-dir", str(work / "ca"),
            "--kubeconfig", str(apiserver.write_kubeconfig(work / "kubeconfig")),
            "--leader-lease-duration", "4s",
        )  # fmt: skip
        try:
            yield Cluster(apiserver, istiolite, work / "ca")
        finally:
            istiolite.stop()


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


@pytest.mark.parametrize("ecdsa", [False, True], ids=["rsa2048", "ecdsa-p256"])
def test_certificate_as_the_agent_asks_for_it(cluster: Cluster, ecdsa: bool) -> None:
    agent = cluster.agent()
    csr, key = generate_csr(agent.pod, ecdsa=ecdsa)
    chain = agent.create_certificate(csr)

    certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain]
    leaf = certs[0]
    assert _uris(leaf) == [agent.pod.spiffe_id]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(serialization.Encoding.DER, spki) == (
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    )
    # The agent takes the last element as its root when the CA publishes no bundle.
    assert chain[-1].encode() == agent.root_cert_pem
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life.total_seconds() == 86400 + 120  # SECRET_TTL, NotBefore 2 min back


def test_a_wrong_cluster_id_is_refused(cluster: Cluster) -> None:
    agent = cluster.agent()
    csr, _key = generate_csr(agent.pod)
    with pytest.raises(grpc.RpcError) as err:
        agent.create_certificate(csr, cluster_id="remote-cluster")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "remote-cluster" in err.value.details()  # type: ignore[attr-defined]

    stream = agent.connect(cluster_id="remote-cluster")
    try:
        stream.subscribe(CDS)
        closed = stream.wait_closed()
    finally:
        stream.close()
    assert closed.code == grpc.StatusCode.UNAUTHENTICATED
    assert "remote-cluster" in closed.details


def test_delta_ads_start_up_makes_the_sidecar_ready(cluster: Cluster) -> None:
    agent = cluster.agent()
    stream = agent.connect(dns_capture=True, proxy_config_xds=True)
    try:
        start = stream.start_like_envoy()
        assert start.ready
        reviews = f"outbound|{PORT}||reviews.{NAMESPACE}.svc.cluster.local"
        assert reviews in start.clusters
        assert reviews in start.eds_names and reviews in start.endpoints
        assert {"virtualOutbound", "virtualInbound"} <= set(start.listeners)
        assert str(PORT) in start.route_names
        assert start.routes == set(start.route_names)

        # The agent's own types: answered (empty), and the stream goes on.
        for type_url in (NAME_TABLE, PROXY_CONFIG):
            answer = stream.answer_agent_type(type_url)
            assert answer.nonce and not answer.removed_resources
        assert stream.closed is None

        # A change after all that still reaches the sidecar on the same stream.
        cluster.apiserver.put(mesh.service("details", NAMESPACE, PORT))
        cluster.apiserver.put(mesh.endpoint_slice("details", NAMESPACE, PORT, ["10.244.1.3"]))
        details = f"outbound|{PORT}||details.{NAMESPACE}.svc.cluster.local"

        def details_arrived() -> bool:
            response = stream.recv(CDS, timeout=1)
            stream.ack(response)
            return details in {r.name for r in response.resources}

        wait_for(details_arrived, timeout=30, what="the new cluster on the open stream")
        stream.subscribe(EDS, [details])
        endpoints = stream.recv(EDS)
        assert [r.name for r in endpoints.resources] == [details]
        stream.ack(endpoints)
        assert stream.closed is None
    finally:
        stream.close()


def test_the_agents_node_is_seen_as_sent(cluster: Cluster) -> None:
    agent = cluster.agent()
    stream = agent.connect()
    try:
        stream.subscribe(CDS)
        stream.ack(stream.recv(CDS))
        stream.subscribe(LDS)
        stream.ack(stream.recv(LDS))
        syncz = wait_for(
            lambda: [
                p
                for p in cluster.syncz()
                if p["proxy"] == agent.pod.node_id
                and all(t["status"] == "SYNCED" for t in p["types"].values())
            ],
            timeout=15,
            what="the agent's proxy in /debug/syncz",
        )
    finally:
        stream.close()
    (entry,) = syncz
    assert entry["istio_version"] == "1.24.3"
    assert entry["cluster_id"] == "Kubernetes"
    assert entry["delta"] is True
    assert set(entry["types"]) == {"CDS", "LDS"}


def test_a_node_claiming_another_service_account_is_denied(cluster: Cluster) -> None:
    agent = cluster.agent("reviews")
    impostor = PilotAgent(
        Pod(
            name=agent.pod.name,
            namespace=NAMESPACE,
            service_account="payments",
            ip=agent.pod.ip,
            labels=agent.pod.labels,
        ),
        agent.token,
        agent.root_cert_pem,
        agent.address,
    )
    stream = impostor.connect()
    try:
        stream.subscribe(CDS)
        closed = stream.wait_closed()
    finally:
        stream.close()
    assert closed.code == grpc.StatusCode.PERMISSION_DENIED
    assert "payments" in closed.details and "reviews" in closed.details


def test_the_serving_certificate_is_for_istiods_name(cluster: Cluster) -> None:
    """Only the name the agent checks is needed: a channel verifying another name fails."""
    agent = cluster.agent()
    csr, _key = generate_csr(agent.pod)
    assert agent.create_certificate(csr)
    creds = grpc.ssl_channel_credentials(root_certificates=agent.root_cert_pem)
    with grpc.secure_channel(
        agent.address, creds, options=[("grpc.ssl_target_name_override", "not-" + ISTIOD_SAN)]
    ) as channel:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=3)
