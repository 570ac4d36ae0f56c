"""KubeSource: the cluster's objects into the config store, through the test API server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from istiolite import metrics, type_urls
from istiolite.model.meta import ObjectKey
from istiolite.model.store import ChangeSet, ConfigStore
from istiolite.networking.generator import ConfigGenerator
from istiolite.push.cache import ResourceCache
from istiolite.push.pusher import Pusher
from istiolite.push.request import PushRequest
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from istiolite.sources.kube.resources import CRDS
from istiolite.sources.kube.source import KubeSource
from tests.support import certs
from tests.support.kube_apiserver import KubeApiServer
from tests.support.kube_resource_api import status_response
from tests.support.objects import DOMAIN, endpoint_slice, pod, service
from tests.support.pushes import sidecar_proxy
from tests.support.wait import wait_until
from tests.unit.sources.kube.conftest import running

FAST = InformerOptions(backoff_base=0.05, backoff_max=0.5)
VS_KEY = ObjectKey("VirtualService", "default", "web")


def _vs(name: str = "web", *, port: int = 80, generation_note: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hosts": ["web"],
            "http": [{"route": [{"destination": {"host": "web", "port": {"number": port}}}]}],
        },
    }


class Changes:
    """The store's change sets, as the debouncer would see them."""

    def __init__(self, store: ConfigStore) -> None:
        self.sets: list[ChangeSet] = []
        store.subscribe(self.sets.append)

    def keys(self) -> set[ObjectKey]:
        return {k for c in self.sets for k in c.keys}


@pytest.fixture
def store() -> ConfigStore:
    return ConfigStore()


@pytest.fixture
async def source(kube: KubeClient, store: ConfigStore) -> AsyncIterator[KubeSource]:
    kube_source = KubeSource(kube, store, options=FAST)
    async with running(kube_source.run()):
        yield kube_source


async def test_cluster_objects_are_parsed_into_the_store(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    server.put(service("web"))
    server.put(endpoint_slice("web", endpoints=["10.1.0.1"]))
    server.put(pod("web-1", ip="10.1.0.1", labels={"app": "web"}))
    server.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    server.put(_vs())
    await asyncio.wait_for(source.wait_synced(), 20)
    snapshot = store.snapshot()
    assert ObjectKey("Service", "default", "web") in snapshot
    assert ObjectKey("EndpointSlice", "default", "web-slice") in snapshot
    assert ObjectKey("Pod", "default", "web-1") in snapshot
    assert ObjectKey("Node", "", "n1") in snapshot
    assert ObjectKey("Namespace", "", "default") in snapshot
    assert VS_KEY in snapshot
    result = source.object_results()[VS_KEY]
    assert result.valid and result.api_version == "networking.istio.io/v1"
    assert result.generation == 1


async def test_invalid_object_is_named_with_its_field_and_dropped(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    server.put(_vs())
    await asyncio.wait_for(source.wait_synced(), 20)
    seen: list[frozenset[ObjectKey]] = []
    source.subscribe_results(seen.append)
    rejects = metrics.INVALID_CONFIG.value("invalid object rejected")
    with capture_logs() as logs:
        server.put(_vs(port=70000))
        await wait_until(lambda: VS_KEY not in store.snapshot(), what="invalid VS dropped")
    (entry,) = [e for e in logs if e["event"] == "invalid object rejected"]
    assert entry["object"] == "VirtualService default/web"
    assert entry["field"] == "spec.http[0].route[0].destination.port.number"
    assert "65535" in entry["message"]
    assert metrics.INVALID_CONFIG.value("invalid object rejected") == rejects + 1
    result = source.object_results()[VS_KEY]
    assert result.errors == [(entry["field"], entry["message"])]
    assert result.generation == 2
    assert seen and VS_KEY in seen[-1]
    assert source.errors[0]["object"] == "VirtualService default/web"
    # Fixed: back in the store, the error gone.
    server.put(_vs(port=8080))
    await wait_until(lambda: VS_KEY in store.snapshot())
    assert source.object_results()[VS_KEY].valid and not source.errors


async def test_status_writes_and_unchanged_relists_change_nothing(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    server.put(service("web"))
    server.put(_vs())
    await asyncio.wait_for(source.wait_synced(), 20)
    changes = Changes(store)
    # The leader's status write: a new resourceVersion, the same config.
    stored = server.get("networking.istio.io/v1", "VirtualService", "default", "web")
    assert stored is not None
    stored["status"] = {"conditions": [{"type": "Reconciled", "status": "True"}]}
    server.put(stored)
    # A 410 and relist with nothing changed in between.
    vs_informer = source.informers["VirtualService"]
    server.go_down()
    server.compact()
    server.come_up()
    await wait_until(lambda: vs_informer.lists >= 2, timeout=20, what="relist")
    await wait_until(lambda: source.informers["Service"].lists >= 2, timeout=20)
    assert changes.sets == []


async def test_relist_after_gone_is_one_change_with_the_deletes(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    server.put(service("web"))
    server.put(endpoint_slice("web", name="web-a", endpoints=["10.1.0.1"]))
    server.put(endpoint_slice("web", name="web-b", endpoints=["10.1.0.2"]))
    await asyncio.wait_for(source.wait_synced(), 20)
    changes = Changes(store)
    server.go_down()
    server.delete("discovery.k8s.io/v1", "EndpointSlice", "default", "web-a")
    server.put(endpoint_slice("web", name="web-c", endpoints=["10.1.0.3"]))
    server.compact()
    server.come_up()
    await wait_until(lambda: changes.sets, timeout=20, what="relist diff")
    (change,) = changes.sets
    assert change.keys == {
        ObjectKey("EndpointSlice", "default", "web-a"),
        ObjectKey("EndpointSlice", "default", "web-c"),
    }


@pytest.mark.parametrize("server_options", [{"istio_crds": False, "bookmark_interval": 0.2}])
async def test_crd_installed_later_is_picked_up_and_removal_drops_its_objects(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    # Not installed: not an error, and not a reason to stay unready.
    await asyncio.wait_for(source.wait_synced(), 20)
    assert "VirtualService" not in source.informers
    server.install_crd("networking.istio.io", "VirtualService", "virtualservices", ("v1beta1",))
    server.put({**_vs(), "apiVersion": "networking.istio.io/v1beta1"})
    await wait_until(lambda: VS_KEY in store.snapshot(), what="VS after its CRD")
    assert source.informers["VirtualService"].resource.version == "v1beta1"
    server.uninstall_crd("networking.istio.io", "virtualservices")
    await wait_until(lambda: VS_KEY not in store.snapshot(), what="VS gone with its CRD")
    assert VS_KEY not in source.object_results()


async def test_only_tls_secrets_are_read_and_their_keys_never_logged(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    pair = certs.CertificateAuthority().issue("web.example.com", dns=("web.example.com",))
    cert_pem, key_pem = pair.cert_pem, pair.key_pem
    key_b64 = base64.b64encode(key_pem).decode()
    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "web-cert", "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": key_b64},
    }
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "default"},
        "type": "kubernetes.io/service-account-token",
        "data": {"token": base64.b64encode(b"secret-token").decode()},
    }
    broken = dict(tls, metadata={"name": "broken", "namespace": "default"})
    broken["data"] = {"tls.crt": "!!", "tls.key": key_b64}
    with capture_logs() as logs:
        server.put(tls)
        server.put(token)
        server.put(broken)
        await asyncio.wait_for(source.wait_synced(), 20)
        await wait_until(lambda: ObjectKey("Secret", "default", "web-cert") in store.snapshot())
    assert ObjectKey("Secret", "default", "token") not in store.snapshot()
    text = repr(logs) + repr(source.errors) + repr(store.snapshot())
    assert key_b64 not in text and key_pem.decode().splitlines()[1] not in text


async def test_endpoint_slice_change_takes_the_eds_fast_path(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    server.put(service("web"))
    server.put(endpoint_slice("web", endpoints=["10.1.0.1"]))
    server.put(pod("web-1", ip="10.1.0.1", labels={"app": "web", "version": "v1"}))
    await asyncio.wait_for(source.wait_synced(), 20)
    requests: list[PushRequest] = []
    cache = ResourceCache()
    pusher = Pusher(store, cache, domain=DOMAIN, publish=lambda _ctx, req: requests.append(req))
    pusher.start()
    generator = ConfigGenerator(cache)
    for type_url in type_urls.PUSH_ORDER:  # a connected sidecar, served every type
        generator(pusher.context, sidecar_proxy(), type_url)
    changes = Changes(store)
    server.put(endpoint_slice("web", endpoints=["10.1.0.1", "10.1.0.2"]))
    await wait_until(lambda: changes.sets)
    eds = pusher.push([(0.0, c) for c in changes.sets])
    assert not eds.full and eds.eds_clusters
    # A Pod label change (subset membership) is EDS-only too, full only for that pod's proxy.
    changes.sets.clear()
    server.put(pod("web-1", ip="10.1.0.1", labels={"app": "web", "version": "v2"}))
    await wait_until(lambda: changes.sets)
    labels = pusher.push([(0.0, c) for c in changes.sets])
    assert not labels.full and labels.full_for == {"default/web-1"}
    changes.sets.clear()
    server.put(service("web", ports=[{"name": "http", "port": 81, "targetPort": 81}]))
    await wait_until(lambda: changes.sets)
    assert pusher.push([(0.0, c) for c in changes.sets]).full


@pytest.mark.parametrize("namespaces", [frozenset({"shop"})])
async def test_watch_namespaces_bound_what_is_read(
    server: KubeApiServer, kube: KubeClient, store: ConfigStore, namespaces: frozenset[str]
) -> None:
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    server.put(service("a", "shop"))
    server.put(service("b", "default"))
    options = dataclasses.replace(FAST, namespaces=namespaces)
    kube_source = KubeSource(kube, store, options=options)
    async with running(kube_source.run()):
        await asyncio.wait_for(kube_source.wait_synced(), 20)
    keys = set(store.snapshot())
    assert ObjectKey("Service", "shop", "a") in keys
    assert ObjectKey("Service", "default", "b") not in keys
    assert ObjectKey("Namespace", "", "shop") in keys
    assert ObjectKey("Namespace", "", "default") not in keys


async def test_forbidden_crd_watch_still_reads_the_istio_kinds(
    server: KubeApiServer, kube: KubeClient, store: ConfigStore
) -> None:
    async def forbidden(_request: Any) -> Any:
        return status_response(403, "Forbidden", "customresourcedefinitions is forbidden")

    server.add_route("GET", CRDS.path, forbidden)
    server.put(_vs())
    kube_source = KubeSource(kube, store, options=FAST)
    async with running(kube_source.run()):
        await asyncio.wait_for(kube_source.wait_synced(), 20)
        await wait_until(lambda: VS_KEY in store.snapshot(), what="VS read without the CRD watch")


def _envoy_filter(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"configPatches": []},
    }


async def test_istio_kinds_not_translated_are_counted_shown_and_kept_out_of_the_store(
    server: KubeApiServer, store: ConfigStore, source: KubeSource
) -> None:
    """An EnvoyFilter or Telemetry in the cluster has no effect: reported once per object (log,
    metric, /debug/configz's list) from when its CRD is installed until the object goes."""
    await asyncio.wait_for(source.wait_synced(), 20)
    assert source.unsupported == []  # CRDs not installed: nothing watched, nothing to report
    filters = metrics.UNSUPPORTED_OBJECTS.value("EnvoyFilter")
    telemetries = metrics.UNSUPPORTED_OBJECTS.value("Telemetry")
    server.install_crd("networking.istio.io", "EnvoyFilter", "envoyfilters", ("v1alpha3",))
    server.install_crd("telemetry.istio.io", "Telemetry", "telemetries", ("v1",))
    with capture_logs() as logs:
        server.put(_envoy_filter("lua"))
        server.put(
            {
                "apiVersion": "telemetry.istio.io/v1",
                "kind": "Telemetry",
                "metadata": {"name": "mesh-default", "namespace": "istio-system"},
                "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]},
            }
        )
        await wait_until(lambda: len(source.unsupported) == 2, what="both reported")
        # A change of a reported object is not a second report.
        server.put({**_envoy_filter("lua"), "spec": {"configPatches": [], "priority": 1}})
        server.put(_envoy_filter("second"))
        await wait_until(lambda: len(source.unsupported) == 3, what="the second filter")
    assert [(u["object"], u["kind"]) for u in source.unsupported] == [
        ("EnvoyFilter shop/lua", "EnvoyFilter"),
        ("EnvoyFilter shop/second", "EnvoyFilter"),
        ("Telemetry istio-system/mesh-default", "Telemetry"),
    ]
    assert source.unsupported[0]["message"].startswith("not supported by istiolite: EnvoyFilter")
    assert source.unsupported[0]["source"] == "kubernetes"
    assert metrics.UNSUPPORTED_OBJECTS.value("EnvoyFilter") == filters + 2
    assert metrics.UNSUPPORTED_OBJECTS.value("Telemetry") == telemetries + 1
    warned = [e for e in logs if e["event"] == "object of unsupported kind has no effect"]
    assert sorted(e["object"] for e in warned) == [
        "EnvoyFilter shop/lua",
        "EnvoyFilter shop/second",
        "Telemetry istio-system/mesh-default",
    ]
    assert not any(k.kind in ("EnvoyFilter", "Telemetry") for k in store.snapshot())

    server.delete("networking.istio.io/v1alpha3", "EnvoyFilter", "shop", "lua")
    await wait_until(lambda: len(source.unsupported) == 2, what="the deleted filter dropped")
    server.uninstall_crd("telemetry.istio.io", "telemetries")
    await wait_until(
        lambda: [u["object"] for u in source.unsupported] == ["EnvoyFilter shop/second"],
        what="Telemetry dropped with its CRD",
    )


async def test_a_reported_only_kind_that_cannot_be_listed_does_not_hold_back_readiness(
    server: KubeApiServer, kube: KubeClient, store: ConfigStore
) -> None:
    async def forbidden(_request: Any) -> Any:
        return status_response(403, "Forbidden", "envoyfilters.networking.istio.io is forbidden")

    server.install_crd("networking.istio.io", "EnvoyFilter", "envoyfilters", ("v1alpha3",))
    server.add_route("GET", "/apis/networking.istio.io/v1alpha3/envoyfilters", forbidden)
    server.put(_vs())
    kube_source = KubeSource(kube, store, options=FAST)
    async with running(kube_source.run()):
        await asyncio.wait_for(kube_source.wait_synced(), 20)
        await wait_until(lambda: "EnvoyFilter" in kube_source.informers, what="filters watched")
        assert kube_source.synced
        assert VS_KEY in store.snapshot()
        assert not kube_source.informers["EnvoyFilter"].synced.is_set()
