"""Real Envoy, over SotW and Delta ADS, carrying real requests where istiolite's config says."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.integration.conftest import NAMESPACE, Mesh
from tests.support import mesh
from tests.support.net import free_port
from tests.support.processes import dump_section
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def test_config_dump_has_everything_and_nothing_warming(running_mesh: Mesh) -> None:
    envoy = running_mesh.envoy
    assert envoy is not None
    dump = envoy.config_dump()
    clusters = {c["cluster"]["name"] for c in dump_section(dump, "dynamic_active_clusters")}
    assert running_mesh.cluster("alpha") in clusters
    assert running_mesh.cluster("beta") in clusters
    assert {"PassthroughCluster", "BlackHoleCluster"} <= clusters
    listeners = dump_section(dump, "dynamic_listeners")
    names = {item["name"] for item in listeners}
    assert f"127.0.0.1_{running_mesh.service_port}" in names
    assert all("error_state" not in item and "active_state" in item for item in listeners)
    routes = dump_section(dump, "dynamic_route_configs")
    route = next(r for r in routes if r["route_config"]["name"] == str(running_mesh.service_port))
    hosts = {vh["name"] for vh in route["route_config"]["virtual_hosts"]}
    assert f"alpha.{NAMESPACE}.svc.cluster.local:{running_mesh.service_port}" in hosts
    assert "error_state" not in str(dump)
    stats = envoy.stats()
    assert stats["cluster_manager.warming_clusters"] == 0
    assert stats["listener_manager.total_listeners_warming"] == 0
    assert stats.get("cluster_manager.cds.update_rejected", 0) == 0
    assert stats.get("listener_manager.lds.update_rejected", 0) == 0


def test_requests_spread_over_all_endpoints_and_host_picks_service(running_mesh: Mesh) -> None:
    seen = Counter(running_mesh.request("alpha")[1] for _ in range(60))
    assert set(seen) == {"alpha-0", "alpha-1", "alpha-2"}, seen
    # Every name istiod gives a service works, and a different host reaches a different service.
    for host in ("beta", f"beta.{NAMESPACE}", f"beta.{NAMESPACE}.svc.cluster.local"):
        assert running_mesh.request(host) == (200, "beta-0")
    assert running_mesh.request(f"beta:{running_mesh.service_port}") == (200, "beta-0")
    # Not a mesh host: refused rather than looped back into Envoy.
    assert running_mesh.request("unknown.example")[0] == 502


def test_removed_endpoint_stops_getting_traffic_without_failures(running_mesh: Mesh) -> None:
    envoy = running_mesh.envoy
    assert envoy is not None
    ips = sorted(ip for ip, s in running_mesh.upstreams.items() if s.name.startswith("alpha"))
    removed_ip, kept = ips[-1], ips[:-1]
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        for _ in range(5000):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, _ = running_mesh.request("alpha")
                statuses[status] += 1
                if status != 200:
                    failures.append(str(status))
            except OSError as err:
                failures.append(repr(err))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: sum(statuses.values()) > 20, what="load running")
        mesh.write(
            running_mesh.config_dir / "alpha.yaml",
            mesh.service(
                "alpha", NAMESPACE, running_mesh.service_port, target_port=running_mesh.target_port
            ),
            mesh.endpoint_slice("alpha", NAMESPACE, running_mesh.target_port, kept),
        )
        cluster = running_mesh.cluster("alpha")
        wait_for(
            lambda: len(envoy.cluster_endpoints(cluster)) == 2, what="envoy drops the endpoint"
        )
        hits_after_update = running_mesh.upstreams[removed_ip].total
        served_before = sum(statuses.values())
        wait_for(lambda: sum(statuses.values()) > served_before + 50, what="more load")
    finally:
        stop.set()
        worker.join(timeout=40)
    assert failures == [], failures[:5]
    # Once Envoy has applied the update, the removed pod gets nothing new.
    assert running_mesh.upstreams[removed_ip].total == hits_after_update
    seen = Counter(running_mesh.request("alpha")[1] for _ in range(30))
    assert set(seen) == {running_mesh.upstreams[ip].name for ip in kept}


def test_new_service_file_is_routable_without_restarting_envoy(running_mesh: Mesh) -> None:
    assert running_mesh.request("gamma")[0] == 502  # not in the mesh yet
    ip = running_mesh.start_upstream("gamma-0")
    mesh.write(
        running_mesh.config_dir / "gamma.yaml",
        mesh.service(
            "gamma", NAMESPACE, running_mesh.service_port, target_port=running_mesh.target_port
        ),
        mesh.endpoint_slice("gamma", NAMESPACE, running_mesh.target_port, [ip]),
    )
    wait_for(lambda: running_mesh.request("gamma") == (200, "gamma-0"), what="gamma routable")
    # A service on a new port gets its own listener bound on 127.0.0.1.
    new_port = free_port()
    mesh.write(
        running_mesh.config_dir / "delta-port.yaml",
        mesh.service("omega", NAMESPACE, new_port, target_port=running_mesh.target_port),
        mesh.endpoint_slice("omega", NAMESPACE, running_mesh.target_port, [ip]),
    )
    wait_for(
        lambda: running_mesh.request("omega", port=new_port) == (200, "gamma-0"),
        what="new listener",
    )


def test_invalid_object_is_rejected_alone_with_a_clear_error(running_mesh: Mesh) -> None:
    assert running_mesh.istiolite is not None
    ip = running_mesh.start_upstream("delta-0")
    bad = mesh.service("broken", NAMESPACE, running_mesh.service_port)
    bad["spec"]["ports"][0]["port"] = 70000
    mesh.write(
        running_mesh.config_dir / "mixed.yaml",
        bad,
        mesh.service(
            "delta", NAMESPACE, running_mesh.service_port, target_port=running_mesh.target_port
        ),
        mesh.endpoint_slice("delta", NAMESPACE, running_mesh.target_port, [ip]),
    )
    # The valid siblings in the same file still load and route; the old services keep working.
    wait_for(lambda: running_mesh.request("delta") == (200, "delta-0"), what="valid sibling")
    assert running_mesh.request("beta") == (200, "beta-0")
    assert running_mesh.request("broken")[0] == 502
    errors = [e for e in running_mesh.istiolite.log_events() if e.get("level") == "error"]
    assert any(
        "mixed.yaml" in str(e.get("file"))
        and f"Service {NAMESPACE}/broken" in str(e.get("object"))
        and e.get("field") == "spec.ports[0].port"
        for e in errors
    ), errors
    # A file that does not parse keeps what it had loaded before.
    (running_mesh.config_dir / "beta.yaml").write_text("apiVersion: v1\nkind: [unclosed\n")
    wait_for(
        lambda: any(
            "beta.yaml" in str(e.get("file")) and e.get("line")
            for e in running_mesh.istiolite.log_events()
            if e.get("level") == "error"
        ),
        what="parse error logged",
    )
    assert running_mesh.request("beta") == (200, "beta-0")
