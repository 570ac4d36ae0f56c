"""outboundTrafficPolicy with real interception: an app in a pod namespace whose TCP is redirected
to its Envoy sidecar by istio-init's iptables rules.

ALLOW_ANY (no Sidecar): a destination no Service describes is passed through (PassthroughCluster);
REGISTRY_ONLY (a Sidecar says so): it is blocked — HTTP gets Envoy's 502, plain TCP is closed by
BlackHoleCluster — while the services of the registry keep working either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from istiolite.demo.echo import EchoServer
from istiolite.demo.mesh.netns import PROXY_GID, PROXY_UID
from tests.e2e.harness import GreeterEcho, MeshNetwork, Pod, TcpResult, tcp_exchange
from tests.support import mesh as yaml_mesh
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.e2e]

POD_IP = "10.200.0.1"
UNKNOWN_IP = "10.200.0.50"  # no Service, ServiceEntry or endpoint names it
KNOWN_ENDPOINT_IP = "10.200.0.51"
KNOWN_HTTP_VIP = "10.200.1.10"  # ClusterIPs: routed out of the pod, never answered by anyone
KNOWN_TCP_VIP = "10.200.1.11"
KNOWN_HOST = "known.default.svc.cluster.local"
KNOWN_HTTP_CLUSTER = f"outbound|80||{KNOWN_HOST}"
KNOWN_TCP_CLUSTER = "outbound|9100||known-tcp.default.svc.cluster.local"
SIDECAR_FILE = "sidecar.yaml"


@dataclass
class Scenario:
    network: MeshNetwork
    pod: Pod
    unknown_http: EchoServer  # 10.200.0.50:80
    unknown_tcp: GreeterEcho  # 10.200.0.50:9000
    known_http: EchoServer  # 10.200.0.51:8080, endpoint of known:80
    known_tcp: GreeterEcho  # 10.200.0.51:9000, endpoint of known-tcp:9100

    def set_outbound_policy(self, mode: str, sidecar_namespace: str = "istio-system") -> None:
        """Write (REGISTRY_ONLY) or delete (ALLOW_ANY, the default) the Sidecar, and wait until
        the pod's Envoy runs the matching catch-alls."""
        path = self.network.config_dir / SIDECAR_FILE
        if mode == "ALLOW_ANY":
            path.unlink(missing_ok=True)
        else:
            yaml_mesh.write(
                path,
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "Sidecar",
                    "metadata": {"name": "default", "namespace": sidecar_namespace},
                    "spec": {"outboundTrafficPolicy": {"mode": mode}},
                },
            )
        wait_for(
            lambda: outbound_mode(self.pod) == mode,
            timeout=20,
            what=f"envoy running {mode} (now {outbound_mode(self.pod)})",
        )


def outbound_mode(pod: Pod) -> str:
    """What the pod's Envoy applies now to unknown destinations, from its /config_dump: the
    cluster of virtualOutbound's catch-all chain and the `*` virtual host of route "80"."""
    catch_all: set[str] = set()
    for entry in pod.envoy.config_dump("dynamic_listeners"):
        if entry.get("name") != "virtualOutbound" or "active_state" not in entry:
            continue
        listener = entry["active_state"]["listener"]
        chains = [c for c in listener.get("filter_chains", []) if not c.get("filter_chain_match")]
        chains += [listener["default_filter_chain"]] if "default_filter_chain" in listener else []
        catch_all |= {f["typed_config"].get("cluster", "") for c in chains for f in c["filters"]}
    star_hosts: set[str] = set()
    for entry in pod.envoy.config_dump("dynamic_route_configs"):
        config: dict[str, Any] = entry.get("route_config", {})
        if config.get("name") == "80":
            star_hosts |= {v["name"] for v in config["virtual_hosts"] if "*" in v["domains"]}
    if catch_all == {"PassthroughCluster"} and star_hosts == {"allow_any"}:
        return "ALLOW_ANY"
    if catch_all == {"BlackHoleCluster"} and star_hosts == {"block_all"}:
        return "REGISTRY_ONLY"
    return f"catch-all {sorted(catch_all)}, route 80 * hosts {sorted(star_hosts)}"


@pytest.fixture(scope="module")
def scenario(mesh_network: MeshNetwork) -> Iterator[Scenario]:
    net = mesh_network
    yaml_mesh.write(
        net.config_dir / "known.yaml",
        yaml_mesh.service("known", "default", 80, target_port=8080, cluster_ip=KNOWN_HTTP_VIP),
        yaml_mesh.endpoint_slice("known", "default", 8080, [KNOWN_ENDPOINT_IP]),
        yaml_mesh.service(
            "known-tcp",
            "default",
            9100,
            target_port=9000,
            port_name="tcp-greeter",
            cluster_ip=KNOWN_TCP_VIP,
        ),
        yaml_mesh.endpoint_slice(
            "known-tcp", "default", 9000, [KNOWN_ENDPOINT_IP], port_name="tcp-greeter"
        ),
    )
    for ip in (UNKNOWN_IP, KNOWN_ENDPOINT_IP):
        net.add_address(ip)
    unknown_http = net.http_upstream(UNKNOWN_IP, 80, "unknown-http")
    unknown_tcp = net.tcp_upstream(UNKNOWN_IP, 9000, "unknown-tcp")
    known_http = net.http_upstream(KNOWN_ENDPOINT_IP, 8080, "known-http")
    known_tcp = net.tcp_upstream(KNOWN_ENDPOINT_IP, 9000, "known-tcp")
    net.start_istiolite()
    pod = net.add_pod("app", POD_IP)
    yield Scenario(net, pod, unknown_http, unknown_tcp, known_http, known_tcp)


def _delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def test_pod_traffic_is_intercepted_as_istio_init_does(scenario: Scenario) -> None:
    """The rules are in place and work both ways: the app's connection lands on virtualOutbound
    (15001), Envoy's own connections (as the proxy user) are not looped back."""
    rules = scenario.pod.ns.iptables_save()
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in rules
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    uid, gid = scenario.pod.envoy.ids()
    assert gid == PROXY_GID and uid in (PROXY_UID, 0)  # uid 0 only if 1337 cannot run envoy
    scenario.set_outbound_policy("ALLOW_ANY")
    before = scenario.pod.envoy.stats()
    assert scenario.pod.tcp(UNKNOWN_IP, 9000).outcome == "ok"
    after = scenario.pod.envoy.stats()
    assert _delta(before, after, "listener.0.0.0.0_15001.downstream_cx_total") == 1
    # The upstream saw the pod's address: Envoy connected from the pod, not around it.
    assert scenario.unknown_tcp.peers[-1] == POD_IP


def test_allow_any_passes_unknown_http_through_passthrough_cluster(scenario: Scenario) -> None:
    scenario.set_outbound_policy("ALLOW_ANY")
    envoy, hits = scenario.pod.envoy, scenario.unknown_http.total
    before = envoy.stats()
    result = scenario.pod.http(UNKNOWN_IP, 80)
    after = envoy.stats()
    assert (result.status, result.server) == (200, "unknown-http"), result
    assert result.headers.get("server") == "envoy"  # answered through the sidecar
    assert scenario.unknown_http.total == hits + 1
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_rq_total") == 1
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_rq_200") == 1


def test_allow_any_passes_unknown_tcp_through_passthrough_cluster(scenario: Scenario) -> None:
    scenario.set_outbound_policy("ALLOW_ANY")
    before = scenario.pod.envoy.stats()
    result = scenario.pod.tcp(UNKNOWN_IP, 9000)
    after = scenario.pod.envoy.stats()
    assert result == TcpResult(b"hello from unknown-tcp\nunknown-tcp: ping\n", "ok")
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_cx_total") == 1


@pytest.mark.parametrize("sidecar_namespace", ["istio-system", "default"])
def test_registry_only_blocks_unknown_destinations(
    scenario: Scenario, sidecar_namespace: str
) -> None:
    """A mesh-wide Sidecar (root namespace) or the workload namespace's own."""
    scenario.set_outbound_policy("REGISTRY_ONLY", sidecar_namespace)
    envoy = scenario.pod.envoy
    http_hits, tcp_connections = scenario.unknown_http.total, scenario.unknown_tcp.connections

    before = envoy.stats()
    result = scenario.pod.http(UNKNOWN_IP, 80)
    after = envoy.stats()
    # Istio's block_all virtual host: a direct 502 from Envoy, no upstream tried.
    assert (result.status, result.body) == (502, ""), result
    assert result.headers.get("server") == "envoy"
    assert scenario.unknown_http.total == http_hits
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_rq_total") == 0
    assert _delta(before, after, "http.outbound_0.0.0.0_80.downstream_rq_5xx") == 1

    before = envoy.stats()
    tcp = scenario.pod.tcp(UNKNOWN_IP, 9000)
    after = envoy.stats()
    # BlackHoleCluster has no hosts: Envoy accepts, then closes without a byte.
    assert tcp == TcpResult(b"", "eof")
    assert scenario.unknown_tcp.connections == tcp_connections
    assert _delta(before, after, "cluster.BlackHoleCluster.upstream_cx_none_healthy") == 1
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_cx_total") == 0


@pytest.mark.parametrize("mode", ["ALLOW_ANY", "REGISTRY_ONLY"])
def test_known_services_work_in_either_mode(scenario: Scenario, mode: str) -> None:
    scenario.set_outbound_policy(mode)
    envoy = scenario.pod.envoy
    before = envoy.stats()
    by_name = scenario.pod.http(KNOWN_HTTP_VIP, 80, host=KNOWN_HOST)
    by_vip = scenario.pod.http(KNOWN_HTTP_VIP, 80)  # Host: 10.200.1.10, a domain of the vhost
    tcp = scenario.pod.tcp(KNOWN_TCP_VIP, 9100)
    after = envoy.stats()
    assert (by_name.status, by_name.server) == (200, "known-http"), by_name
    assert (by_vip.status, by_vip.server) == (200, "known-http"), by_vip
    assert _delta(before, after, f"cluster.{KNOWN_HTTP_CLUSTER}.upstream_rq_total") == 2
    assert tcp == TcpResult(b"hello from known-tcp\nknown-tcp: ping\n", "ok")
    assert _delta(before, after, f"cluster.{KNOWN_TCP_CLUSTER}.upstream_cx_total") == 1
    assert _delta(before, after, "cluster.PassthroughCluster.upstream_cx_total") == 0


def test_removing_the_sidecar_lets_unknown_destinations_through_again(
    scenario: Scenario,
) -> None:
    scenario.set_outbound_policy("REGISTRY_ONLY")
    assert scenario.pod.http(UNKNOWN_IP, 80).status == 502
    scenario.set_outbound_policy("ALLOW_ANY")
    assert scenario.pod.http(UNKNOWN_IP, 80).server == "unknown-http"
    assert scenario.pod.tcp(UNKNOWN_IP, 9000).outcome == "ok"


def test_inbound_connections_are_captured_by_virtual_inbound(scenario: Scenario) -> None:
    """From outside the pod to the app's port: PREROUTING sends it to 15006, Envoy passes it to
    the app from 127.0.0.6 (InboundPassthroughCluster), which iptables lets through."""
    app = scenario.pod.ns.call(GreeterEcho, "0.0.0.0", 9090, "app").start()
    try:
        before = scenario.pod.envoy.stats()
        result = scenario.network.ns.call(tcp_exchange, POD_IP, 9090)
        after = scenario.pod.envoy.stats()
    finally:
        app.stop()
    assert result == TcpResult(b"hello from app\napp: ping\n", "ok")
    assert _delta(before, after, "listener.0.0.0.0_15006.downstream_cx_total") == 1
    assert _delta(before, after, "cluster.InboundPassthroughCluster.upstream_cx_total") == 1
    assert app.peers == ["127.0.0.6"]
