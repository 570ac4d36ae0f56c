"""Automated gateway deployment against the Kubernetes API test server, with a real `serve`:
a Gateway of class istio without addresses gets its ServiceAccount, Deployment and Service,
owned by it; edits to what istiolite owns are put back, a deleted child comes back, nothing is
written while nothing changes (not even by a restarted istiolite), status.addresses follows the
Service, and deleting the Gateway removes the children through the garbage collector."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from istiolite.sources.kube.resources import WATCHED
from tests.support.kube_apiserver import KubeApiServer, RecordedRequest
from tests.support.processes import IstioliteProcess
from tests.support.wait import wait_for

GATEWAY_API = "gateway.networking.k8s.io/v1"
CHILDREN = (("v1", "ServiceAccount"), ("apps/v1", "Deployment"), ("v1", "Service"))
CHILD_PATHS = ("/serviceaccounts", "/deployments", "/services")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _gateway(name: str, class_name: str = "istio", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "generation": 1},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS", "tls": {"mode": "Passthrough"}},
            ],
            **spec,
        },
    }


def _child_writes(requests: list[RecordedRequest], since: int = 0) -> list[str]:
    """Write requests on child kinds, as "METHOD path name" (a POST names it in its body)."""
    out = []
    for r in requests[since:]:
        if r.method in WRITES and any(p in r.path for p in CHILD_PATHS):
            meta = r.body.get("metadata") if isinstance(r.body, dict) else None
            name = meta.get("name", "") if isinstance(meta, dict) else r.path.rpartition("/")[2]
            out.append(f"{r.method} {r.path} {name}")
    return out


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        for name in ("istio-system", "shop"):
            server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for name, watched in WATCHED.items():
            if watched.group == "gateway.networking.k8s.io":
                server.install_crd(
                    watched.group,
                    watched.api_kind or name,
                    watched.plural,
                    watched.versions,
                    namespaced=watched.namespaced,
                )
        yield server


def _serve(apiserver: KubeApiServer, work: Path, *extra: str) -> IstioliteProcess:
    config = work / "config"
    config.mkdir(exist_ok=True)
    return IstioliteProcess(
        [config],
        work,
        "--kubeconfig", str(apiserver.write_kubeconfig(work / "kubeconfig")),
        "--leader-lease-duration", "4s",
        "--proxy-image", "registry.example/proxyv2:test",
        *extra,
    )  # fmt: skip


def _children(apiserver: KubeApiServer, name: str) -> list[dict[str, Any] | None]:
    return [apiserver.get(v, k, "shop", name) for v, k in CHILDREN]


def _all_children(apiserver: KubeApiServer, name: str) -> list[dict[str, Any]] | None:
    found = _children(apiserver, name)
    return found if all(found) else None  # type: ignore[return-value]


def test_children_created_kept_in_shape_and_collected(
    apiserver: KubeApiServer, tmp_path: Path
) -> None:
    gateway = apiserver.put(_gateway("edge"))
    apiserver.put(_gateway("foreign", "other-class"))
    apiserver.put(
        {
            "apiVersion": GATEWAY_API,
            "kind": "GatewayClass",
            "metadata": {"name": "custom"},
            "spec": {"controllerName": "istio.io/gateway-controller"},
        }
    )
    apiserver.put(_gateway("classy", "custom"))
    apiserver.put(_gateway("fixed", addresses=[{"type": "Hostname", "value": "lb.example"}]))
    istiolite = _serve(apiserver, tmp_path)
    try:
        sa, deployment, service = wait_for(
            lambda: _all_children(apiserver, "edge-istio"),
            timeout=30,
            what="the Gateway's ServiceAccount, Deployment and Service",
        )
        owner = {
            "apiVersion": GATEWAY_API,
            "kind": "Gateway",
            "name": "edge",
            "uid": gateway["metadata"]["uid"],
            "controller": True,
        }
        for child in (sa, deployment, service):
            assert child is not None
            assert child["metadata"]["ownerReferences"] == [owner]
            assert child["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "edge"
        assert deployment is not None and service is not None
        [proxy] = deployment["spec"]["template"]["spec"]["containers"]
        assert proxy["image"] == "registry.example/proxyv2:test"
        assert [p["port"] for p in service["spec"]["ports"]] == [15021, 80, 443]
        assert service["spec"]["type"] == "LoadBalancer"

        # status.addresses: the Service's DNS name until the load balancer has an address.
        def addresses() -> Any:
            got = apiserver.get(GATEWAY_API, "Gateway", "shop", "edge") or {}
            return (got.get("status") or {}).get("addresses")

        wait_for(
            lambda: (
                addresses() == [{"type": "Hostname", "value": "edge-istio.shop.svc.cluster.local"}]
            ),
            timeout=20,
            what="status.addresses from the Service name",
        )
        conditions = apiserver.get(GATEWAY_API, "Gateway", "shop", "edge")["status"]["conditions"]
        assert {c["type"] for c in conditions} >= {"Accepted", "Programmed"}
        balanced = copy.deepcopy(apiserver.get("v1", "Service", "shop", "edge-istio"))
        balanced["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
        apiserver.put(balanced)
        wait_for(
            lambda: addresses() == [{"type": "IPAddress", "value": "192.0.2.10"}],
            timeout=20,
            what="status.addresses from the load balancer",
        )
        kept = apiserver.get(GATEWAY_API, "Gateway", "shop", "edge")["status"]["conditions"]
        assert {c["type"] for c in kept} == {c["type"] for c in conditions}

        # A class of ours through a GatewayClass object: deployed too.
        wait_for(
            lambda: _all_children(apiserver, "classy-custom"),
            timeout=20,
            what="children of a Gateway whose GatewayClass names istio's controller",
        )
        # Foreign class and a Gateway with addresses: nothing made.
        assert _children(apiserver, "foreign-other-class") == [None, None, None]
        assert _children(apiserver, "fixed-istio") == [None, None, None]
        assert len(_child_writes(apiserver.requests)) == 6  # 3 each for edge and classy

        # Edits of what istiolite owns are put back.
        edited = copy.deepcopy(apiserver.get("v1", "Service", "shop", "edge-istio"))
        edited["spec"]["ports"] = [{"name": "http", "port": 8080}]
        apiserver.put(edited)
        wait_for(
            lambda: [p["port"] for p in apiserver.get("v1", "Service", "shop", "edge-istio")
                     ["spec"]["ports"]] == [15021, 80, 443],
            timeout=20,
            what="the Service's ports put back",
        )  # fmt: skip
        edited = copy.deepcopy(apiserver.get("apps/v1", "Deployment", "shop", "edge-istio"))
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
        apiserver.put(edited)
        wait_for(
            lambda: (
                apiserver.get("apps/v1", "Deployment", "shop", "edge-istio")["spec"]["template"][
                    "spec"
                ]["containers"][0]["image"]
                == "registry.example/proxyv2:test"
            ),
            timeout=20,
            what="the Deployment's image put back",
        )
        # A deleted Deployment comes back (a new object: a new uid).
        old_uid = apiserver.get("apps/v1", "Deployment", "shop", "edge-istio")["metadata"]["uid"]
        apiserver.delete("apps/v1", "Deployment", "shop", "edge-istio")
        recreated = wait_for(
            lambda: apiserver.get("apps/v1", "Deployment", "shop", "edge-istio"),
            timeout=20,
            what="the deleted Deployment recreated",
        )
        assert recreated["metadata"]["uid"] != old_uid
        assert len(_child_writes(apiserver.requests)) == 9  # + 2 puts, 1 create

        # Nothing changes: a Gateway update that changes nothing of ours writes nothing.
        mark = len(apiserver.requests)
        touched = copy.deepcopy(apiserver.get(GATEWAY_API, "Gateway", "shop", "edge"))
        touched["metadata"].setdefault("labels", {})["touched"] = "yes"
        apiserver.put(touched)
        apiserver.put(_gateway("second"))  # a sentinel: once it has children, edge was seen
        wait_for(lambda: all(_children(apiserver, "second-istio")), timeout=20, what="second")
        assert all("edge-istio" not in w for w in _child_writes(apiserver.requests, mark))
    finally:
        istiolite.stop()

    # A restarted istiolite (a new leader, fresh caches) writes nothing either.
    mark = len(apiserver.requests)
    istiolite = _serve(apiserver, tmp_path)
    try:
        apiserver.put(_gateway("third"))
        wait_for(
            lambda: all(_children(apiserver, "third-istio")), timeout=30, what="the new leader"
        )
        writes = _child_writes(apiserver.requests, mark)
        assert len(writes) == 3 and all("third-istio" in w for w in writes), writes

        # The Gateway deleted: the garbage collector removes its children.
        apiserver.delete(GATEWAY_API, "Gateway", "shop", "edge")
        assert _children(apiserver, "edge-istio") == [None, None, None]
        assert all(_children(apiserver, "second-istio"))
    finally:
        istiolite.stop()


def test_no_gateway_deployment_flag(apiserver: KubeApiServer, tmp_path: Path) -> None:
    apiserver.put(_gateway("edge"))
    istiolite = _serve(apiserver, tmp_path, "--no-gateway-deployment")
    try:
        wait_for(
            lambda: (apiserver.get(GATEWAY_API, "Gateway", "shop", "edge") or {}).get("status"),
            timeout=30,
            what="the leader writing the Gateway's status",
        )
        assert _children(apiserver, "edge-istio") == [None, None, None]
        assert _child_writes(apiserver.requests) == []
    finally:
        istiolite.stop()
