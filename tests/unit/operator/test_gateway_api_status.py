"""The leader's Gateway API status writer against the test API server (through the real
kubernetes_asyncio client): the computed status lands on /status, an unchanged status is not
written again, and a status someone else changed is put back."""

from __future__ import annotations

from typing import Any

import yaml

from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.operator.gateway_api_status import GatewayApiStatusWriter
from istiolite.push.context import PushContext
from istiolite.sources.kube.client import KubeClient
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
metadata: {{name: shop, namespace: web, generation: 4}}
spec:
  parentRefs: [{{name: edge}}]
  rules: [{{backendRefs: [{{name: missing, port: 80}}]}}]
"""


def _setup(apiserver: KubeApiServer) -> PushContext:
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
    for doc in yaml.safe_load_all(OBJECTS):
        apiserver.put(doc)
        key, obj = parse_object(doc)
        objects[key] = obj
    return PushContext(objects, domain="cluster.local", version="1")


def _writes(apiserver: KubeApiServer) -> int:
    return sum(1 for r in apiserver.requests if r.method == "PATCH" and r.path.endswith("/status"))


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
    assert conditions["ResolvedRefs"]["observedGeneration"] == 4
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
