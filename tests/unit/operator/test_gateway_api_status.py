"""The leader's Gateway API status writer against the test API server (through the real
kubernetes_asyncio client): the computed status lands on /status, an unchanged status is not
written again, a status someone else changed is put back, and only istiolite's part is ever
written: another controller's parents entry stays, where it was, across our writes and even when
it lands between our read and our write (409, read again, merge again)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.operator.gateway_api_status import (
    MAX_ATTEMPTS,
    GatewayApiStatusWriter,
    StatusConflict,
)
from istiolite.push.context import PushContext
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.errors import Conflict
from istiolite.sources.kube.resources import WATCHED
from tests.support.kube_apiserver import KubeApiServer

GW = "gateway.networking.k8s.io/v1"
OBJECTS = f"""
apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: web}}
spec: {{clusterIP: 10.96.0.1, selector: {{app: hello}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: {GW}
kind: Gateway
metadata: {{name: edge, namespace: web, generation: 1}}
spec:
  gatewayClassName: istio
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: {GW}
kind: HTTPRoute
metadata: {{name: shop, namespace: web}}
spec:
  parentRefs: [{{name: edge}}]
  rules: [{{backendRefs: [{{name: missing, port: 80}}]}}]
"""


def _setup(apiserver: KubeApiServer, extra: str = "") -> PushContext:
    for name, watched in WATCHED.items():
        if watched.group == "gateway.networking.k8s.io":
            apiserver.install_crd(
                watched.group,
                watched.api_kind or name,
                watched.plural,
                watched.versions,
                namespaced=watched.namespaced,
            )
    objects: dict[ObjectKey, Any] = {}
    for doc in yaml.safe_load_all(OBJECTS + extra):
        key, obj = parse_object(apiserver.put(doc))  # as the informer sees it: server's generation
        objects[key] = obj
    return PushContext(objects, domain="cluster.local", version="1")


def _writes(apiserver: KubeApiServer) -> int:
    return sum(
        1 for r in apiserver.requests if r.method in ("PUT", "PATCH") and r.path.endswith("/status")
    )


async def test_status_written_once_and_put_back(apiserver: KubeApiServer, kube: KubeClient) -> None:
    ctx = _setup(apiserver)
    writer = GatewayApiStatusWriter(kube, ctx.gateway_api_status)
    route = ObjectKey("HTTPRoute", "web", "shop")
    gateway = ObjectKey("KubernetesGateway", "web", "edge")
    for key in (route, gateway):
        await writer.reconcile(key)
    written = apiserver.get(GW, "HTTPRoute", "web", "shop")
    assert written is not None
    (parent,) = written["status"]["parents"]
    conditions = {c["type"]: c for c in parent["conditions"]}
    assert conditions["ResolvedRefs"]["reason"] == "BackendNotFound"
    assert conditions["ResolvedRefs"]["observedGeneration"] == written["metadata"]["generation"]
    assert conditions["Accepted"]["lastTransitionTime"]
    gw = apiserver.get(GW, "Gateway", "web", "edge")
    assert gw is not None and gw["status"]["listeners"][0]["attachedRoutes"] == 1
    assert _writes(apiserver) == 2

    # Nothing changed: no write, neither from memory nor after a fresh start (it reads first).
    await writer.reconcile(route)
    await GatewayApiStatusWriter(kube, ctx.gateway_api_status).reconcile(route)
    assert _writes(apiserver) == 2

    # Someone else's edit of the status is put back by the next reconcile of a fresh term.
    edited = {**written, "status": {"parents": []}}
    apiserver.put(edited)
    await GatewayApiStatusWriter(kube, ctx.gateway_api_status).reconcile(route)
    back = apiserver.get(GW, "HTTPRoute", "web", "shop")
    assert back is not None and back["status"]["parents"][0]["parentRef"]["name"] == "edge"
    assert _writes(apiserver) == 3


OTHER = "example.com/other-controller"


def _other_entry(gateway: str = "theirs") -> dict[str, Any]:
    """A parents entry another controller wrote (for a Gateway of its own class)."""
    return {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway},
        "controllerName": OTHER,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "theirs",
                "observedGeneration": 1,
                "lastTransitionTime": "2020-01-01T00:00:00Z",
            }
        ],
    }


def _with_status(apiserver: KubeApiServer, status: dict[str, Any]) -> None:
    current = apiserver.get(GW, "HTTPRoute", "web", "shop")
    assert current is not None
    apiserver.put({**current, "status": status})


def _parents(apiserver: KubeApiServer) -> list[dict[str, Any]]:
    found = apiserver.get(GW, "HTTPRoute", "web", "shop")
    assert found is not None
    parents: list[dict[str, Any]] = found["status"]["parents"]
    return parents


async def test_other_controllers_parents_are_kept_in_place(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ctx = _setup(apiserver)
    route = ObjectKey("HTTPRoute", "web", "shop")
    stale_ours = {**_other_entry("gone"), "controllerName": "istio.io/gateway-controller"}
    _with_status(apiserver, {"parents": [_other_entry(), stale_ours, _other_entry("second")]})

    await GatewayApiStatusWriter(kube, ctx.gateway_api_status).reconcile(route)
    parents = _parents(apiserver)
    # Theirs untouched and in place; our stale entry (a parent no longer ours) replaced.
    assert [p["parentRef"]["name"] for p in parents] == ["theirs", "second", "edge"]
    assert parents[0] == _other_entry() and parents[1] == _other_entry("second")
    assert parents[2]["controllerName"] == "istio.io/gateway-controller"
    assert _writes(apiserver) == 1

    # Unchanged: no write, from memory or from a fresh writer that reads first.
    await GatewayApiStatusWriter(kube, ctx.gateway_api_status).reconcile(route)
    assert _writes(apiserver) == 1

    # Another controller adds its entry after ours: a later write of ours keeps it.
    _with_status(apiserver, {"parents": [*parents, _other_entry("third")]})
    edited = _parents(apiserver)
    edited[2]["conditions"][0]["message"] = "tampered"
    _with_status(apiserver, {"parents": edited})
    await GatewayApiStatusWriter(kube, ctx.gateway_api_status).reconcile(route)
    after = _parents(apiserver)
    assert [p["parentRef"]["name"] for p in after] == ["theirs", "second", "edge", "third"]
    assert after[2]["conditions"][0]["message"] != "tampered"
    assert after[3] == _other_entry("third")
    assert _writes(apiserver) == 2  # (the test's own puts are not API calls)


class _RacingApi:
    """The real client, but before each of the first `races` writes another controller adds
    its entry to the object (so the resourceVersion our write carries is stale)."""

    def __init__(self, kube: KubeClient, apiserver: KubeApiServer, races: int) -> None:
        self._kube, self._apiserver, self._races = kube, apiserver, races
        self.conflicts = 0

    async def get(self, ref: Any, *, subresource: str = "") -> dict[str, Any]:
        return await self._kube.get(ref, subresource=subresource)

    async def replace(self, ref: Any, obj: dict[str, Any], *, subresource: str = "") -> Any:
        if self._races:
            self._races -= 1
            current = self._apiserver.get(GW, "HTTPRoute", "web", "shop")
            assert current is not None
            parents = (current.get("status") or {}).get("parents", [])
            entry = _other_entry(f"racer-{self._races}")
            self._apiserver.put({**current, "status": {"parents": [*parents, entry]}})
        try:
            return await self._kube.replace(ref, obj, subresource=subresource)
        except Conflict:
            self.conflicts += 1
            raise


async def test_a_concurrent_writers_entry_is_not_lost(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ctx = _setup(apiserver)
    api = _RacingApi(kube, apiserver, races=2)
    await GatewayApiStatusWriter(api, ctx.gateway_api_status).reconcile(
        ObjectKey("HTTPRoute", "web", "shop")
    )
    assert api.conflicts == 2
    names = [p["parentRef"]["name"] for p in _parents(apiserver)]
    assert names == ["racer-1", "racer-0", "edge"]


async def test_a_writer_that_always_loses_the_race_gives_up_and_retries_later(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ctx = _setup(apiserver)
    api = _RacingApi(kube, apiserver, races=100)
    with pytest.raises(StatusConflict):
        await GatewayApiStatusWriter(api, ctx.gateway_api_status).reconcile(
            ObjectKey("HTTPRoute", "web", "shop")
        )
    assert api.conflicts == MAX_ATTEMPTS


async def test_objects_of_other_controllers_are_never_written(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    other = f"""
---
apiVersion: {GW}
kind: GatewayClass
metadata: {{name: theirs}}
spec: {{controllerName: {OTHER}}}
---
apiVersion: {GW}
kind: GatewayClass
metadata: {{name: istio}}
spec: {{controllerName: istio.io/gateway-controller}}
---
apiVersion: {GW}
kind: Gateway
metadata: {{name: foreign, namespace: web}}
spec:
  gatewayClassName: theirs
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"""
    ctx = _setup(apiserver, other)
    statuses = ctx.gateway_api_status()
    writer = GatewayApiStatusWriter(kube, ctx.gateway_api_status)
    for key in [*statuses, ObjectKey("GatewayClass", "", "theirs")]:
        await writer.reconcile(key)
        await writer.reconcile(ObjectKey("KubernetesGateway", "web", "foreign"))
    assert ObjectKey("GatewayClass", "", "istio") in statuses
    # Even told to (a class that changed controller since), the writer checks the class it reads.
    claimed = {
        ObjectKey("GatewayClass", "", "theirs"): statuses[ObjectKey("GatewayClass", "", "istio")]
    }
    await GatewayApiStatusWriter(kube, lambda: claimed).reconcile(
        ObjectKey("GatewayClass", "", "theirs")
    )
    written = {r.path for r in apiserver.requests if r.path.endswith("/status")}
    assert not any("/theirs/" in p or "/foreign/" in p for p in written), written
    assert any(p.endswith("/gatewayclasses/istio/status") for p in written)
    theirs = apiserver.get(GW, "GatewayClass", "", "theirs")
    foreign = apiserver.get(GW, "Gateway", "web", "foreign")
    assert theirs is not None and not theirs.get("status")
    assert foreign is not None and not foreign.get("status")


async def test_a_status_of_an_older_generation_is_not_written(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ctx = _setup(apiserver)
    current = apiserver.get(GW, "HTTPRoute", "web", "shop")
    assert current is not None
    apiserver.put({**current, "spec": {**current["spec"], "hostnames": ["new.example.com"]}})
    await GatewayApiStatusWriter(kube, ctx.gateway_api_status).reconcile(
        ObjectKey("HTTPRoute", "web", "shop")
    )
    assert _writes(apiserver) == 0


async def test_a_route_no_longer_ours_loses_only_our_entry(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    ctx = _setup(apiserver)
    route = ObjectKey("HTTPRoute", "web", "shop")
    _with_status(apiserver, {"parents": [_other_entry()]})
    current: dict[str, Any] = {"statuses": ctx.gateway_api_status()}
    writer = GatewayApiStatusWriter(kube, lambda: current["statuses"])
    await writer.reconcile(route)
    assert [p["parentRef"]["name"] for p in _parents(apiserver)] == ["theirs", "edge"]

    # Its parentRef now names a Gateway of another controller: none of its parents is ours.
    current["statuses"] = {k: v for k, v in current["statuses"].items() if k != route}
    writer.changed()  # after a push: every status, and the route written before
    assert len(writer.queue) == len(current["statuses"]) + 1
    await writer.reconcile(route)
    assert _parents(apiserver) == [_other_entry()]

    # Withdrawn, it is forgotten: later reconciles (every push) do not even read it.
    def reads() -> int:
        return sum(1 for r in apiserver.requests if r.method == "GET" and r.path.endswith("/shop"))

    before, writes = reads(), _writes(apiserver)
    await writer.reconcile(route)
    assert (reads(), _writes(apiserver)) == (before, writes)


async def test_gateway_addresses_from_the_deployment_hook(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    """status.addresses (from the Service the gateway deployment made) joins the computed
    status, is written once per change, and leaves the conditions as they are."""
    ctx = _setup(apiserver)
    gateway = ObjectKey("KubernetesGateway", "web", "edge")
    addresses: dict[ObjectKey, list[dict[str, str]]] = {}
    writer = GatewayApiStatusWriter(kube, ctx.gateway_api_status, addresses=addresses.get)
    await writer.reconcile(gateway)
    before = apiserver.get(GW, "Gateway", "web", "edge")
    assert before is not None and "addresses" not in before["status"]
    addresses[gateway] = [{"type": "IPAddress", "value": "192.0.2.1"}]
    await writer.reconcile(gateway)
    await writer.reconcile(gateway)
    after = apiserver.get(GW, "Gateway", "web", "edge")
    assert after is not None
    assert after["status"]["addresses"] == [{"type": "IPAddress", "value": "192.0.2.1"}]
    assert after["status"]["conditions"] == before["status"]["conditions"]
    assert after["status"]["listeners"] == before["status"]["listeners"]
    assert _writes(apiserver) == 2
