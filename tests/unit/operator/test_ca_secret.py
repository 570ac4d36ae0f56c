"""The mesh CA kept in the cluster: created once (also when two replicas race), loaded by every
replica, `cacerts` preferred, a broken Secret refused with its key named (and never replaced
by a new root), the private key never in the logs."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from istiolite.operator.ca_secret import CA_SECRET_TYPE, ClusterCA
from istiolite.security.ca import CAError, MeshCA, new_root_material
from istiolite.sources.kube.client import KubeClient
from tests.support.cacerts import write_plugin_dir
from tests.support.kube_apiserver import KubeApiServer

NS = "istio-system"


def _ca() -> MeshCA:
    return MeshCA.load(None, "cluster.local", placeholder=True)


def _secret(apiserver: KubeApiServer, name: str) -> dict[str, Any] | None:
    return apiserver.get("v1", "Secret", NS, name)


def _data(files: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in files.items()}


async def test_first_replica_creates_istio_ca_secret_as_istiod(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ca = _ca()
    placeholder = ca.root_pem()
    source = await ClusterCA(kube, ca, namespace=NS).load()
    assert source == f"{NS}/istio-ca-secret"
    stored = _secret(apiserver, "istio-ca-secret")
    assert stored is not None and stored["type"] == CA_SECRET_TYPE
    data = {k: base64.b64decode(v) for k, v in stored["data"].items()}
    assert set(data) == {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "key.pem", "root-cert.pem"}
    assert data["ca-cert.pem"] == ca.root_pem() != placeholder
    root = x509.load_pem_x509_certificate(data["ca-cert.pem"])
    assert root.subject.rfc4514_string() == "O=cluster.local"
    assert ca.source == f"Secret {NS}/istio-ca-secret"


async def test_two_replicas_racing_end_with_one_root(
    apiserver: KubeApiServer, kube: KubeClient, tmp_path: Path
) -> None:
    other = await KubeClient.connect(apiserver.write_kubeconfig(tmp_path / "other"))
    assert other is not None
    try:
        cas = [_ca() for _ in range(4)]
        clients = [kube, other, kube, other]
        await asyncio.gather(
            *(ClusterCA(c, ca, namespace=NS).load() for c, ca in zip(clients, cas, strict=True))
        )
    finally:
        await other.close()
    roots = {ca.root_pem() for ca in cas}
    assert len(roots) == 1
    creates = [r for r in apiserver.requests if r.method == "POST" and "/secrets" in r.path]
    assert creates  # whoever lost a POST got a 409 and loaded the winner's root
    assert base64.b64decode(_secret(apiserver, "istio-ca-secret")["data"]["ca-cert.pem"]) in roots


async def test_an_existing_secret_is_loaded_not_replaced(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    first = _ca()
    await ClusterCA(kube, first, namespace=NS).load()
    second = _ca()
    await ClusterCA(kube, second, namespace=NS).load()
    assert second.root_pem() == first.root_pem()
    assert [r.method for r in apiserver.requests if "/secrets" in r.path].count("POST") == 1


async def test_cacerts_wins_over_istio_ca_secret(
    apiserver: KubeApiServer, kube: KubeClient, tmp_path: Path
) -> None:
    await ClusterCA(kube, _ca(), namespace=NS).load()
    write_plugin_dir(tmp_path / "cacerts")
    names = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
    plugged = {n: (tmp_path / "cacerts" / n).read_bytes() for n in names}
    apiserver.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": NS},
            "type": "Opaque",
            "data": _data(plugged),
        }
    )
    ca = _ca()
    assert await ClusterCA(kube, ca, namespace=NS).load() == f"{NS}/cacerts"
    assert ca.root_pem() == plugged["root-cert.pem"]


async def test_a_broken_secret_names_the_key_and_no_new_root_is_made(
    apiserver: KubeApiServer, kube: KubeClient, capfd: pytest.CaptureFixture[str]
) -> None:
    await ClusterCA(kube, _ca(), namespace=NS).load()
    stored = _secret(apiserver, "istio-ca-secret")
    assert stored is not None
    key_body = base64.b64decode(stored["data"]["ca-key.pem"]).decode().splitlines()[1]
    # A key that does not match the certificate: the message names the key, never shows it.
    _, other_key = new_root_material("cluster.local")
    stored["data"]["ca-key.pem"] = base64.b64encode(other_key).decode()
    apiserver.put(stored)
    with pytest.raises(CAError) as caught:
        await ClusterCA(kube, _ca(), namespace=NS).load()
    assert str(caught.value) == (
        f"Secret {NS}/istio-ca-secret key ca-key.pem: does not match the certificate in "
        f"Secret {NS}/istio-ca-secret key ca-cert.pem"
    )
    assert [r.method for r in apiserver.requests if "/secrets" in r.path].count("POST") == 1
    out, err = capfd.readouterr()
    other_body = other_key.decode().splitlines()[1]
    assert "CA root created in the cluster" in out + err  # logged ...
    assert key_body not in out + err and other_body not in out + err  # ... without a key


async def test_watch_installs_a_rotated_root(apiserver: KubeApiServer, kube: KubeClient) -> None:
    ca = _ca()
    cluster = ClusterCA(kube, ca, namespace=NS)
    await cluster.load()
    changed = asyncio.Event()
    ca.on_change(changed.set)
    other = _ca()
    stored = _secret(apiserver, "istio-ca-secret")
    assert stored is not None
    cert, key = new_root_material("cluster.local")
    stored["data"]["ca-cert.pem"] = base64.b64encode(cert).decode()
    stored["data"]["ca-key.pem"] = base64.b64encode(key).decode()
    apiserver.put(stored)
    task = asyncio.create_task(cluster.watch(interval=0.05))
    try:
        await asyncio.wait_for(changed.wait(), 10)
    finally:
        task.cancel()
    assert ca.root_pem() == cert != other.root_pem()


async def test_cacerts_in_cert_manager_form(
    apiserver: KubeApiServer, kube: KubeClient, tmp_path: Path
) -> None:
    """kubernetes.io/tls keys: tls.crt (the CA and its chain), tls.key, ca.crt (the root)."""
    root, intermediate = write_plugin_dir(tmp_path / "cacerts")
    apiserver.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": _data(
                {
                    "tls.crt": intermediate.pem + root.pem,
                    "tls.key": intermediate.key_pem,
                    "ca.crt": root.pem,
                }
            ),
        }
    )
    ca = _ca()
    assert await ClusterCA(kube, ca, namespace=NS).load() == f"{NS}/cacerts"
    assert ca.root_pem() == root.pem
    assert apiserver.get("v1", "Secret", NS, "istio-ca-secret") is None  # no second root
