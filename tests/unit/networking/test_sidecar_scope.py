"""Sidecar resources applied to a proxy: egress listeners (port, bind, captureMode, hosts) and
ingress listeners (inbound clusters and listeners from the Sidecar, not from Services)."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from istiolite import type_urls
from istiolite.networking import generator
from istiolite.push.context import PushContext
from tests.support.objects import (
    context,
    endpoint_slice,
    outbound_cluster,
    service,
    service_port,
)
from tests.unit.networking.helpers import (
    Cluster,
    Listener,
    all_chains,
    clusters,
    endpoint_addresses,
    http_manager,
    listeners,
    routes,
    sidecar,
    tcp_proxy,
)

Raw = dict[str, Any]
WEB_PORT = service_port("http", 80, target_port=8080)


def sidecar_resource(spec: Raw, namespace: str = "shop", name: str = "default") -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def mesh(*extra: Raw) -> PushContext:
    return context(
        service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("http", 80)]),
        service(
            "cart",
            "shop",
            cluster_ip="10.96.0.11",
            ports=[service_port("http", 9090), service_port("http-admin", 80)],
        ),
        service("db", "data", cluster_ip="10.96.1.20", ports=[service_port("tcp-pg", 5432)]),
        service("search", "data", cluster_ip="10.96.1.21", ports=[service_port("http", 80)]),
        *extra,
    )


def outbound_names(found: dict[str, Any]) -> set[str]:
    return {n for n in found if n.startswith("outbound|")}


def only_tcp_cluster(listener: Listener) -> str:
    (chain,) = all_chains(listener)
    found = tcp_proxy(chain)
    assert found is not None
    return found.cluster


def vhosts(config: Any) -> list[str]:
    return [vh.name for vh in config.virtual_hosts]


# --- egress -------------------------------------------------------------------------------------


def test_egress_listener_with_a_port_gets_only_that_port_of_its_hosts() -> None:
    ctx = mesh(
        sidecar_resource(
            {
                "egress": [
                    {"port": {"number": 5432, "protocol": "TCP"}, "hosts": ["data/*"]},
                    {"hosts": ["./*"]},
                ]
            }
        )
    )
    proxy = sidecar("shop")
    # data's services come in on 5432 only (db has it, search does not); shop's on every port.
    assert outbound_names(clusters(ctx, proxy)) == {
        outbound_cluster("db", 5432, "data"),
        outbound_cluster("web", 80, "shop"),
        outbound_cluster("cart", 80, "shop"),
        outbound_cluster("cart", 9090, "shop"),
    }
    found = listeners(ctx, proxy)
    assert only_tcp_cluster(found["10.96.1.20_5432"]) == outbound_cluster("db", 5432, "data")
    assert {"0.0.0.0_80", "0.0.0.0_9090"} <= set(found)
    assert vhosts(routes(ctx, proxy)["80"]) == [
        "cart.shop.svc.cluster.local:80",
        "web.shop.svc.cluster.local:80",
        "allow_any",
    ]


def test_egress_bind_and_capture_mode_none_make_a_real_listener() -> None:
    ctx = mesh(
        sidecar_resource(
            {
                "egress": [
                    {
                        "port": {"number": 9090, "protocol": "HTTP", "name": "http"},
                        "bind": "127.0.0.2",
                        "captureMode": "NONE",
                        "hosts": ["./*"],
                    },
                    {"hosts": ["*/*"]},
                ]
            }
        )
    )
    proxy = sidecar("shop")  # iptables capture for everything else
    found = listeners(ctx, proxy)
    bound = found["127.0.0.2_9090"]
    assert not bound.HasField("bind_to_port")  # it binds a real port
    assert bound.address.socket_address.address == "127.0.0.2"
    manager = http_manager(bound.filter_chains[0])
    assert manager is not None and manager.rds.route_config_name == "9090"
    assert found["0.0.0.0_80"].bind_to_port.value is False
    config = routes(ctx, proxy)["9090"]
    # Port 9090's routes come from its own egress listener; the fallback must not send a bound
    # listener's unknown hosts to "the original destination" (itself): 502.
    assert vhosts(config) == ["cart.shop.svc.cluster.local:9090", "block_all"]


def test_egress_capture_mode_none_without_bind_binds_loopback() -> None:
    ctx = mesh(
        sidecar_resource(
            {
                "egress": [
                    {
                        "port": {"number": 5432, "protocol": "TCP"},
                        "captureMode": "NONE",
                        "hosts": ["data/*"],
                    }
                ]
            }
        )
    )
    found = listeners(ctx, sidecar("shop"))
    assert only_tcp_cluster(found["127.0.0.1_5432"]) == outbound_cluster("db", 5432, "data")
    # Only the egress listeners given: no catch-all, so nothing for other ports.
    assert set(found) == {"127.0.0.1_5432", "virtualInbound", "virtualOutbound"}


def test_catch_all_does_not_add_to_a_port_an_egress_listener_claimed() -> None:
    ctx = mesh(
        sidecar_resource(
            {
                "egress": [
                    {"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["data/*"]},
                    {"hosts": ["*/*"]},
                ]
            }
        )
    )
    proxy = sidecar("shop")
    # Route 80 serves only data's services on 80, though the catch-all also has shop's.
    assert vhosts(routes(ctx, proxy)["80"]) == ["search.data.svc.cluster.local:80", "allow_any"]
    assert vhosts(routes(ctx, proxy)["9090"]) == ["cart.shop.svc.cluster.local:9090", "allow_any"]


def test_bind_without_iptables_puts_every_port_of_the_listener_on_it() -> None:
    ctx = mesh(sidecar_resource({"egress": [{"bind": "127.0.0.3", "hosts": ["*/*"]}]}))
    found = listeners(ctx, sidecar("shop", mode="NONE"))
    assert set(found) == {"127.0.0.3_80", "127.0.0.3_9090", "127.0.0.3_5432"}


def test_root_namespace_sidecar_reads_dot_as_the_proxy_namespace() -> None:
    ctx = mesh(sidecar_resource({"egress": [{"hosts": ["./*"]}]}, namespace="istio-system"))
    shop = outbound_names(clusters(ctx, sidecar("shop")))
    data = outbound_names(clusters(ctx, sidecar("data")))
    assert outbound_cluster("web", 80, "shop") in shop
    assert outbound_cluster("db", 5432, "data") not in shop
    assert outbound_cluster("db", 5432, "data") in data
    assert outbound_cluster("web", 80, "shop") not in data


def test_virtual_service_destinations_get_clusters_even_outside_the_hosts() -> None:
    route_to_search = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "hosts": ["web"],
            "http": [{"route": [{"destination": {"host": "search.data.svc.cluster.local"}}]}],
        },
    }
    ctx = mesh(route_to_search, sidecar_resource({"egress": [{"hosts": ["./*"]}]}))
    found = outbound_names(clusters(ctx, sidecar("shop")))
    assert outbound_cluster("search", 80, "data") in found
    assert outbound_cluster("db", 5432, "data") not in found


# --- ingress ------------------------------------------------------------------------------------


INGRESS: Raw = {
    "workloadSelector": {"labels": {"app": "web"}},
    "ingress": [
        {
            "port": {"number": 9080, "protocol": "HTTP", "name": "http"},
            "defaultEndpoint": "127.0.0.1:8080",
            "connectionPool": {"tcp": {"maxConnections": 100}},
        },
        {
            "port": {"number": 9000, "protocol": "TCP", "name": "tcp"},
            "defaultEndpoint": "0.0.0.0:9001",
            "captureMode": "NONE",
        },
        {"port": {"number": 7000, "protocol": "TCP", "name": "tcp-raw"}},
    ],
}


def web_mesh(spec: Raw = INGRESS) -> PushContext:
    return context(
        # The Service selecting the workload no longer decides its inbound ports.
        service("web", "shop", selector={"app": "web"}, ports=[WEB_PORT]),
        sidecar_resource(spec),
    )


def web_proxy(mode: str | None = None, ip: str = "10.1.0.5") -> Any:
    return sidecar("shop", "web-1", ip=ip, labels={"app": "web"}, mode=mode)


def test_ingress_listeners_replace_the_service_ports() -> None:
    found = clusters(web_mesh(), web_proxy())
    assert sorted(n for n in found if n.startswith("inbound|")) == [
        "inbound|7000||",
        "inbound|9000||",
        "inbound|9080||",
    ]


def test_ingress_cluster_goes_to_the_default_endpoint() -> None:
    found = clusters(web_mesh(), web_proxy())
    local = found["inbound|9080||"]
    assert local.type == Cluster.STATIC
    assert endpoint_addresses(local.load_assignment) == [("127.0.0.1", 8080)]
    assert local.circuit_breakers.thresholds[0].max_connections.value == 100
    assert not local.HasField("upstream_bind_config")
    # 0.0.0.0 means the pod's own IP, reached from 127.0.0.6 so iptables lets it through.
    pod_ip = found["inbound|9000||"]
    assert endpoint_addresses(pod_ip.load_assignment) == [("10.1.0.5", 9001)]
    assert pod_ip.upstream_bind_config.source_address.address == "127.0.0.6"
    # No defaultEndpoint: to wherever the connection was going.
    original = found["inbound|7000||"]
    assert original.type == Cluster.ORIGINAL_DST
    assert original.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not original.HasField("load_assignment")


def test_unix_socket_default_endpoint() -> None:
    spec = {
        "ingress": [
            {
                "port": {"number": 9080, "protocol": "HTTP"},
                "defaultEndpoint": "unix:///var/run/app.sock",
            }
        ]
    }
    found = clusters(web_mesh(spec), web_proxy())["inbound|9080||"]
    address = found.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.pipe.path == "/var/run/app.sock"


def test_ingress_chains_on_virtual_inbound_and_a_bound_listener_for_capture_none() -> None:
    found = listeners(web_mesh(), web_proxy())
    inbound = found["virtualInbound"]
    by_port = {
        c.filter_chain_match.destination_port.value: c
        for c in inbound.filter_chains
        if c.filter_chain_match.destination_port.value != 15006
    }
    assert sorted(by_port) == [7000, 9080]  # the Service's 8080 is gone
    assert by_port[9080].name == "10.1.0.5_9080"  # named after the proxy's IP
    manager = http_manager(by_port[9080])
    assert manager is not None
    assert manager.route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|9080||"
    # captureMode NONE: a real listener on the proxy's IP, forwarding to the cluster.
    bound = found["10.1.0.5_9000"]
    assert not bound.HasField("bind_to_port")
    assert bound.traffic_direction == base_pb2.INBOUND
    assert (bound.address.socket_address.address, bound.address.socket_address.port_value) == (
        "10.1.0.5",
        9000,
    )
    assert only_tcp_cluster(bound) == "inbound|9000||"


def test_without_iptables_ingress_binds_its_ports() -> None:
    spec = {
        "workloadSelector": {"labels": {"app": "web"}},
        "ingress": [
            {"port": {"number": 9080, "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:8080"},
            {"port": {"number": 9081, "protocol": "HTTP"}, "bind": "127.0.0.1"},
            {"port": {"number": 9082, "protocol": "HTTP"}, "captureMode": "IPTABLES"},
        ],
    }
    # A loopback node IP is not a global unicast address: the default bind is 0.0.0.0.
    found = listeners(web_mesh(spec), web_proxy("NONE", ip="127.0.0.1"))
    inbound = {n for n, item in found.items() if item.traffic_direction == base_pb2.INBOUND}
    assert inbound == {"0.0.0.0_9080", "127.0.0.1_9081"}
    manager = http_manager(found["0.0.0.0_9080"].filter_chains[0])
    assert manager is not None
    # IPTABLES without iptables: the cluster exists, the chain has nowhere to live.
    assert "inbound|9082||" in clusters(web_mesh(spec), web_proxy("NONE", ip="127.0.0.1"))


def test_without_iptables_and_without_ingress_there_are_no_inbound_clusters() -> None:
    ctx = context(service("web", "shop", selector={"app": "web"}, ports=[WEB_PORT]))
    found = clusters(ctx, web_proxy("NONE"))
    assert not [n for n in found if n.startswith("inbound|")]
    assert "inbound|8080||" in clusters(ctx, web_proxy())


def test_ingress_tls_terminates_with_certificate_files() -> None:
    spec = {
        "ingress": [
            {
                "port": {"number": 9443, "protocol": "HTTPS", "name": "https"},
                "defaultEndpoint": "127.0.0.1:8080",
                "tls": {
                    "mode": "MUTUAL",
                    "serverCertificate": "/certs/cert.pem",
                    "privateKey": "/certs/key.pem",
                    "caCertificates": "/certs/ca.pem",
                },
            }
        ]
    }
    found = listeners(web_mesh(spec), web_proxy())
    (chain,) = [c for c in found["virtualInbound"].filter_chains if c.name == "10.1.0.5_9443"]
    # HTTPS terminated here is HTTP inside.
    assert http_manager(chain) is not None
    context_pb = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context_pb)
    # The files are named through SDS (istiod's file-cert:/file-root: secrets).
    common = context_pb.common_tls_context
    (certificate,) = common.tls_certificate_sds_secret_configs
    assert certificate.name == "file-cert:/certs/cert.pem~/certs/key.pem"
    trusted = common.combined_validation_context.validation_context_sds_secret_config.name
    assert trusted == "file-root:/certs/ca.pem"
    assert context_pb.require_client_certificate.value is True
    served = generator.generate(web_mesh(spec), web_proxy(), type_urls.SECRET)
    assert set(served) == {certificate.name, trusted}


def test_ingress_shapes_are_cached_per_proxy_ip() -> None:
    ctx = web_mesh()
    a = listeners(ctx, web_proxy(ip="10.1.0.5"))
    b = listeners(ctx, web_proxy(ip="10.1.0.6"))
    assert "10.1.0.5_9000" in a and "10.1.0.6_9000" in b


# --- ServiceEntry TCP ports without addresses ----------------------------------------------------


def entry(name: str, resolution: str, **spec: Any) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "hosts": [f"{name}.example.com"],
            "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
            "resolution": resolution,
            **spec,
        },
    }


def test_tcp_service_entry_without_addresses_does_not_capture_the_port() -> None:
    # DNS or STATIC, no address: no 0.0.0.0_5432 that would swallow every connection to 5432.
    ctx = context(
        entry("db", "DNS"),
        entry("pg", "STATIC", endpoints=[{"address": "203.0.113.5"}]),
    )
    found = listeners(ctx, sidecar("shop"))
    assert not [n for n in found if n.endswith("_5432")]
    assert "outbound|5432||db.example.com" in clusters(ctx, sidecar("shop"))
    # The connection passes through virtualOutbound as for any unknown destination.
    assert "virtualOutbound" in found


def test_tcp_service_entry_with_resolution_none_passes_its_port_through() -> None:
    found = listeners(context(entry("any", "NONE")), sidecar("shop"))
    assert only_tcp_cluster(found["0.0.0.0_5432"]) == "outbound|5432||any.example.com"
    # (NONE with endpoints is refused, as by istiod: tests/unit/model/test_istio_validation_parity)


def test_tcp_service_entry_with_an_address_range_matches_it_on_0000() -> None:
    ctx = context(entry("net", "NONE", addresses=["10.20.0.0/16"]))
    listener = listeners(ctx, sidecar("shop"))["0.0.0.0_5432"]
    (ranged,) = listener.filter_chains
    prefix = ranged.filter_chain_match.prefix_ranges[0]
    assert (prefix.address_prefix, prefix.prefix_len.value) == ("10.20.0.0", 16)
    assert tcp_proxy(ranged).cluster == "outbound|5432||net.example.com"
    assert tcp_proxy(listener.default_filter_chain).cluster == "PassthroughCluster"


def test_tcp_service_entry_with_several_addresses_listens_on_each() -> None:
    # istiod makes a service per address: every address:port gets its listener.
    ctx = context(
        entry("pgs", "STATIC", addresses=["192.0.2.10", "192.0.2.11", "10.30.0.0/24"],
              endpoints=[{"address": "203.0.113.9"}]),
    )  # fmt: skip
    found = listeners(ctx, sidecar("shop"))
    for name in ("192.0.2.10_5432", "192.0.2.11_5432"):
        assert only_tcp_cluster(found[name]) == "outbound|5432||pgs.example.com"
    (ranged,) = found["0.0.0.0_5432"].filter_chains
    assert ranged.filter_chain_match.prefix_ranges[0].address_prefix == "10.30.0.0"


def test_headless_service_still_gets_a_listener_per_endpoint() -> None:
    ctx = context(
        service("db", "shop", cluster_ip="None", ports=[service_port("tcp", 5432)]),
        endpoint_slice("db", "shop", ports=[("tcp", 5432)], endpoints=["10.1.0.7"]),
    )
    assert "10.1.0.7_5432" in listeners(ctx, sidecar("shop"))
