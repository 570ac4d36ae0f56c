"""VirtualService + DestinationRule through a real Envoy: canaries, matches, rewrites, redirects."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite.demo.echo import EchoServer
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_sidecar_mesh, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "shop"


@dataclass
class Reply:
    status: int
    server: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    location: str = ""
    body: str = ""


@dataclass
class Mesh:
    config: Path
    port: int
    target: int
    upstreams: list[EchoServer] = field(default_factory=list)
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None

    def get(self, host: str, path: str = "/", headers: dict[str, str] | None = None) -> Reply:
        got = http_request("127.0.0.1", self.port, host, path, headers=headers)
        reply = Reply(got.status, location=got.headers.get("location", ""), body=got.body)
        if got.status == 200 and got.body.startswith("{"):
            data = got.json()
            reply.server, reply.path = data["server"], data["path"]
            reply.headers = {k.lower(): v for k, v in data["headers"].items()}
        return reply

    def write(self, name: str, *objects: dict[str, Any]) -> None:
        tmp = self.config / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
        tmp.rename(self.config / name)


def _workload(m: Mesh, service: str, version: str) -> tuple[dict[str, Any], str]:
    ip = loopback_ip()
    name = f"{service}-{version}"
    m.upstreams.append(EchoServer(ip, m.target, name).start())
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": service, "version": version}},
        "spec": {"containers": [{"name": "app", "ports": [{"containerPort": m.target}]}]},
        "status": {"podIP": ip},
    }
    return pod, ip


def _service(m: Mesh, name: str, versions: list[str]) -> list[dict[str, Any]]:
    pods = [_workload(m, name, v) for v in versions]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "http", "port": m.port, "targetPort": m.target}],
            },
        },
        *[pod for pod, _ in pods],
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": NS,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": m.target}],
            "endpoints": [
                {
                    "addresses": [ip],
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": pod["metadata"]["name"]},
                }
                for pod, ip in pods
            ],
        },
    ]


def _subsets(host: str, versions: list[str], api: str = "v1beta1") -> dict[str, Any]:
    return {
        "apiVersion": f"networking.istio.io/{api}",
        "kind": "DestinationRule",
        "metadata": {"name": host, "namespace": NS},
        "spec": {
            "host": host,
            "subsets": [{"name": v, "labels": {"version": v}} for v in versions],
        },
    }


def _reviews_routes(v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": NS},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "name": "jason",
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "name": "canary",
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2},
                    ],
                },
            ],
        },
    }


RATINGS_ROUTES: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "VirtualService",
    "metadata": {"name": "ratings", "namespace": NS},
    "spec": {
        "hosts": [f"ratings.{NS}.svc.cluster.local"],
        "http": [
            {
                "match": [{"uri": {"exact": "/old"}}],
                "redirect": {"uri": "/new", "redirectCode": 302},
            },
            {
                "match": [{"uri": {"regex": "/teapot/[0-9]+"}}],
                "directResponse": {"status": 418, "body": {"string": "short and stout"}},
            },
            {
                "match": [{"uri": {"prefix": "/api/"}}],
                "rewrite": {"uri": "/v2/", "authority": "ratings.internal"},
                "route": [{"destination": {"host": "ratings"}}],
            },
            {
                "match": [{"queryParams": {"debug": {"exact": "1"}}}],
                "headers": {
                    "request": {"set": {"x-debug": "on"}, "remove": ["x-secret"]},
                    "response": {"add": {"x-served-by": "istiolite"}},
                },
                "route": [{"destination": {"host": "ratings"}}],
            },
            {"route": [{"destination": {"host": "ratings"}}]},
        ],
    },
}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(config, port=free_port(), target=free_port())
    try:
        m.write("reviews.yaml", *_service(m, "reviews", ["v1", "v2"]))
        m.write("reviews-subsets.yaml", _subsets("reviews", ["v1", "v2"]))
        m.write("reviews-routes.yaml", _reviews_routes(90, 10))
        m.write("ratings.yaml", *_service(m, "ratings", ["v1"]), RATINGS_ROUTES)
        m.istiolite, m.envoy = start_sidecar_mesh([config], tmp_path, namespace=NS)
        wait_for(lambda: m.get("reviews").status == 200, what="reviews routable")
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for server in m.upstreams:
            server.stop()


def _share_v2(m: Mesh, count: int) -> float:
    seen = Counter(m.get("reviews").server for _ in range(count))
    assert set(seen) <= {"reviews-v1", "reviews-v2"}, seen
    return seen["reviews-v2"] / count


def test_weighted_canary_and_live_shift_without_failures(mesh: Mesh) -> None:
    share = _share_v2(mesh, 1000)
    assert 0.07 <= share <= 0.13, f"v2 got {share:.1%} of 1000 requests, wanted 10% ± 3"

    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        for _ in range(5000):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                reply = mesh.get("reviews")
                if reply.status != 200:
                    failures.append(str(reply.status))
            except OSError as err:
                failures.append(repr(err))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        mesh.write("reviews-routes.yaml", _reviews_routes(50, 50))
        # Converged once a sample is clearly no longer 10%.
        wait_for(lambda: _share_v2(mesh, 200) > 0.3, timeout=20, what="the 50/50 split")
    finally:
        stop.set()
        worker.join(timeout=40)
    assert failures == [], failures[:5]
    share = _share_v2(mesh, 600)
    assert 0.40 <= share <= 0.60, f"v2 got {share:.1%} after the shift to 50/50"


def test_header_match_routes_to_subset(mesh: Mesh) -> None:
    for _ in range(20):
        assert mesh.get("reviews", headers={"end-user": "jason"}).server == "reviews-v2"
    # Subsets select pods by labels: the v1 subset never reaches the v2 pod and vice versa.
    others = Counter(mesh.get("reviews", headers={"end-user": "mary"}).server for _ in range(100))
    assert others["reviews-v1"] > others["reviews-v2"]


def test_uri_matches_rewrite_redirect_direct_response_and_headers(mesh: Mesh) -> None:
    host = "ratings"
    redirect = mesh.get(host, "/old")
    assert (redirect.status, redirect.location.endswith("/new")) == (302, True), redirect
    teapot = mesh.get(host, "/teapot/42")
    assert (teapot.status, teapot.body) == (418, "short and stout")
    assert mesh.get(host, "/teapot/x").status == 200  # the regex must match the whole path
    rewritten = mesh.get(host, "/api/items?id=1")
    assert rewritten.path == "/v2/items?id=1"
    assert rewritten.headers["host"] == "ratings.internal"
    debug = mesh.get(host, "/any?debug=1", headers={"x-secret": "s3cret"})
    assert debug.headers.get("x-debug") == "on"
    assert "x-secret" not in debug.headers
    plain = mesh.get(host, "/any?debug=0", headers={"x-secret": "kept"})
    assert "x-debug" not in plain.headers and plain.headers["x-secret"] == "kept"


def test_invalid_virtual_service_is_rejected_alone(mesh: Mesh, tmp_path: Path) -> None:
    assert mesh.istiolite is not None
    bad = json.loads(json.dumps(_reviews_routes(50, 50)))
    bad["spec"]["http"][1]["route"][0]["weight"] = -5
    mesh.write("reviews-routes.yaml", bad)
    wait_for(
        lambda: any(
            e.get("field") == "spec.http[1].route[0].weight"
            and "VirtualService shop/reviews" in str(e.get("object"))
            for e in mesh.istiolite.log_events()  # type: ignore[union-attr]
            if e.get("level") == "error"
        ),
        what="the rejection logged",
    )
    # The VirtualService is gone (plain round robin over both pods); ratings keeps its routes.
    wait_for(lambda: 0.3 < _share_v2(mesh, 100) < 0.7, what="reviews without its routes")
    assert mesh.get("ratings", "/teapot/1").status == 418
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "istiolite.cli",
            "validate",
            str(mesh.config / "reviews-routes.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "spec.http[1].route[0].weight" in result.stderr
    assert "VirtualService shop/reviews" in result.stderr


def test_every_translated_field_is_accepted_by_envoy(tmp_path: Path) -> None:
    """The golden case that uses every VirtualService field istiolite translates, served to a
    real Envoy: all of it applied, nothing rejected (a NACK would show as update_rejected)."""
    config = Path(__file__).parents[1] / "golden" / "cases" / "traffic" / "config"
    cp, envoy = start_sidecar_mesh([config], tmp_path, namespace=NS)
    try:
        wait_for(
            lambda: (
                envoy.stats().get("http.outbound_127.0.0.1_9080.rds.9080.update_success", 0) > 0
            ),
            what="the route configuration applied",
        )
        stats = envoy.stats()
        assert {k: v for k, v in stats.items() if k.endswith("update_rejected") and v} == {}
        dump = envoy.config_dump()
        routes = next(c for c in dump["configs"] if "dynamic_route_configs" in c)
        [route_config] = routes["dynamic_route_configs"]
        vhost = next(
            vh
            for vh in route_config["route_config"]["virtual_hosts"]
            if vh["name"].startswith("reviews.")
        )
        assert len(vhost["routes"]) == 6
    finally:
        stop_all(envoy, cp)
