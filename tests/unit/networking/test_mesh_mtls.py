"""Istio mutual TLS in generated config: ISTIO_MUTUAL and auto mTLS on clusters, endpoint
metadata, and inbound chains per PeerAuthentication mode."""

from __future__ import annotations

from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from istiolite.model.proxy import parse_proxy
from istiolite.networking.mtls import ALL_MTLS_ALPNS
from tests.support.objects import context, endpoint, endpoint_slice, pod, service
from tests.unit.networking.helpers import (
    clusters,
    http_manager,
    listeners,
    load_assignments,
    tcp_proxy,
)

WEB = "outbound|80||web.shop.svc.cluster.local"
MESH = {"security.istio.io/tlsMode": "istio", "app": "web"}


def client(*, mesh_mtls: bool = True, labels: dict[str, str] | None = None, mode: str = ""):  # type: ignore[no-untyped-def]
    metadata: dict[str, Any] = {"LABELS": labels or {"app": "client"}}
    if mesh_mtls:
        metadata["ISTIOLITE_MESH_MTLS"] = "true"
    if mode:
        metadata["INTERCEPTION_MODE"] = mode
    return parse_proxy("sidecar~10.1.0.9~client-0.shop~shop.svc.cluster.local", metadata)


def web(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        service("web", "shop", selector={"app": "web"}),
        pod("web-0", "shop", ip="10.1.0.1", labels=MESH, service_account="web-sa"),
        pod("web-1", "shop", ip="10.1.0.2", labels={"app": "web"}, service_account="legacy"),
        endpoint_slice(
            "web",
            "shop",
            endpoints=[
                endpoint("10.1.0.1", pod="web-0", namespace="shop"),
                endpoint("10.1.0.2", pod="web-1", namespace="shop"),
            ],
        ),
        *extra,
    ]


def upstream(socket: Any) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    socket.typed_config.Unpack(context)
    return context


def sans(context: tls_pb2.UpstreamTlsContext) -> set[str]:
    validation = context.common_tls_context.combined_validation_context
    return {
        m.matcher.exact for m in validation.default_validation_context.match_typed_subject_alt_names
    }


def test_auto_mtls_matches_endpoints_with_a_sidecar() -> None:
    cluster = clusters(context(*web()), client())[WEB]
    assert not cluster.HasField("transport_socket")
    istio, plain = cluster.transport_socket_matches
    assert (istio.name, dict(istio.match)) == ("tlsMode-istio", {"tlsMode": "istio"})
    assert (plain.name, dict(plain.match)) == ("tlsMode-disabled", {})
    assert plain.transport_socket.name == "envoy.transport_sockets.raw_buffer"
    tls = upstream(istio.transport_socket)
    assert tls.sni == "outbound_.80_._.web.shop.svc.cluster.local"
    assert list(tls.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "istio"]
    assert [s.name for s in tls.common_tls_context.tls_certificate_sds_secret_configs] == [
        "default"
    ]
    combined = tls.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "ROOTCA"
    assert combined.validation_context_sds_secret_config.sds_config.HasField("ads")
    # Every workload's identity behind the service.
    assert sans(tls) == {
        "spiffe://cluster.local/ns/shop/sa/web-sa",
        "spiffe://cluster.local/ns/shop/sa/legacy",
    }


def test_endpoints_say_which_take_mtls() -> None:
    cla = load_assignments(context(*web()), client())[WEB]
    marked = {
        e.endpoint.address.socket_address.address: dict(
            e.metadata.filter_metadata["envoy.transport_socket_match"]
        )
        for group in cla.endpoints
        for e in group.lb_endpoints
    }
    assert marked == {"10.1.0.1": {"tlsMode": "istio"}, "10.1.0.2": {}}


def test_peer_authentication_disable_turns_auto_mtls_off() -> None:
    namespace_off = {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"mtls": {"mode": "DISABLE"}},
    }
    assert not clusters(context(*web(namespace_off)), client())[WEB].transport_socket_matches
    # A workload's own DISABLE (on its port): its endpoint is sent plaintext.
    workload_off = {
        **namespace_off,
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "DISABLE"}},
    }
    cla = load_assignments(context(*web(workload_off)), client())[WEB]
    assert not any(e.metadata.filter_metadata for g in cla.endpoints for e in g.lb_endpoints)


def test_a_proxy_without_a_mesh_certificate_gets_no_auto_mtls() -> None:
    assert not clusters(context(*web()), client(mesh_mtls=False))[WEB].transport_socket_matches


def test_destination_rule_istio_mutual_with_its_own_sni_and_sans() -> None:
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "host": "web",
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {
                        "tls": {
                            "mode": "ISTIO_MUTUAL",
                            "sni": "web.example",
                            "subjectAltNames": ["spiffe://cluster.local/ns/shop/sa/v2"],
                        }
                    },
                },
            ],
        },
    }
    found = clusters(context(*web(rule)), client(mesh_mtls=False))
    top = found[WEB]
    assert not top.transport_socket_matches
    assert upstream(top.transport_socket).sni == "outbound_.80_._.web.shop.svc.cluster.local"
    v2 = upstream(found["outbound|80|v2|web.shop.svc.cluster.local"].transport_socket)
    assert v2.sni == "web.example"
    assert sans(v2) == {"spiffe://cluster.local/ns/shop/sa/v2"}


def test_mesh_external_services_get_no_auto_mtls() -> None:
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "hosts": ["api.example.com"],
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "10.9.9.9"}],
        },
    }
    found = clusters(context(entry), client())
    assert not found["outbound|443||api.example.com"].transport_socket_matches
    entry["spec"]["location"] = "MESH_INTERNAL"
    found = clusters(context(entry), client())
    assert found["outbound|443||api.example.com"].transport_socket_matches


# --- inbound ------------------------------------------------------------------------------------


def server(mode: str = "", *, mesh_mtls: bool = True) -> Any:
    metadata: dict[str, Any] = {"LABELS": {"app": "web"}}
    if mesh_mtls:
        metadata["ISTIOLITE_MESH_MTLS"] = "true"
    return parse_proxy("sidecar~10.1.0.1~web-0.shop~shop.svc.cluster.local", metadata)


def peer(mode: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"mtls": {"mode": mode}, **spec},
    }


def inbound_chains(*raws: dict[str, Any], mesh_mtls: bool = True) -> dict[str, Any]:
    found = listeners(context(service("web", "shop", selector={"app": "web"}), *raws), server())
    if not mesh_mtls:
        found = listeners(
            context(service("web", "shop", selector={"app": "web"}), *raws),
            server(mesh_mtls=False),
        )
    inbound = found["virtualInbound"]
    return {c.name: c for c in inbound.filter_chains if c.name.startswith("0.0.0.0_80")}


def downstream(chain: Any) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    return context


def test_permissive_by_default_tells_mesh_mtls_from_plaintext() -> None:
    found = listeners(context(service("web", "shop", selector={"app": "web"})), server())
    inspectors = [f.name for f in found["virtualInbound"].listener_filters]
    assert inspectors[:2] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
    ]
    chains = inbound_chains()
    assert set(chains) == {"0.0.0.0_80-mtls", "0.0.0.0_80"}
    mtls, plain = chains["0.0.0.0_80-mtls"], chains["0.0.0.0_80"]
    assert mtls.filter_chain_match.transport_protocol == "tls"
    assert tuple(mtls.filter_chain_match.application_protocols) == ALL_MTLS_ALPNS
    terminated = downstream(mtls)
    assert terminated.require_client_certificate.value is True
    common = terminated.common_tls_context
    assert common.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert plain.filter_chain_match.transport_protocol == "raw_buffer"
    assert not plain.HasField("transport_socket")
    # The application sees its caller's certificate.
    manager = http_manager(mtls)
    assert manager is not None
    assert manager.forward_client_cert_details == manager.APPEND_FORWARD
    assert manager.set_current_client_cert_details.uri is True


def test_strict_takes_only_mtls_and_closes_anything_else() -> None:
    chains = inbound_chains(peer("STRICT"))
    assert set(chains) == {"0.0.0.0_80-mtls", "0.0.0.0_80-plaintext"}
    assert chains["0.0.0.0_80-mtls"].filter_chain_match.transport_protocol == "tls"
    deny = tcp_proxy(chains["0.0.0.0_80-plaintext"])
    assert deny is not None and deny.cluster == "BlackHoleCluster"


def test_disable_serves_plaintext_only() -> None:
    chains = inbound_chains(peer("DISABLE"))
    assert set(chains) == {"0.0.0.0_80"}
    assert not chains["0.0.0.0_80"].HasField("transport_socket")


def test_port_level_override() -> None:
    policy = peer(
        "STRICT",
        selector={"matchLabels": {"app": "web"}},
        portLevelMtls={"80": {"mode": "DISABLE"}},
    )
    assert set(inbound_chains(policy)) == {"0.0.0.0_80"}


def test_strict_holds_even_without_a_mesh_certificate() -> None:
    # Security first: STRICT never falls back to plaintext.
    assert "0.0.0.0_80-plaintext" in inbound_chains(peer("STRICT"), mesh_mtls=False)
    assert set(inbound_chains(mesh_mtls=False)) == {"0.0.0.0_80"}
