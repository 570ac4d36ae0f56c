"""The Kubernetes API test server is only worth testing against if it is as strict as a real one:
these pin down what it refuses and how its list/watch protocol behaves, driven by the real
kubernetes_asyncio client (and raw HTTP where the client would hide the wire format)."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch

from tests.support.kube_apiserver import KubeApiServer

pytestmark = pytest.mark.asyncio

VS = ("networking.istio.io", "v1", "virtualservices")


def _service(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"ports": [{"port": 80}]},
    }


def _vs(name: str, host: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [host]},
    }


@pytest.fixture
def server() -> Any:
    with KubeApiServer(watch_timeout=5.0, bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
async def api(server: KubeApiServer, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")),
        client_configuration=configuration,
    )
    async with client.ApiClient(configuration) as api_client:
        yield api_client


async def _raw(
    server: KubeApiServer, method: str, path: str, *, body: bytes = b"", headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes, list[bytes]]:
    """(status, headers, body, chunks as received) for one raw request."""
    ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
    all_headers = {"Authorization": f"Bearer {server.client_token}", **headers}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(
            method, server.url + path, data=body, headers=all_headers, ssl=ctx
        ) as response,
    ):
        chunks = []
        async for data, _end in response.content.iter_chunks():
            chunks.append(data)
        return response.status, dict(response.headers), b"".join(chunks), chunks


async def test_list_pages_with_continue_and_builtin_items_carry_no_kind(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    for i in range(5):
        server.put(_service(f"s{i}"))
    v1 = client.CoreV1Api(api)
    first = json.loads(
        await (await v1.list_namespaced_service("default", limit=2, _preload_content=False)).read()
    )
    assert [i["metadata"]["name"] for i in first["items"]] == ["s0", "s1"]
    assert "kind" not in first["items"][0] and first["metadata"]["remainingItemCount"] == 3
    names = []
    token = first["metadata"]["continue"]
    while token:
        page = json.loads(
            await (
                await v1.list_namespaced_service(
                    "default", limit=2, _continue=token, _preload_content=False
                )
            ).read()
        )
        names += [i["metadata"]["name"] for i in page["items"]]
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        token = page["metadata"].get("continue")
    assert names == ["s2", "s3", "s4"]
    server.compact()
    with pytest.raises(client.ApiException) as err:
        await v1.list_namespaced_service(
            "default", limit=2, _continue=first["metadata"]["continue"]
        )
    assert err.value.status == 410
    # resourceVersion=0 is served from the cache, which ignores limit.
    whole = await v1.list_namespaced_service("default", limit=2, resource_version="0")
    assert len(whole.items) == 5 and not whole.metadata._continue


async def test_custom_resource_items_carry_kind_and_generation_follows_spec(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    objects = client.CustomObjectsApi(api)
    created = await objects.create_namespaced_custom_object(*VS[:2], "default", VS[2], _vs("r"))
    assert created["metadata"]["generation"] == 1
    listed = await objects.list_namespaced_custom_object(*VS[:2], "default", VS[2])
    assert listed["items"][0]["kind"] == "VirtualService"
    status = await objects.patch_namespaced_custom_object_status(
        *VS[:2], "default", VS[2], "r", {"status": {"observedGeneration": 1}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    assert status["metadata"]["generation"] == 1  # status does not bump generation
    body = _vs("r", host="b")
    body["metadata"]["resourceVersion"] = status["metadata"]["resourceVersion"]
    body["status"] = {"ignored": True}
    replaced = await objects.replace_namespaced_custom_object(*VS[:2], "default", VS[2], "r", body)
    assert replaced["metadata"]["generation"] == 2
    assert replaced["status"] == {"observedGeneration": 1}  # the main resource ignores status


async def test_updates_need_the_current_resource_version(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    objects = client.CustomObjectsApi(api)
    first = await objects.create_namespaced_custom_object(*VS[:2], "default", VS[2], _vs("r"))
    with pytest.raises(client.ApiException) as err:
        await objects.replace_namespaced_custom_object(*VS[:2], "default", VS[2], "r", _vs("r"))
    assert err.value.status == 422
    server.put(_vs("r", host="elsewhere"))
    stale = _vs("r", host="c")
    stale["metadata"]["resourceVersion"] = first["metadata"]["resourceVersion"]
    with pytest.raises(client.ApiException) as err:
        await objects.replace_namespaced_custom_object(*VS[:2], "default", VS[2], "r", stale)
    assert err.value.status == 409
    with pytest.raises(client.ApiException) as err:
        await objects.create_namespaced_custom_object(*VS[:2], "default", VS[2], _vs("r"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body


async def test_refuses_what_a_real_server_refuses(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as err:
        await v1.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert err.value.status == 404 and "nowhere" in err.value.body
    with pytest.raises(client.ApiException) as err:
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "Upper_Case"}})
    assert err.value.status == 422
    path = "/api/v1/namespaces/default/configmaps"
    status, *_ = await _raw(server, "POST", path, body=b'{"metadata":{"name":"x"}}',
                            headers={"Content-Type": "text/plain"})  # fmt: skip
    assert status == 415
    objects = client.CustomObjectsApi(api)
    await objects.create_namespaced_custom_object(*VS[:2], "default", VS[2], _vs("r"))
    status, _, body, _ = await _raw(
        server,
        "PATCH",
        "/apis/networking.istio.io/v1/namespaces/default/virtualservices/r",
        body=b'{"spec":{"hosts":["b"]}}',
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert status == 415  # strategic merge exists only for built-in kinds
    apply_path = "/api/v1/namespaces/default/configmaps/applied"
    applied = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: b\n"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    status, *_ = await _raw(server, "PATCH", apply_path, body=applied, headers=headers)
    assert status == 422  # no fieldManager
    status, _, body, _ = await _raw(
        server,
        "PATCH",
        apply_path + "?fieldManager=t",
        body=applied + b"bogus: 1\n",
        headers=headers,
    )
    assert status == 400 and b"bogus" in body
    status, *_ = await _raw(server, "PATCH", apply_path + "?fieldManager=t", body=applied,
                            headers=headers)  # fmt: skip
    assert status == 201 and server.get("v1", "ConfigMap", "default", "applied") is not None


async def test_lease_times_must_be_microtime(server: KubeApiServer, api: client.ApiClient) -> None:
    coordination = client.CoordinationV1Api(api)
    lease = {
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "a", "renewTime": "2026-12-05T08:00:00Z"},
    }
    with pytest.raises(client.ApiException) as err:
        await coordination.create_namespaced_lease("istio-system", lease)
    assert err.value.status == 400 and "renewTime" in err.value.body
    lease["spec"]["renewTime"] = "2026-12-05T08:00:00.123456Z"
    await coordination.create_namespaced_lease("istio-system", lease)


async def test_watch_replays_from_a_version_and_turns_label_changes_into_add_and_delete(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    start = server.resource_version
    server.put(_service("in", app="x"))
    server.put(_service("out", app="y"))
    server.put(_service("out", app="x"))  # starts matching: ADDED
    server.put(_service("in", app="z"))  # stops matching: DELETED
    seen = []
    stream = watch.Watch().stream(
        client.CoreV1Api(api).list_namespaced_service,
        "default",
        resource_version=start,
        label_selector="app=x",
        timeout_seconds=1,
    )
    async for event in stream:
        seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
    assert seen == [("ADDED", "in"), ("ADDED", "out"), ("DELETED", "in")]


async def test_watch_chunks_do_not_follow_event_boundaries(server: KubeApiServer) -> None:
    start = server.resource_version
    for i in range(3):
        server.put(_service(f"s{i}"))
    _, _, body, chunks = await _raw(
        server,
        "GET",
        f"/api/v1/namespaces/default/services?watch=true&resourceVersion={start}&timeoutSeconds=1",
        headers={},
    )
    lines = body.decode().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"] * 3
    assert any(not c.endswith(b"\n") for c in chunks)


async def test_watch_bookmarks_and_server_side_end(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    stream = watch.Watch().stream(
        client.CoreV1Api(api).list_namespaced_service,
        "default",
        resource_version=server.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=60,  # the client re-watches by itself unless it was given a timeout
    )
    types = []
    async with asyncio.timeout(15):
        async for event in stream:
            types.append(event["type"])
            if len(types) == 2:
                server.end_watches()
    assert types[:2] == ["BOOKMARK", "BOOKMARK"]  # and the stream ended when the server said


async def test_streaming_list_only_when_offered() -> None:
    path = "/api/v1/namespaces/default/services?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"  # noqa: E501
    with KubeApiServer() as plain:
        status, *_ = await _raw(plain, "GET", path, headers={})
        assert status == 422
    with KubeApiServer(streaming_lists=True, bookmark_interval=5.0) as streaming:
        streaming.put(_service("s"))
        status, _, body, _ = await _raw(streaming, "GET", path, headers={})
        events = [json.loads(line) for line in body.decode().splitlines()]
        assert status == 200
        assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
        marker = events[1]["object"]["metadata"]["annotations"]
        assert marker == {"k8s.io/initial-events-end": "true"}


async def test_large_lists_are_gzipped_when_asked(server: KubeApiServer) -> None:
    for i in range(40):
        server.put({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": f"c{i}", "namespace": "default"},
                    "data": {"blob": "x" * 5000}})  # fmt: skip
    status, headers, body, _ = await _raw(
        server, "GET", "/api/v1/configmaps", headers={"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert len(json.loads(gzip.decompress(body))["items"]) == 40


async def test_crd_installed_later_appears_in_discovery_and_is_watched(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    objects = client.CustomObjectsApi(api)
    with pytest.raises(client.ApiException) as err:
        await objects.list_namespaced_custom_object("example.io", "v1", "default", "widgets")
    assert err.value.status == 404
    server.install_crd("example.io", "Widget", "widgets")
    groups = await client.ApisApi(api).get_api_versions()
    assert "example.io" in [g.name for g in groups.groups]
    server.put({"apiVersion": "example.io/v1", "kind": "Widget",
                "metadata": {"name": "w", "namespace": "default"}})  # fmt: skip
    assert len((await objects.list_namespaced_custom_object("example.io", "v1", "default",
                                                            "widgets"))["items"]) == 1  # fmt: skip
    server.uninstall_crd("example.io", "widgets")
    with pytest.raises(client.ApiException):
        await objects.list_namespaced_custom_object("example.io", "v1", "default", "widgets")


async def test_outage_drops_connections_and_keeps_state(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    server.put(_service("kept"))
    v1 = client.CoreV1Api(api)
    server.go_down()
    with pytest.raises((aiohttp.ClientError, OSError)):
        await v1.list_namespaced_service("default", _request_timeout=2)
    server.come_up()
    listed = await v1.list_namespaced_service("default")
    assert [s.metadata.name for s in listed.items] == ["kept"]


def _owned(kind: str, api_version: str, name: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "default",
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
    }


async def test_garbage_collection_of_owned_objects(
    server: KubeApiServer, api: client.ApiClient
) -> None:
    """As the cluster's garbage collector: deleting an owner deletes what it owns (and what
    those own), an object with another live owner stays, and propagationPolicy Orphan keeps
    the dependents."""
    owner = server.put(_service("owner"))
    other = server.put(_service("other"))
    dep = server.put(_owned("Deployment", "apps/v1", "child", owner))
    server.put(_owned("ServiceAccount", "v1", "grandchild", dep))
    shared = _owned("ConfigMap", "v1", "shared", owner)
    shared["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "Service", "name": "other", "uid": other["metadata"]["uid"]}
    )
    server.put(shared)
    core = client.CoreV1Api(api)
    await core.delete_namespaced_service("owner", "default")
    assert server.get("apps/v1", "Deployment", "default", "child") is None
    assert server.get("v1", "ServiceAccount", "default", "grandchild") is None
    assert server.get("v1", "ConfigMap", "default", "shared") is not None

    kept_owner = server.put(_service("kept"))
    server.put(_owned("Deployment", "apps/v1", "orphan", kept_owner))
    await core.delete_namespaced_service(
        "kept", "default", body=client.V1DeleteOptions(propagation_policy="Orphan")
    )
    assert server.get("apps/v1", "Deployment", "default", "orphan") is not None
    assert server.get("v1", "Service", "default", "kept") is None
