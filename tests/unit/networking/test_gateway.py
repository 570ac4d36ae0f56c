"""Gateway proxies (`router`): the listeners their Gateways' servers become, the routes bound
VirtualServices put on them, and the servers left out (missing Secret, SNI or protocol clash),
each shaped and named as istiod builds them."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from istiolite import type_urls
from istiolite.model.gateway import parse_gateway
from istiolite.networking import generator
from istiolite.networking.gateway import bound_servers, gateway_route_name
from istiolite.push.context import PushContext
from tests.support.certs import CertificateAuthority, KeyPair, tls_secret
from tests.support.objects import context, outbound_cluster, pod, service, service_port
from tests.unit.networking.helpers import (
    FilterChain,
    Listener,
    RouteConfiguration,
    http_manager,
    listeners,
    router,
    routes,
    tcp_proxy,
)

GW_NS = "istio-system"
LABELS = {"istio": "ingressgateway"}
INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_SOCKET = "envoy.transport_sockets.tls"
ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)
HELLO = outbound_cluster("hello", 80, "web")
Raw = dict[str, Any]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("gateway unit CA")


@pytest.fixture(scope="module")
def pair(ca: CertificateAuthority) -> KeyPair:
    return ca.issue("hello.example.com", dns=("hello.example.com",))


# -- builders ------------------------------------------------------------------------------------


def gateway(
    *servers: Raw,
    name: str = "web-gw",
    namespace: str = GW_NS,
    selector: dict[str, str] | None = None,
) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector if selector is not None else LABELS,
            "servers": list(servers),
        },
    }


def http(port: int = 80, hosts: tuple[str, ...] = ("*",), name: str = "", **extra: Any) -> Raw:
    return {
        "port": {"number": port, "name": name or f"http-{port}", "protocol": "HTTP"},
        "hosts": list(hosts),
        **extra,
    }


def https(
    port: int = 443,
    hosts: tuple[str, ...] = ("hello.example.com",),
    name: str = "",
    *,
    credential: str = "hello-cert",
    mode: str = "SIMPLE",
    **tls: Any,
) -> Raw:
    settings: Raw = {"mode": mode, **tls}
    if credential:
        settings["credentialName"] = credential
    return {
        "port": {"number": port, "name": name or f"https-{port}", "protocol": "HTTPS"},
        "hosts": list(hosts),
        "tls": settings,
    }


def route_to(host: str = "hello", prefix: str | None = None, name: str = "") -> Raw:
    rule: Raw = {"route": [{"destination": {"host": host}}]}
    if prefix is not None:
        rule["match"] = [{"uri": {"prefix": prefix}}]
    if name:
        rule["name"] = name
    return rule


def virtual_service(
    name: str = "hello",
    namespace: str = "web",
    hosts: tuple[str, ...] = ("hello.example.com",),
    gateways: tuple[str, ...] = (f"{GW_NS}/web-gw",),
    http_routes: list[Raw] | None = None,
) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": list(hosts),
            "gateways": list(gateways),
            "http": http_routes if http_routes is not None else [route_to()],
        },
    }


def backends() -> list[Raw]:
    return [service("hello", "web", cluster_ip="10.96.1.10")]


def mesh(*raws: Raw) -> PushContext:
    return context(*backends(), *raws)


def listener(ctx: PushContext, name: str) -> Listener:
    found = listeners(ctx, router())
    assert name in found, f"no listener {name}; have {sorted(found)}"
    return found[name]


def route_config(ctx: PushContext, name: str) -> RouteConfiguration:
    found = routes(ctx, router())
    assert name in found, f"no route {name}; have {sorted(found)}"
    return found[name]


def rds_name(chain: FilterChain) -> str:
    manager = http_manager(chain)
    assert manager is not None
    return manager.rds.route_config_name


def downstream(chain: FilterChain) -> tls_pb2.DownstreamTlsContext:
    assert chain.transport_socket.name == TLS_SOCKET
    context_ = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context_)
    return context_


def vhosts(config: RouteConfiguration) -> dict[str, rc.VirtualHost]:
    return {vh.name: vh for vh in config.virtual_hosts}


def clusters_of(vh: rc.VirtualHost) -> list[str]:
    return [r.route.cluster for r in vh.routes]


def prefixes(vh: rc.VirtualHost) -> list[str]:
    return [r.match.prefix for r in vh.routes]


# -- listeners -----------------------------------------------------------------------------------


def test_http_server_becomes_a_listener_with_rds_per_port() -> None:
    ctx = mesh(gateway(http(8080)), virtual_service(gateways=(f"{GW_NS}/web-gw",)))
    found = listeners(ctx, router())
    assert set(found) == {"0.0.0.0_8080"}
    lis = found["0.0.0.0_8080"]
    assert lis.address.socket_address.address == "0.0.0.0"
    assert lis.address.socket_address.port_value == 8080
    assert lis.traffic_direction == base_pb2.OUTBOUND
    assert not lis.listener_filters
    (chain,) = lis.filter_chains
    assert not chain.HasField("transport_socket")
    assert not chain.filter_chain_match.server_names
    manager = http_manager(chain)
    assert manager is not None
    assert manager.rds.route_config_name == "http.8080"
    assert manager.rds.config_source == ADS
    # The gateway is the edge: x-forwarded-for is built from the peer, not trusted.
    assert manager.use_remote_address.value is True
    assert manager.http_filters[-1].name == "envoy.filters.http.router"


def test_https_server_terminates_with_the_credential_over_sds(pair: KeyPair) -> None:
    ctx = mesh(gateway(https()), virtual_service(), tls_secret("hello-cert", GW_NS, pair))
    lis = listener(ctx, "0.0.0.0_443")
    assert [f.name for f in lis.listener_filters] == [INSPECTOR]
    (chain,) = lis.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["hello.example.com"]
    assert rds_name(chain) == "https.443.https-443.web-gw.istio-system"
    manager = http_manager(chain)
    assert manager is not None and manager.use_remote_address.value is True
    tls = downstream(chain)
    common = tls.common_tls_context
    (sds,) = common.tls_certificate_sds_secret_configs
    assert sds.name == "kubernetes://hello-cert"
    assert sds.sds_config == ADS
    assert not common.tls_certificates
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    # SIMPLE: no client certificate asked for, nothing to validate it against.
    assert not tls.HasField("require_client_certificate")
    assert not common.HasField("combined_validation_context")
    assert not common.HasField("validation_context")


def test_https_listener_never_inlines_key_material(pair: KeyPair) -> None:
    ctx = mesh(gateway(https()), virtual_service(), tls_secret("hello-cert", GW_NS, pair))
    lis = listener(ctx, "0.0.0.0_443")
    assert b"PRIVATE KEY" not in lis.SerializeToString()


def test_mutual_requires_a_client_certificate_checked_against_the_cacert_secret(
    ca: CertificateAuthority, pair: KeyPair
) -> None:
    ctx = mesh(
        gateway(
            https(credential="mtls-cert", mode="MUTUAL", subjectAltNames=["client.example.com"])
        ),
        virtual_service(),
        tls_secret("mtls-cert", GW_NS, pair, ca=ca.cert_pem),
    )
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    tls = downstream(chain)
    assert tls.require_client_certificate.value is True
    combined = tls.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://mtls-cert-cacert"
    assert combined.validation_context_sds_secret_config.sds_config == ADS
    sans = combined.default_validation_context.match_typed_subject_alt_names
    assert {(m.san_type, m.matcher.exact) for m in sans} == {
        (common_pb2.SubjectAltNameMatcher.DNS, "client.example.com"),
        (common_pb2.SubjectAltNameMatcher.URI, "client.example.com"),
    }
    sds = tls.common_tls_context.tls_certificate_sds_secret_configs
    assert [s.name for s in sds] == ["kubernetes://mtls-cert"]


def test_optional_mutual_asks_for_but_does_not_require_a_client_certificate(
    ca: CertificateAuthority, pair: KeyPair
) -> None:
    ctx = mesh(
        gateway(https(credential="mtls-cert", mode="OPTIONAL_MUTUAL")),
        virtual_service(),
        tls_secret("mtls-cert", GW_NS, pair, ca=ca.cert_pem),
    )
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    tls = downstream(chain)
    assert tls.HasField("require_client_certificate")
    assert tls.require_client_certificate.value is False
    combined = tls.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://mtls-cert-cacert"


def test_file_based_certificates_are_named_through_sds_as_istiod_does() -> None:
    ctx = mesh(
        gateway(
            https(
                credential="",
                serverCertificate="/etc/istio/gw/tls.crt",
                privateKey="/etc/istio/gw/tls.key",
            ),
            https(
                8443,
                credential="",
                mode="MUTUAL",
                serverCertificate="/etc/istio/gw/tls.crt",
                privateKey="/etc/istio/gw/tls.key",
                caCertificates="/etc/istio/gw/ca.crt",
                subjectAltNames=["client.example.com"],
            ),
        ),
        virtual_service(),
    )
    # The listener names `file-cert:`/`file-root:` secrets (a missing file then leaves that
    # one secret unready, not the whole LDS update refused); the secrets name the files.
    cert_name = "file-cert:/etc/istio/gw/tls.crt~/etc/istio/gw/tls.key"
    (simple,) = listener(ctx, "0.0.0.0_443").filter_chains
    common = downstream(simple).common_tls_context
    assert not common.tls_certificates
    (sds,) = common.tls_certificate_sds_secret_configs
    assert (sds.name, sds.sds_config) == (cert_name, ADS)
    (mutual,) = listener(ctx, "0.0.0.0_8443").filter_chains
    tls = downstream(mutual)
    assert tls.require_client_certificate.value is True
    combined = tls.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "file-root:/etc/istio/gw/ca.crt"
    assert {
        m.matcher.exact for m in combined.default_validation_context.match_typed_subject_alt_names
    } == {"client.example.com"}
    secrets = {
        name: secret_pb2.Secret.FromString(r.payload)
        for name, r in generator.generate(ctx, router(GW_NS), type_urls.SECRET).items()
    }
    assert set(secrets) == {cert_name, "file-root:/etc/istio/gw/ca.crt"}
    pair = secrets[cert_name].tls_certificate
    assert pair.certificate_chain.filename == "/etc/istio/gw/tls.crt"
    assert pair.private_key.filename == "/etc/istio/gw/tls.key"
    root = secrets["file-root:/etc/istio/gw/ca.crt"].validation_context
    assert root.trusted_ca.filename == "/etc/istio/gw/ca.crt"


def test_tls_versions_and_ciphers(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(
            https(
                minProtocolVersion="TLSV1_3",
                maxProtocolVersion="TLSV1_3",
                cipherSuites=["ECDHE-ECDSA-AES256-GCM-SHA384"],
            )
        ),
        virtual_service(),
        tls_secret("hello-cert", GW_NS, pair),
    )
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    params = downstream(chain).common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert list(params.cipher_suites) == ["ECDHE-ECDSA-AES256-GCM-SHA384"]


def test_wildcard_https_server_matches_any_sni(pair: KeyPair) -> None:
    ctx = mesh(gateway(https(hosts=("*",))), tls_secret("hello-cert", GW_NS, pair))
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    assert not chain.filter_chain_match.server_names


def test_sni_names_drop_the_namespace_part_and_duplicates(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(https(hosts=("web/b.example.com", "./a.example.com", "*/a.example.com"))),
        tls_secret("hello-cert", GW_NS, pair),
    )
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    assert list(chain.filter_chain_match.server_names) == ["a.example.com", "b.example.com"]


def test_https_servers_on_one_port_get_a_chain_and_a_route_each(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(
            https(hosts=("a.example.com",), name="https-a"),
            https(hosts=("b.example.com",), name="https-b"),
        ),
        tls_secret("hello-cert", GW_NS, pair),
    )
    lis = listener(ctx, "0.0.0.0_443")
    assert [list(c.filter_chain_match.server_names) for c in lis.filter_chains] == [
        ["a.example.com"],
        ["b.example.com"],
    ]
    assert [rds_name(c) for c in lis.filter_chains] == [
        "https.443.https-a.web-gw.istio-system",
        "https.443.https-b.web-gw.istio-system",
    ]
    assert set(routes(ctx, router())) == {
        "https.443.https-a.web-gw.istio-system",
        "https.443.https-b.web-gw.istio-system",
    }


def test_gateway_selector_not_matching_gives_nothing(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(http(), https(), selector={"istio": "egressgateway"}),
        virtual_service(),
        tls_secret("hello-cert", GW_NS, pair),
    )
    assert listeners(ctx, router()) == {}
    assert routes(ctx, router()) == {}


def test_gateways_of_every_namespace_select_the_proxy() -> None:
    ctx = mesh(
        gateway(http(80), name="a", namespace="team-a"),
        gateway(http(8080), name="b", namespace="team-b"),
    )
    assert set(listeners(ctx, router())) == {"0.0.0.0_80", "0.0.0.0_8080"}


def test_bind_address_names_the_listener_and_the_route() -> None:
    ctx = mesh(gateway(http(8080, bind="127.0.0.1")), virtual_service())
    lis = listener(ctx, "127.0.0.1_8080")
    assert lis.address.socket_address.address == "127.0.0.1"
    (chain,) = lis.filter_chains
    assert rds_name(chain) == "http.8080.127.0.0.1"
    assert "http.8080.127.0.0.1" in routes(ctx, router())


def test_auto_passthrough_routes_mesh_sni_to_the_named_cluster() -> None:
    ctx = mesh(
        gateway(
            http(),
            {
                "port": {"number": 15443, "name": "tls-auto", "protocol": "TLS"},
                "hosts": ["*.local"],
                "tls": {"mode": "AUTO_PASSTHROUGH"},
            },
        )
    )
    found = listener(ctx, "0.0.0.0_15443")
    assert [f.name for f in found.listener_filters] == [INSPECTOR]
    by_sni = {tuple(c.filter_chain_match.server_names): tcp_proxy(c) for c in found.filter_chains}
    sni = ("outbound_.80_._.hello.web.svc.cluster.local",)
    assert set(by_sni) == {sni}
    proxy = by_sni[sni]
    assert proxy is not None and proxy.cluster == HELLO
    assert not found.filter_chains[0].HasField("transport_socket")  # still encrypted: passed on


def test_istio_mutual_server_terminates_with_the_mesh_certificate() -> None:
    ctx = mesh(
        gateway(
            {
                "port": {"number": 8443, "name": "https-istio", "protocol": "HTTPS"},
                "hosts": ["*"],
                "tls": {"mode": "ISTIO_MUTUAL"},
            }
        )
    )
    (chain,) = listener(ctx, "0.0.0.0_8443").filter_chains
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value is True
    common = context.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    assert common.tls_certificate_sds_secret_configs[0].sds_config == ADS
    validation = common.combined_validation_context.validation_context_sds_secret_config
    assert validation.name == "ROOTCA" and validation.sds_config == ADS
    manager = http_manager(chain)
    assert manager is not None and manager.rds.route_config_name.startswith("https.8443.")


def test_server_port_of_the_gateway_service_listens_on_its_target_port() -> None:
    # As istiod: a non-root gateway Deployment exposes 80 through its Service's targetPort 8080.
    ingress = service(
        "istio-ingressgateway",
        GW_NS,
        cluster_ip="10.96.0.99",
        selector=LABELS,
        ports=[service_port("http2", 80, target_port=8080)],
    )
    ctx = mesh(ingress, gateway(http(80)), virtual_service())
    (chain,) = listener(ctx, "0.0.0.0_8080").filter_chains
    assert rds_name(chain) == "http.8080"
    (vh,) = route_config(ctx, "http.8080").virtual_hosts
    assert clusters_of(vh) == [HELLO]


# -- route names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "name"),
    [
        (http(80), "http.80"),
        (http(8080, bind="10.0.0.1"), "http.8080.10.0.0.1"),
        (https(443, name="https-main"), "https.443.https-main.web-gw.istio-system"),
        (
            {**https(8443, name="s"), "bind": "10.0.0.1"},
            "https.8443.s.web-gw.istio-system.10.0.0.1",
        ),
        (
            {
                "port": {"number": 9443, "name": "tls", "protocol": "TLS"},
                "hosts": ["*"],
                "tls": {"mode": "PASSTHROUGH"},
            },
            "",
        ),
    ],
)
def test_route_names_as_istiod(server: Raw, name: str) -> None:
    gw = parse_gateway(gateway(server))
    assert gateway_route_name(gw, gw.servers[0], gw.servers[0].port) == name


def test_http_servers_of_two_gateways_on_one_port_share_a_route_config() -> None:
    ctx = mesh(
        gateway(http(hosts=("a.example.com",)), name="a"),
        gateway(http(hosts=("b.example.com",)), name="b"),
        virtual_service("va", hosts=("a.example.com",), gateways=(f"{GW_NS}/a",)),
        virtual_service("vb", hosts=("b.example.com",), gateways=(f"{GW_NS}/b",)),
    )
    (chain,) = listener(ctx, "0.0.0.0_80").filter_chains
    assert rds_name(chain) == "http.80"
    config = route_config(ctx, "http.80")
    assert set(vhosts(config)) == {"a.example.com:80", "b.example.com:80"}


# -- routes: binding VirtualServices ---------------------------------------------------------------


def test_route_config_shape() -> None:
    ctx = mesh(gateway(http()), virtual_service())
    config = route_config(ctx, "http.80")
    assert config.name == "http.80"
    assert config.validate_clusters.value is False
    assert config.ignore_port_in_host_matching is True
    (vh,) = config.virtual_hosts
    assert vh.name == "hello.example.com:80"
    assert list(vh.domains) == ["hello.example.com"]
    assert vh.include_request_attempt_count is True
    assert vh.require_tls == rc.VirtualHost.NONE
    assert clusters_of(vh) == [HELLO]


def test_virtual_service_binds_by_short_name_in_the_gateway_namespace() -> None:
    ctx = mesh(
        gateway(http()),
        virtual_service("local", namespace=GW_NS, hosts=("a.example.com",), gateways=("web-gw",)),
        # A short name means a Gateway in the VirtualService's own namespace: not this one.
        virtual_service("elsewhere", hosts=("b.example.com",), gateways=("web-gw",)),
    )
    assert set(vhosts(route_config(ctx, "http.80"))) == {"a.example.com:80"}


def test_virtual_service_binds_by_namespace_and_name() -> None:
    ctx = mesh(
        gateway(http()),
        virtual_service("other", hosts=("a.example.com",), gateways=("other-ns/web-gw",)),
        virtual_service("bound", hosts=("b.example.com",), gateways=(f"{GW_NS}/web-gw",)),
        virtual_service("mesh-only", hosts=("c.example.com",), gateways=("mesh",)),
        virtual_service("none", hosts=("d.example.com",), gateways=()),
    )
    assert set(vhosts(route_config(ctx, "http.80"))) == {"b.example.com:80"}


def test_virtual_service_for_mesh_and_gateway_serves_both() -> None:
    ctx = mesh(gateway(http()), virtual_service(gateways=("mesh", f"{GW_NS}/web-gw")))
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert clusters_of(vh) == [HELLO]


def test_short_virtual_service_host_is_resolved_in_its_namespace() -> None:
    ctx = mesh(gateway(http()), virtual_service(hosts=("hello",)))
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert list(vh.domains) == ["hello.web.svc.cluster.local"]
    assert vh.name == "hello.web.svc.cluster.local:80"


def test_server_host_namespace_restricts_which_virtual_services_bind() -> None:
    ctx = mesh(
        gateway(http(hosts=("web/hello.example.com", "./own.example.com"))),
        virtual_service("from-web", namespace="web", hosts=("hello.example.com",)),
        virtual_service("from-shop", namespace="shop", hosts=("hello.example.com",)),
        virtual_service("own-ok", namespace=GW_NS, hosts=("own.example.com",)),
        virtual_service("own-bad", namespace="web", hosts=("own.example.com",)),
    )
    found = vhosts(route_config(ctx, "http.80"))
    assert set(found) == {"hello.example.com:80", "own.example.com:80"}
    # One route each: only the VirtualService from the allowed namespace bound.
    assert len(found["hello.example.com:80"].routes) == 1
    assert len(found["own.example.com:80"].routes) == 1


def test_tilde_namespace_binds_no_virtual_service() -> None:
    ctx = mesh(gateway(http(hosts=("~/hello.example.com",))), virtual_service())
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert vh.name == "blackhole:80"


@pytest.mark.parametrize(
    ("server_hosts", "vs_hosts", "domains"),
    [
        pytest.param(("*.example.com",), ("a.example.com",), {"a.example.com"}, id="server-wild"),
        pytest.param(("a.example.com",), ("*.example.com",), {"a.example.com"}, id="vs-wild"),
        pytest.param(("*",), ("a.example.com",), {"a.example.com"}, id="server-star"),
        pytest.param(("a.example.com",), ("*",), {"a.example.com"}, id="vs-star"),
        pytest.param(
            ("*.example.com",), ("*.a.example.com",), {"*.a.example.com"}, id="nested-wild"
        ),
        pytest.param(("*.example.com",), ("*",), {"*.example.com"}, id="star-and-wild"),
        pytest.param(
            ("a.example.com", "b.example.com"),
            ("*.example.com",),
            {"a.example.com", "b.example.com"},
            id="one-vs-two-server-hosts",
        ),
    ],
)
def test_virtual_host_is_the_intersection_of_server_and_vs_hosts(
    server_hosts: tuple[str, ...], vs_hosts: tuple[str, ...], domains: set[str]
) -> None:
    ctx = mesh(gateway(http(hosts=server_hosts)), virtual_service(hosts=vs_hosts))
    config = route_config(ctx, "http.80")
    assert {d for vh in config.virtual_hosts for d in vh.domains} == domains
    for vh in config.virtual_hosts:
        assert clusters_of(vh) == [HELLO]
        assert vh.name == f"{vh.domains[0]}:80"


@pytest.mark.parametrize(
    ("server_host", "vs_host"),
    [
        ("a.example.com", "b.example.com"),
        ("*.example.com", "example.com"),
        ("*.example.com", "a.example.org"),
        ("*.a.example.com", "b.example.com"),
    ],
)
def test_hosts_that_do_not_intersect_bind_nothing(server_host: str, vs_host: str) -> None:
    ctx = mesh(gateway(http(hosts=(server_host,))), virtual_service(hosts=(vs_host,)))
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert vh.name == "blackhole:80"


def test_two_virtual_services_for_one_host_merge_with_the_catch_all_last() -> None:
    ctx = mesh(
        service("api", "web", cluster_ip="10.96.1.11"),
        service("static", "web", cluster_ip="10.96.1.12"),
        gateway(http()),
        # `a-site` sorts first and ends with a catch-all ...
        virtual_service(
            "a-site", http_routes=[route_to("static", "/static"), route_to("hello", name="rest")]
        ),
        # ... that must not shadow `b-api`'s specific route.
        virtual_service("b-api", http_routes=[route_to("api", "/api")]),
    )
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert prefixes(vh) == ["/static", "/api", "/"]
    assert clusters_of(vh) == [
        outbound_cluster("static", 80, "web"),
        outbound_cluster("api", 80, "web"),
        HELLO,
    ]
    assert vh.routes[-1].name == "rest"


def test_a_route_with_headers_is_not_a_catch_all() -> None:
    ctx = mesh(
        service("canary", "web", cluster_ip="10.96.1.13"),
        gateway(http()),
        virtual_service(
            "a",
            http_routes=[
                {
                    "match": [{"uri": {"prefix": "/"}, "headers": {"x-canary": {"exact": "1"}}}],
                    "route": [{"destination": {"host": "canary"}}],
                },
                route_to("hello"),
            ],
        ),
        virtual_service("b", http_routes=[route_to("hello", "/b")]),
    )
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    # The header route keeps its place ahead of the other VirtualService; the bare `/` goes last.
    assert clusters_of(vh) == [outbound_cluster("canary", 80, "web"), HELLO, HELLO]
    assert prefixes(vh) == ["/", "/b", "/"]
    assert vh.routes[0].match.headers


def test_virtual_service_routes_apply_on_both_http_and_https(pair: KeyPair) -> None:
    ctx = mesh(gateway(http(), https()), virtual_service(), tls_secret("hello-cert", GW_NS, pair))
    for name, port in (("http.80", 80), ("https.443.https-443.web-gw.istio-system", 443)):
        (vh,) = route_config(ctx, name).virtual_hosts
        assert vh.name == f"hello.example.com:{port}"
        assert clusters_of(vh) == [HELLO]


def test_https_route_only_covers_its_server_hosts(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(
            https(hosts=("a.example.com",), name="a"), https(hosts=("b.example.com",), name="b")
        ),
        virtual_service(hosts=("a.example.com", "b.example.com")),
        tls_secret("hello-cert", GW_NS, pair),
    )
    a = route_config(ctx, "https.443.a.web-gw.istio-system")
    b = route_config(ctx, "https.443.b.web-gw.istio-system")
    assert [vh.name for vh in a.virtual_hosts] == ["a.example.com:443"]
    assert [vh.name for vh in b.virtual_hosts] == ["b.example.com:443"]


def test_virtual_service_without_http_routes_binds_nothing_on_http() -> None:
    vs = virtual_service(http_routes=[])
    vs["spec"]["tcp"] = [{"route": [{"destination": {"host": "hello"}}]}]
    ctx = mesh(gateway(http()), vs)
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert vh.name == "blackhole:80"


def test_no_virtual_service_gives_a_blackhole_vhost() -> None:
    ctx = mesh(gateway(http(8080)))
    config = route_config(ctx, "http.8080")
    (vh,) = config.virtual_hosts
    assert vh.name == "blackhole:8080"
    assert list(vh.domains) == ["*"]
    # No route: Envoy answers 404 to everything.
    assert not vh.routes


def test_virtual_hosts_are_sorted_by_name() -> None:
    ctx = mesh(
        gateway(http()),
        virtual_service("z", hosts=("z.example.com",)),
        virtual_service("a", hosts=("a.example.com",)),
        virtual_service("m", hosts=("m.example.com",)),
    )
    names = [vh.name for vh in route_config(ctx, "http.80").virtual_hosts]
    assert names == sorted(names) and len(names) == 3


# -- httpsRedirect -------------------------------------------------------------------------------


def test_https_redirect_with_a_virtual_service_requires_tls_on_its_vhost() -> None:
    ctx = mesh(
        gateway(http(hosts=("hello.example.com",), tls={"httpsRedirect": True})),
        virtual_service(),
    )
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert vh.name == "hello.example.com:80"
    assert vh.require_tls == rc.VirtualHost.ALL
    # The routes are still there (Envoy redirects before routing).
    assert clusters_of(vh) == [HELLO]


def test_https_redirect_without_a_virtual_service_still_redirects() -> None:
    ctx = mesh(
        gateway(
            http(hosts=("web/secure.example.com", "plain.example.com"), tls={"httpsRedirect": True})
        )
    )
    found = vhosts(route_config(ctx, "http.80"))
    assert set(found) == {"secure.example.com:80", "plain.example.com:80"}
    for vh in found.values():
        assert vh.require_tls == rc.VirtualHost.ALL
        assert list(vh.domains) == [vh.name.rsplit(":", 1)[0]]
        assert vh.include_request_attempt_count is True
        assert not vh.routes


def test_https_redirect_applies_only_to_its_own_server() -> None:
    ctx = mesh(
        gateway(http(80, hosts=("a.example.com",), tls={"httpsRedirect": True}), name="redirect"),
        gateway(http(80, hosts=("b.example.com",)), name="plain"),
        virtual_service("va", hosts=("a.example.com",), gateways=(f"{GW_NS}/redirect",)),
        virtual_service("vb", hosts=("b.example.com",), gateways=(f"{GW_NS}/plain",)),
    )
    found = vhosts(route_config(ctx, "http.80"))
    assert found["a.example.com:80"].require_tls == rc.VirtualHost.ALL
    assert found["b.example.com:80"].require_tls == rc.VirtualHost.NONE


# -- servers left out --------------------------------------------------------------------------


def test_missing_secret_leaves_the_server_out_and_warns(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(
            http(),
            https(443, hosts=("hello.example.com",), name="good"),
            https(443, hosts=("broken.example.com",), name="broken", credential="no-such"),
            https(8443, hosts=("alone.example.com",), name="alone", credential="also-missing"),
        ),
        virtual_service(),
        tls_secret("hello-cert", GW_NS, pair),
    )
    found = listeners(ctx, router())
    # The listener of a port with nothing left to serve is not built at all ...
    assert set(found) == {"0.0.0.0_80", "0.0.0.0_443"}
    # ... and a port with a good server keeps serving it.
    (chain,) = found["0.0.0.0_443"].filter_chains
    assert list(chain.filter_chain_match.server_names) == ["hello.example.com"]
    assert set(routes(ctx, router())) == {"http.80", "https.443.good.web-gw.istio-system"}
    warnings = [w for w in ctx.reference_warnings() if w.object == f"Gateway {GW_NS}/web-gw"]
    assert [(w.field, "no-such" in w.message) for w in warnings] == [
        ("spec.servers[2].tls.credentialName", True),
        ("spec.servers[3].tls.credentialName", False),
    ]
    assert "also-missing" in warnings[1].message


def test_no_warning_when_the_secret_exists(pair: KeyPair) -> None:
    ctx = mesh(gateway(https()), tls_secret("hello-cert", GW_NS, pair))
    assert not [w for w in ctx.reference_warnings() if w.object.startswith("Gateway")]


def test_secret_must_be_in_the_proxy_namespace(pair: KeyPair) -> None:
    # A Secret next to the Gateway object but not next to the proxy is not the proxy's to read.
    ctx = mesh(gateway(https(), namespace="web"), tls_secret("hello-cert", "web", pair))
    assert listeners(ctx, router()) == {}
    ctx = mesh(gateway(https(), namespace="web"), tls_secret("hello-cert", GW_NS, pair))
    assert set(listeners(ctx, router())) == {"0.0.0.0_443"}


def test_ca_only_secret_cannot_serve_a_certificate(ca: CertificateAuthority) -> None:
    ca_only = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hello-cert", "namespace": GW_NS},
        "stringData": {"ca.crt": ca.cert_pem.decode()},
    }
    ctx = mesh(gateway(https()), ca_only)
    assert listeners(ctx, router()) == {}


def test_mutual_needs_a_ca_from_the_secret_or_a_cacert_secret(
    ca: CertificateAuthority, pair: KeyPair
) -> None:
    without_ca = mesh(gateway(https(mode="MUTUAL")), tls_secret("hello-cert", GW_NS, pair))
    assert listeners(without_ca, router()) == {}
    cacert = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hello-cert-cacert", "namespace": GW_NS},
        "data": {"ca.crt": base64.b64encode(ca.cert_pem).decode()},
    }
    separate = mesh(gateway(https(mode="MUTUAL")), tls_secret("hello-cert", GW_NS, pair), cacert)
    assert set(listeners(separate, router())) == {"0.0.0.0_443"}
    # A CA alone is not enough: the server still needs its certificate and key.
    assert listeners(mesh(gateway(https(mode="MUTUAL")), cacert), router()) == {}


def test_sni_collision_leaves_the_second_server_out(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(https(hosts=("hello.example.com",), name="first"), name="a"),
        gateway(https(hosts=("other.example.com", "hello.example.com"), name="second"), name="b"),
        gateway(https(hosts=("third.example.com",), name="third"), name="c"),
        tls_secret("hello-cert", GW_NS, pair),
    )
    lis = listener(ctx, "0.0.0.0_443")
    assert [rds_name(c) for c in lis.filter_chains] == [
        "https.443.first.a.istio-system",
        "https.443.third.c.istio-system",
    ]
    assert [list(c.filter_chain_match.server_names) for c in lis.filter_chains] == [
        ["hello.example.com"],
        ["third.example.com"],
    ]


def test_two_wildcard_https_servers_on_one_port_collide(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(https(hosts=("*",), name="one"), https(hosts=("*",), name="two")),
        tls_secret("hello-cert", GW_NS, pair),
    )
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    assert rds_name(chain) == "https.443.one.web-gw.istio-system"


def test_same_sni_on_different_ports_is_fine(pair: KeyPair) -> None:
    ctx = mesh(gateway(https(443), https(8443)), tls_secret("hello-cert", GW_NS, pair))
    assert set(listeners(ctx, router())) == {"0.0.0.0_443", "0.0.0.0_8443"}


@pytest.mark.parametrize("http_first", [True, False], ids=["http-first", "https-first"])
def test_http_and_https_on_one_port_the_later_kind_is_left_out(
    pair: KeyPair, http_first: bool
) -> None:
    # Gateways are taken in namespace/name order: `a` before `b`.
    plain = gateway(http(9000, hosts=("plain.example.com",)), name="a" if http_first else "b")
    secure = gateway(
        https(9000, hosts=("hello.example.com",), name="s"), name="b" if http_first else "a"
    )
    ctx = mesh(plain, secure, tls_secret("hello-cert", GW_NS, pair))
    lis = listener(ctx, "0.0.0.0_9000")
    (chain,) = lis.filter_chains
    names = set(routes(ctx, router()))
    if http_first:
        assert rds_name(chain) == "http.9000"
        assert not lis.listener_filters and not chain.HasField("transport_socket")
        assert names == {"http.9000"}
    else:
        assert rds_name(chain) == "https.9000.s.a.istio-system"
        assert [f.name for f in lis.listener_filters] == [INSPECTOR]
        assert names == {"https.9000.s.a.istio-system"}


def test_bound_servers_by_listener(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(http(), https(), https(443, hosts=("x.example.com",), name="x", credential="nope")),
        tls_secret("hello-cert", GW_NS, pair),
    )
    found = bound_servers(ctx, GW_NS, LABELS)
    assert {key: [b.route_name for b in bound] for key, bound in found.items()} == {
        ("0.0.0.0", 80): ["http.80"],
        ("0.0.0.0", 443): ["https.443.https-443.web-gw.istio-system"],
    }
    assert bound_servers(ctx, GW_NS, {"istio": "other"}) == {}
    # Another namespace's proxy has no Secret: only the plain server.
    assert set(bound_servers(ctx, "other-ns", LABELS)) == {("0.0.0.0", 80)}


def test_a_router_without_matching_labels_gets_no_gateway_config() -> None:
    from istiolite.model.proxy import parse_proxy

    ctx = mesh(gateway(http()), virtual_service())
    egress = parse_proxy(
        f"router~10.1.0.201~egress.{GW_NS}~{GW_NS}.svc.cluster.local",
        {"LABELS": {"istio": "egressgateway"}},
    )
    assert listeners(ctx, egress) == {}
    assert listeners(ctx, router()) != {}


# -- known gaps (istiod does otherwise) ------------------------------------------------------------


# BUG (istiolite/model/virtualservice.py `_match` ignores `match[].gateways`, and
# istiolite/networking/http_route.py `_applies` never filters by it): a VirtualService bound to
# both `mesh` and a Gateway, whose route is restricted with `match: [{gateways: [mesh]}]`, has
# that mesh-only route served at the ingress gateway too. istiod drops a match whose `gateways`
# does not name the gateway being built (and on sidecars, one that does not name `mesh`).
def test_match_gateways_keeps_mesh_only_routes_off_the_gateway() -> None:
    ctx = mesh(
        service("internal", "web", cluster_ip="10.96.1.14"),
        gateway(http()),
        virtual_service(
            gateways=("mesh", f"{GW_NS}/web-gw"),
            http_routes=[
                {
                    "match": [{"uri": {"prefix": "/admin"}, "gateways": ["mesh"]}],
                    "route": [{"destination": {"host": "internal"}}],
                },
                route_to("hello"),
            ],
        ),
    )
    (vh,) = route_config(ctx, "http.80").virtual_hosts
    assert clusters_of(vh) == [HELLO]


# BUG (istiolite/push/context.py `reference_warnings`): the credentialName check looks for the
# Secret in the *Gateway object's* namespace, but the proxy reads it from its *own* namespace
# (networking/gateway.py `_credential_ready`, as istiod). A Gateway kept in an application
# namespace that selects the shared istio-system ingress, with its Secret correctly in
# istio-system, gets a false "Secret not found in namespace 'web' ... left out" warning while the
# server is in fact served. istioctl's analyzer (IST0101 for gateway secrets) looks in the
# namespaces of the pods the selector picks.
def test_secret_warning_looks_where_the_gateway_proxy_is(pair: KeyPair) -> None:
    ctx = mesh(
        pod("ingress-1", GW_NS, ip="10.1.0.200", labels=LABELS),
        gateway(https(), namespace="web"),
        tls_secret("hello-cert", GW_NS, pair),
    )
    assert set(listeners(ctx, router())) == {"0.0.0.0_443"}  # the server is served ...
    assert not [w for w in ctx.reference_warnings() if w.object.startswith("Gateway")]


# GAP (istiolite/push/context.py `reference_warnings` vs networking/gateway.py
# `_credential_ready`): a MUTUAL server whose Secret exists but has no ca.crt (and no
# `<name>-cacert` Secret), or a Secret without a certificate and key, is silently left out of
# the listener: no warning says why the port is gone.
def test_unusable_credential_is_warned_about(pair: KeyPair) -> None:
    ctx = mesh(gateway(https(mode="MUTUAL")), tls_secret("hello-cert", GW_NS, pair))
    assert listeners(ctx, router()) == {}
    assert [w.field for w in ctx.reference_warnings() if w.object.startswith("Gateway")] == [
        "spec.servers[0].tls.credentialName"
    ]


# BUG (istiolite/networking/gateway.py: the SNI dedupe now lives in `gateway_listeners`, after
# `bound_servers`): a server left out for a duplicate SNI still gets its own RouteConfiguration
# from `gateway_route_configs`, which no listener references (it shows in `render` and
# proxy-config output as if served). istiod drops the server in MergeGateways, before route
# names exist, so it has no RDS resource.
def test_a_server_left_out_for_its_sni_has_no_route_config(pair: KeyPair) -> None:
    ctx = mesh(
        gateway(https(hosts=("hello.example.com",), name="first"), name="a"),
        gateway(https(hosts=("hello.example.com",), name="second"), name="b"),
        tls_secret("hello-cert", GW_NS, pair),
    )
    referenced = {rds_name(c) for c in listener(ctx, "0.0.0.0_443").filter_chains}
    assert referenced == {"https.443.first.a.istio-system"}
    assert set(routes(ctx, router())) == referenced


def test_credential_names_serve_every_certificate(ca: CertificateAuthority, pair: KeyPair) -> None:
    # Two certificates (e.g. RSA and ECDSA) for one server: Envoy picks per client hello.
    second = ca.issue("hello.example.com", dns=("hello.example.com",))
    server = https(credential="", credentialNames=["hello-cert", "hello-ec"])
    ctx = mesh(
        gateway(server),
        virtual_service(),
        tls_secret("hello-cert", GW_NS, pair),
        tls_secret("hello-ec", GW_NS, second),
    )
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    names = [
        s.name for s in downstream(chain).common_tls_context.tls_certificate_sds_secret_configs
    ]
    assert names == ["kubernetes://hello-cert", "kubernetes://hello-ec"]
    # One of the two missing: the server is left out, with a warning naming the Secret.
    ctx = mesh(gateway(server), virtual_service(), tls_secret("hello-cert", GW_NS, pair))
    assert listeners(ctx, router()) == {}
    assert any("hello-ec" in w.message for w in ctx.reference_warnings())


def test_tls_certificates_files_and_their_validation() -> None:
    files = [
        {"serverCertificate": "/etc/certs/rsa.pem", "privateKey": "/etc/certs/rsa.key"},
        {"serverCertificate": "/etc/certs/ec.pem", "privateKey": "/etc/certs/ec.key"},
    ]
    ctx = mesh(gateway(https(credential="", tlsCertificates=files)), virtual_service())
    (chain,) = listener(ctx, "0.0.0.0_443").filter_chains
    certs = downstream(chain).common_tls_context.tls_certificate_sds_secret_configs
    assert [c.name for c in certs] == [
        "file-cert:/etc/certs/rsa.pem~/etc/certs/rsa.key",
        "file-cert:/etc/certs/ec.pem~/etc/certs/ec.key",
    ]
    both = https(credential="a", credentialNames=["b"])
    with pytest.raises(ValueError, match=r"spec.servers\[0\].tls.credentialNames"):
        parse_gateway(gateway(both))
    mixed = https(
        credential="", serverCertificate="/c.pem", privateKey="/k.pem", tlsCertificates=files
    )
    with pytest.raises(ValueError, match=r"spec.servers\[0\].tls.tlsCertificates"):
        parse_gateway(gateway(mixed))
