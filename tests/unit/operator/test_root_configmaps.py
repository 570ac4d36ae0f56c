"""The root ConfigMap in every namespace, through the leader writers' own informers against
the test API server: created, recreated, corrected, rewritten on a root change, never in the
excluded namespaces, and left alone when already right."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from istiolite.operator.root_configmaps import RootCertPublisher
from istiolite.operator.writers import LeaderWriters
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from tests.support.kube_apiserver import KubeApiServer

NAME = "istio-ca-root-cert"


class Bundle:
    def __init__(self) -> None:
        self.pem = b"-----BEGIN CERTIFICATE-----\nroot one\n-----END CERTIFICATE-----\n"

    def __call__(self) -> bytes:
        return self.pem


async def _until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def _cm(apiserver: KubeApiServer, namespace: str) -> dict[str, Any] | None:
    return apiserver.get("v1", "ConfigMap", namespace, NAME)


def _ns(apiserver: KubeApiServer, name: str) -> None:
    apiserver.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@pytest.fixture
def bundle() -> Bundle:
    return Bundle()


@pytest.fixture
async def writers(kube: KubeClient, bundle: Bundle) -> AsyncIterator[LeaderWriters]:
    w = LeaderWriters(kube, bundle, options=InformerOptions(streaming_list=False))
    w.start()
    try:
        yield w
    finally:
        await w.close()


def _right(apiserver: KubeApiServer, namespace: str, bundle: Bundle) -> bool:
    cm = _cm(apiserver, namespace)
    return (
        cm is not None
        and cm.get("data") == {"root-cert.pem": bundle.pem.decode()}
        and cm["metadata"].get("labels", {}).get("istio.io/config") == "true"
    )


async def test_every_namespace_but_the_excluded_gets_the_root(
    apiserver: KubeApiServer, writers: LeaderWriters, bundle: Bundle
) -> None:
    for ns in ("default", "kube-system", "istio-system"):
        await _until(lambda ns=ns: _right(apiserver, ns, bundle), f"the ConfigMap is in {ns}")
    _ns(apiserver, "local-path-storage")
    _ns(apiserver, "shop")
    await _until(lambda: _right(apiserver, "shop", bundle), "a new namespace has it")
    for excluded in ("kube-public", "kube-node-lease", "local-path-storage"):
        assert _cm(apiserver, excluded) is None


async def test_deleted_is_recreated_and_edited_is_corrected(
    apiserver: KubeApiServer, writers: LeaderWriters, bundle: Bundle
) -> None:
    await _until(lambda: _right(apiserver, "default", bundle), "the ConfigMap is there")
    apiserver.delete("v1", "ConfigMap", "default", NAME)
    await _until(lambda: _right(apiserver, "default", bundle), "it is recreated")
    edited = _cm(apiserver, "default")
    assert edited is not None
    edited["data"] = {"root-cert.pem": "tampered", "extra": "x"}
    edited["metadata"]["labels"] = {}
    apiserver.put(edited)
    await _until(lambda: _right(apiserver, "default", bundle), "it is corrected")


async def test_a_root_change_rewrites_every_configmap(
    apiserver: KubeApiServer, writers: LeaderWriters, bundle: Bundle
) -> None:
    for ns in ("default", "istio-system"):
        await _until(lambda ns=ns: _right(apiserver, ns, bundle), f"the ConfigMap is in {ns}")
    bundle.pem = b"-----BEGIN CERTIFICATE-----\nroot two\n-----END CERTIFICATE-----\n"
    writers.root_changed()
    for ns in ("default", "istio-system"):
        await _until(lambda ns=ns: _right(apiserver, ns, bundle), f"{ns} has the new root")


async def test_writes_only_what_differs(
    apiserver: KubeApiServer, kube: KubeClient, bundle: Bundle
) -> None:
    publisher = RootCertPublisher(kube, bundle)
    publisher.namespaces_synced(["default"])
    await publisher.reconcile("default")
    await publisher.reconcile("default")  # already right: read, nothing written
    assert publisher.writes == 1
    rv = _cm(apiserver, "default")["metadata"]["resourceVersion"]  # type: ignore[index]
    fresh = RootCertPublisher(kube, bundle)
    fresh.namespaces = {"default"}
    fresh.configmap_changed("default", _cm(apiserver, "default"))  # our own write's event
    assert len(fresh.queue) == 0
    fresh.configmap_changed("default", None)  # a deletion is work
    assert len(fresh.queue) == 1
    assert _cm(apiserver, "default")["metadata"]["resourceVersion"] == rv  # type: ignore[index]


async def test_watch_namespaces_limits_where_it_writes(
    apiserver: KubeApiServer, kube: KubeClient, bundle: Bundle
) -> None:
    writers = LeaderWriters(
        kube,
        bundle,
        namespaces=frozenset({"istio-system"}),
        options=InformerOptions(streaming_list=False),
    )
    writers.start()
    try:
        await _until(lambda: _right(apiserver, "istio-system", bundle), "istio-system has it")
        _ns(apiserver, "shop")
        await asyncio.sleep(0.3)
    finally:
        await writers.close()
    assert _cm(apiserver, "default") is None and _cm(apiserver, "shop") is None


async def test_stopped_writers_write_nothing(
    apiserver: KubeApiServer, kube: KubeClient, bundle: Bundle
) -> None:
    writers = LeaderWriters(kube, bundle, options=InformerOptions(streaming_list=False))
    writers.start()
    await _until(lambda: _right(apiserver, "default", bundle), "the ConfigMap is there")
    await writers.close()
    apiserver.delete("v1", "ConfigMap", "default", NAME)
    _ns(apiserver, "shop")
    await asyncio.sleep(0.3)
    assert _cm(apiserver, "default") is None and _cm(apiserver, "shop") is None
