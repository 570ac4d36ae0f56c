"""The informer against the test API server (real HTTP, chunked watches, 410s, outages),
through the real kubernetes_asyncio-backed client."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from istiolite import metrics
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import Informer, InformerOptions
from istiolite.sources.kube.resources import WATCHED
from tests.support.kube_apiserver import KubeApiServer
from tests.support.objects import service
from tests.support.wait import wait_until
from tests.unit.sources.kube.conftest import Recorder, running

SERVICES = WATCHED["Service"].resource()
FAST = InformerOptions(backoff_base=0.05, backoff_max=0.5)


def _informer(kube: KubeClient, recorder: Recorder, **options: Any) -> Informer:
    opts = dataclasses.replace(FAST, **options)
    return Informer(kube, SERVICES, recorder, opts)


def _requests(server: KubeApiServer, *, watch: bool) -> list[Any]:
    return [
        r
        for r in list(server.requests)
        if r.path == SERVICES.path and (r.query.get("watch") == "true") == watch
    ]


async def test_paged_list_then_watch_from_its_resource_version(
    server: KubeApiServer, kube: KubeClient
) -> None:
    for i in range(7):
        server.put(service(f"s{i}"))
    recorder = Recorder()
    informer = _informer(kube, recorder, page_size=3)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set, what="synced")
        # The whole list is one batch: consumers see the complete set at once.
        assert len(recorder.batches) == 1 and recorder.batches[0].relist
        assert recorder.names() == {f"s{i}" for i in range(7)}
        # Built-in list items come without kind/apiVersion; the informer fills them in.
        assert {o["kind"] for o in recorder.objects.values()} == {"Service"}
        assert {o["apiVersion"] for o in recorder.objects.values()} == {"v1"}
        server.put(service("late"))
        await wait_until(lambda: "late" in recorder.names(), what="watched add")
        server.delete("v1", "Service", "default", "s0")
        await wait_until(lambda: "s0" not in recorder.names(), what="watched delete")
    pages = _requests(server, watch=False)
    assert [p.query.get("limit") for p in pages] == ["3", "3", "3"]
    assert [bool(p.query.get("continue")) for p in pages] == [False, True, True]
    watch = _requests(server, watch=True)[-1]
    assert watch.query["allowWatchBookmarks"] == "true"
    assert watch.headers.get("Accept-Encoding") == "gzip"


async def test_bookmarks_move_the_resume_point_without_handing_anything_on(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.put(service("a"))
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        listed_at = informer.resource_version
        # Writes to another resource move the server's resourceVersion; bookmarks carry it.
        server.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
        await wait_until(lambda: informer.resource_version == server.resource_version)
        assert int(informer.resource_version) > int(listed_at)
        assert len(recorder.batches) == 1
        # The next watch resumes from the bookmark, not from the list.
        watches = len(_requests(server, watch=True))
        server.end_watches()
        await wait_until(lambda: len(_requests(server, watch=True)) > watches)
        assert _requests(server, watch=True)[-1].query["resourceVersion"] == (
            informer.resource_version
        )
        assert informer.resource_version == server.resource_version
        assert informer.lists == 1


async def test_gone_relists_and_hands_on_only_the_difference(
    server: KubeApiServer, kube: KubeClient
) -> None:
    for name in ("a", "b", "c"):
        server.put(service(name))
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        # While istiolite cannot see: b is deleted, c changed, d added, then history is lost.
        server.go_down()
        server.delete("v1", "Service", "default", "b")
        server.put(service("c", labels={"changed": "yes"}))
        server.put(service("d"))
        server.compact()
        server.come_up()
        await wait_until(lambda: informer.lists == 2, what="relist after 410")
        diff = recorder.batches[-1]
        assert diff.relist
        assert diff.deletes == {("default", "b")}
        # Unchanged a is not handed on again; c and d are, together with b's delete.
        assert set(diff.upserts) == {("default", "c"), ("default", "d")}
        assert recorder.names() == {"a", "c", "d"}


async def test_unchanged_relist_hands_on_nothing(server: KubeApiServer, kube: KubeClient) -> None:
    server.put(service("a"))
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        server.go_down()
        server.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
        server.compact()
        server.come_up()
        await wait_until(lambda: informer.lists == 2, what="relist after 410")
        assert len(recorder.batches) == 1


@pytest.mark.parametrize("server_options", [{"watch_timeout": 0.3}])
async def test_server_watch_timeout_rewatches_without_relisting(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.put(service("a"))
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(lambda: informer.watches >= 4, what="several watches")
        server.put(service("b"))
        await wait_until(lambda: "b" in recorder.names())
    assert informer.lists == 1
    assert len(_requests(server, watch=False)) == 1


async def test_events_split_across_chunks_arrive_whole(
    server: KubeApiServer, kube: KubeClient
) -> None:
    recorder = Recorder()
    informer = _informer(kube, recorder)
    big = "x" * 300_000  # many chunks for one event
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        for i in range(20):
            obj = service(f"s{i}")
            obj["metadata"]["annotations"] = {"note": big if i == 7 else str(i)}
            server.put(obj)
        await wait_until(lambda: len(recorder.objects) == 20)
    assert recorder.objects[("default", "s7")]["metadata"]["annotations"]["note"] == big
    assert recorder.objects[("default", "s19")]["metadata"]["annotations"]["note"] == "19"


@pytest.mark.parametrize("server_options", [{"streaming_lists": True, "bookmark_interval": 0.2}])
async def test_streaming_list_when_the_server_offers_it(
    server: KubeApiServer, kube: KubeClient
) -> None:
    for name in ("a", "b"):
        server.put(service(name))
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        assert len(recorder.batches) == 1 and recorder.batches[0].relist
        assert recorder.names() == {"a", "b"}
        server.put(service("c"))
        await wait_until(lambda: "c" in recorder.names())
    assert informer.lists == 0 and not _requests(server, watch=False)
    first = _requests(server, watch=True)[0]
    assert first.query["sendInitialEvents"] == "true"
    assert first.query["resourceVersionMatch"] == "NotOlderThan"


async def test_streaming_list_refused_falls_back_to_list_and_watch(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.put(service("a"))
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        server.end_watches()  # the next watch must not ask for a streaming list again
        await wait_until(lambda: len(_requests(server, watch=True)) >= 3)
    watches = _requests(server, watch=True)
    assert watches[0].query.get("sendInitialEvents") == "true"
    assert all("sendInitialEvents" not in w.query for w in watches[1:])
    assert informer.lists == 1 and recorder.names() == {"a"}


async def test_outage_is_retried_with_backoff_and_resumes_without_relist(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.put(service("a"))
    recorder = Recorder()
    informer = _informer(kube, recorder, backoff_base=0.1, backoff_max=5.0)
    failures = metrics.KUBE_WATCH_FAILURES.value("Service")
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        server.go_down()
        server.put(service("during"))
        await wait_until(lambda: metrics.KUBE_WATCH_FAILURES.value("Service") > failures + 2)
        # Backoff grows: a busy retry loop would fail hundreds of times in this second.
        before = metrics.KUBE_WATCH_FAILURES.value("Service")
        await asyncio.sleep(1.0)
        assert metrics.KUBE_WATCH_FAILURES.value("Service") - before <= 4
        server.come_up()
        await wait_until(lambda: "during" in recorder.names(), timeout=20, what="resumed")
    assert informer.lists == 1  # history was kept: resumed from the last resourceVersion


@pytest.mark.parametrize("server_options", [{"watch_timeout": 60.0, "bookmark_interval": 30.0}])
async def test_silent_connection_is_noticed_by_the_read_timeout(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.put(service("a"))
    recorder = Recorder()
    informer = _informer(kube, recorder, read_timeout=0.3)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        # No event and no bookmark for 30 s: only the read timeout can end these watches.
        await wait_until(lambda: informer.watches >= 3, what="re-watch after silence")
        server.put(service("b"))
        await wait_until(lambda: "b" in recorder.names())
    assert informer.lists == 1


async def test_event_larger_than_the_bound_is_refused(
    server: KubeApiServer, kube: KubeClient
) -> None:
    recorder = Recorder()
    informer = _informer(kube, recorder, max_event_bytes=64 * 1024)
    failures = metrics.KUBE_WATCH_FAILURES.value("Service")
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        huge = service("huge")
        huge["metadata"]["annotations"] = {"note": "x" * 200_000}
        server.put(huge)
        await wait_until(lambda: metrics.KUBE_WATCH_FAILURES.value("Service") > failures)
        assert "huge" not in recorder.names()


async def test_list_larger_than_the_object_bound_never_syncs(
    server: KubeApiServer, kube: KubeClient
) -> None:
    for i in range(5):
        server.put(service(f"s{i}"))
    recorder = Recorder()
    informer = _informer(kube, recorder, max_objects=3, page_size=2)
    failures = metrics.KUBE_WATCH_FAILURES.value("Service")
    async with running(informer.run()):
        await wait_until(lambda: metrics.KUBE_WATCH_FAILURES.value("Service") > failures)
        assert not informer.synced.is_set() and not recorder.batches


async def test_namespace_selection_drops_other_namespaces(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    server.put(service("a", "shop"))
    server.put(service("b", "default"))
    recorder = Recorder()
    informer = _informer(kube, recorder, namespaces=frozenset({"shop"}))
    async with running(informer.run()):
        await wait_until(informer.synced.is_set)
        server.put(service("c", "default"))
        server.put(service("d", "shop"))
        await wait_until(lambda: "d" in recorder.names())
    assert set(recorder.objects) == {("shop", "a"), ("shop", "d")}


async def test_large_gzipped_list_pages_arrive_whole(
    server: KubeApiServer, kube: KubeClient
) -> None:
    # ~600 KiB per page: gzip'd by the server (over 128 KiB) and read over many TCP reads.
    for i in range(600):
        obj = service(f"s{i}")
        obj["metadata"]["annotations"] = {"note": f"{i:04d}" * 250}
        server.put(obj)
    recorder = Recorder()
    informer = _informer(kube, recorder)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set, what="synced")
    assert len(recorder.objects) == 600
    assert recorder.objects[("default", "s599")]["metadata"]["annotations"]["note"] == "0599" * 250
    assert _requests(server, watch=False)[0].headers.get("Accept-Encoding") == "gzip"


@pytest.mark.parametrize("server_options", [{"istio_crds": False, "bookmark_interval": 0.2}])
async def test_resource_not_served_is_empty_and_synced_until_it_appears(
    server: KubeApiServer, kube: KubeClient
) -> None:
    recorder = Recorder()
    resource = WATCHED["VirtualService"].resource()
    informer = Informer(kube, resource, recorder, FAST)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set, what="synced while not served")
        assert not recorder.objects
        server.install_crd("networking.istio.io", "VirtualService", "virtualservices", ("v1",))
        server.put(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"hosts": ["web"]},
            }
        )
        await wait_until(lambda: "web" in recorder.names(), what="listed once served")


async def test_expired_continue_token_restarts_the_list(
    server: KubeApiServer, kube: KubeClient
) -> None:
    for i in range(5):
        server.put(service(f"s{i}"))
    expired_once: list[bool] = []

    async def compact_before_second_page(request: Any) -> Any:
        # History lost between two pages of the list: its continue token is now too old.
        if request.query.get("continue") and not expired_once:
            expired_once.append(True)
            server.compact()
        return await server._api.handle(request)

    server.add_route("GET", SERVICES.path, compact_before_second_page)
    recorder = Recorder()
    informer = _informer(kube, recorder, page_size=2)
    async with running(informer.run()):
        await wait_until(informer.synced.is_set, what="synced after the restart")
    assert recorder.names() == {f"s{i}" for i in range(5)}
    assert len(recorder.batches) == 1  # the half-list of before the 410 was never handed on
    pages = _requests(server, watch=False)
    # page 1, page 2 (410), then page 1, 2, 3 again.
    assert [bool(p.query.get("continue")) for p in pages] == [False, True, False, True, True]
