"""TLS ServiceEntries without addresses and the istio.io egress-gateway TLS pattern, as istiod
routes them: the sidecar gets `0.0.0.0_443` with a chain per SNI name (other connections fall
through), and each tls[] match applies only on the gateways it names."""

from __future__ import annotations

from typing import Any

from istiolite.model.proxy import parse_proxy
from tests.support.objects import context, endpoint_slice, service, service_port
from tests.unit.networking.helpers import Listener, listeners, sidecar, tcp_proxy

Raw = dict[str, Any]
EGRESS_HOST = "istio-egressgateway.istio-system.svc.cluster.local"
TO_EGRESS = f"outbound|443|cnn|{EGRESS_HOST}"
TO_CNN = "outbound|443||edition.cnn.com"


def cnn_entry(**extra: Any) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "cnn", "namespace": "default"},
        "spec": {
            "hosts": ["edition.cnn.com"],
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": "DNS",
            **extra,
        },
    }


def egress_pattern() -> list[Raw]:
    """istio.io's "Egress gateway for HTTPS traffic" (TLS passthrough) objects."""
    return [
        cnn_entry(),
        service(
            "istio-egressgateway",
            "istio-system",
            cluster_ip="10.96.5.5",
            ports=[service_port("tls", 443)],
            selector={"istio": "egressgateway"},
        ),
        endpoint_slice(
            "istio-egressgateway", "istio-system", endpoints=["10.1.5.5"], ports=[("tls", 443)]
        ),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "istio-egressgateway", "namespace": "default"},
            "spec": {
                "selector": {"istio": "egressgateway"},
                "servers": [
                    {
                        "port": {"number": 443, "name": "tls", "protocol": "TLS"},
                        "hosts": ["edition.cnn.com"],
                        "tls": {"mode": "PASSTHROUGH"},
                    }
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "egressgateway-for-cnn", "namespace": "default"},
            "spec": {"host": EGRESS_HOST, "subsets": [{"name": "cnn"}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "direct-cnn-through-egress-gateway", "namespace": "default"},
            "spec": {
                "hosts": ["edition.cnn.com"],
                "gateways": ["istio-egressgateway", "mesh"],
                "tls": [
                    {
                        "match": [
                            {"gateways": ["mesh"], "port": 443, "sniHosts": ["edition.cnn.com"]}
                        ],
                        "route": [
                            {
                                "destination": {
                                    "host": EGRESS_HOST,
                                    "subset": "cnn",
                                    "port": {"number": 443},
                                }
                            }
                        ],
                    },
                    {
                        "match": [
                            {
                                "gateways": ["istio-egressgateway"],
                                "port": 443,
                                "sniHosts": ["edition.cnn.com"],
                            }
                        ],
                        "route": [
                            {
                                "destination": {"host": "edition.cnn.com", "port": {"number": 443}},
                                "weight": 100,
                            }
                        ],
                    },
                ],
            },
        },
    ]


def sni_routes(listener: Listener) -> dict[str, str]:
    out = {}
    for chain in listener.filter_chains:
        proxy = tcp_proxy(chain)
        assert proxy is not None
        for name in chain.filter_chain_match.server_names:
            out[name] = proxy.cluster
    return out


def default_cluster(listener: Listener) -> str:
    proxy = tcp_proxy(listener.default_filter_chain)
    assert proxy is not None
    return proxy.cluster


def egress_gateway() -> Any:
    return parse_proxy(
        "router~10.1.5.5~egress-1.istio-system~istio-system.svc.cluster.local",
        {"LABELS": {"istio": "egressgateway"}},
    )


def test_tls_entry_without_addresses_gets_an_sni_listener_that_captures_nothing_else() -> None:
    found = listeners(context(cnn_entry()), sidecar())
    listener = found["0.0.0.0_443"]
    assert sni_routes(listener) == {"edition.cnn.com": TO_CNN}
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert default_cluster(listener) == "PassthroughCluster"
    assert not listener.HasField("bind_to_port") or not listener.bind_to_port.value


def test_registry_only_falls_through_to_the_blackhole() -> None:
    sidecar_resource = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
    }
    found = listeners(context(cnn_entry(), sidecar_resource), sidecar())
    assert default_cluster(found["0.0.0.0_443"]) == "BlackHoleCluster"


def test_tcp_entry_without_addresses_still_gets_no_listener() -> None:
    entry = cnn_entry(ports=[{"number": 5432, "name": "tcp-pg", "protocol": "TCP"}])
    assert "0.0.0.0_5432" not in listeners(context(entry), sidecar())


def test_several_tls_entries_share_the_port_by_sni() -> None:
    other = cnn_entry(hosts=["*.wikipedia.org"])
    other["metadata"] = {"name": "wiki", "namespace": "default"}
    listener = listeners(context(cnn_entry(), other), sidecar())["0.0.0.0_443"]
    assert sni_routes(listener) == {
        "edition.cnn.com": TO_CNN,
        "*.wikipedia.org": "outbound|443||*.wikipedia.org",
    }


def test_sidecar_sends_the_host_to_the_egress_gateway() -> None:
    listener = listeners(context(*egress_pattern()), sidecar())["0.0.0.0_443"]
    # The mesh match of the VirtualService wins over the host's own chain.
    assert sni_routes(listener) == {"edition.cnn.com": TO_EGRESS}


def test_egress_gateway_sends_the_host_out_not_back_to_itself() -> None:
    found = listeners(context(*egress_pattern()), egress_gateway())
    listener = found["0.0.0.0_443"]
    assert sni_routes(listener) == {"edition.cnn.com": TO_CNN}


def test_a_suffix_wildcard_host_gets_no_sni_chain_envoy_would_refuse() -> None:
    # istiod accepts `*x`; Envoy's server_names take only `*.` wildcards.
    wildcard = cnn_entry(hosts=["*cnn.com"])
    wildcard["metadata"] = {"name": "suffix", "namespace": "default"}
    found = listeners(context(cnn_entry(), wildcard), sidecar())
    assert sni_routes(found["0.0.0.0_443"]) == {"edition.cnn.com": TO_CNN}
    # Alone, it leaves no listener (one without a filter chain would be refused).
    assert "0.0.0.0_443" not in listeners(context(wildcard), sidecar())


def test_tcp_match_gateways_apply_as_for_tls() -> None:
    """Egress through a gateway for TCP: `mesh` sends the port to the gateway, the gateway's own
    match (on the same port here) sends it out, not back to itself."""
    entry = cnn_entry(
        hosts=["db.example.com"],
        addresses=["192.0.2.10"],
        ports=[{"number": 27017, "name": "tcp", "protocol": "TCP"}],
    )
    gateway_service = egress_pattern()[1:3]
    gw = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "istio-egressgateway", "namespace": "default"},
        "spec": {
            "selector": {"istio": "egressgateway"},
            "servers": [
                {"port": {"number": 27017, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
            ],
        },
    }
    routes = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db-through-egress", "namespace": "default"},
        "spec": {
            "hosts": ["db.example.com"],
            "gateways": ["mesh", "istio-egressgateway"],
            "tcp": [
                {
                    "match": [{"gateways": ["mesh"], "port": 27017}],
                    "route": [{"destination": {"host": EGRESS_HOST, "port": {"number": 443}}}],
                },
                {
                    "match": [{"gateways": ["istio-egressgateway"], "port": 27017}],
                    "route": [
                        {"destination": {"host": "db.example.com", "port": {"number": 27017}}}
                    ],
                },
            ],
        },
    }
    ctx = context(entry, *gateway_service, gw, routes)
    side = listeners(ctx, sidecar())["192.0.2.10_27017"]
    assert tcp_proxy(side.filter_chains[0]).cluster == f"outbound|443||{EGRESS_HOST}"  # type: ignore[union-attr]
    (chain,) = listeners(ctx, egress_gateway())["0.0.0.0_27017"].filter_chains
    assert tcp_proxy(chain).cluster == "outbound|27017||db.example.com"  # type: ignore[union-attr]
