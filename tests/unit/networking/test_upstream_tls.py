"""DestinationRule `trafficPolicy.tls` → the cluster's TLS transport socket, field by field as
istiod's buildUpstreamClusterTLSContext writes it (files named through SDS as `file-cert:` and
`file-root:` secrets, which name the files Envoy reads)."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from istiolite.model.destinationrule import parse_destination_rule
from istiolite.model.protocol import Protocol
from istiolite.networking.traffic_policy import (
    SYSTEM_CA_BUNDLE,
    TLS_TRANSPORT_SOCKET,
    apply_traffic_policy,
)
from tests.support.objects import context, hostname, service, service_port
from tests.unit.networking.helpers import clusters, sidecar

Cluster = cluster_pb2.Cluster
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_PARAMS = {"tlsMinimumProtocolVersion": "TLSv1_2", "tlsMaximumProtocolVersion": "TLSv1_3"}
ADS = {"ads": {}, "resourceApiVersion": "V3"}


def dr_raw(spec: dict[str, Any], host: str = "db") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"host": host, **spec},
    }


def applied(
    tls: dict[str, Any], protocol: Protocol = Protocol.HTTP, extra: dict[str, Any] | None = None
) -> Cluster:
    policy = parse_destination_rule(
        dr_raw({"trafficPolicy": {"tls": tls, **(extra or {})}})
    ).policy_for("", 80)
    cluster = Cluster(name="c", type=Cluster.EDS, lb_policy=Cluster.LEAST_REQUEST)
    apply_traffic_policy(cluster, policy, protocol)
    return cluster


def tls_context(cluster: Cluster) -> dict[str, Any]:
    assert cluster.transport_socket.name == TLS_TRANSPORT_SOCKET
    assert cluster.transport_socket.typed_config.type_url == (
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    )
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    return json_format.MessageToDict(context)


def http_options(cluster: Cluster) -> dict[str, Any] | None:
    if HTTP_OPTIONS not in cluster.typed_extension_protocol_options:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    return json_format.MessageToDict(options)


def root(path: str, **default: Any) -> dict[str, Any]:
    """A combined validation context: SAN checks (and CRL) here, the CA from `file-root:`."""
    return {
        "defaultValidationContext": default,
        "validationContextSdsSecretConfig": {"name": f"file-root:{path}", "sdsConfig": ADS},
    }


def sans(*names: str) -> list[dict[str, Any]]:
    return [
        {"sanType": san_type, "matcher": {"exact": name}}
        for name in names
        for san_type in ("DNS", "URI", "EMAIL", "IP_ADDRESS")
    ]


def test_simple_with_ca_and_sni() -> None:
    cluster = applied({"mode": "SIMPLE", "caCertificates": "/etc/ca.pem", "sni": "db.example"})
    assert tls_context(cluster) == {
        "commonTlsContext": {
            "tlsParams": TLS_PARAMS,
            "combinedValidationContext": root("/etc/ca.pem"),
        },
        "sni": "db.example",
    }
    # An explicit SNI: no auto_sni, so no protocol options are added for TLS.
    assert http_options(cluster) is None


def test_without_sni_envoy_takes_it_from_the_host_and_checks_the_certificate_against_it() -> None:
    cluster = applied({"mode": "SIMPLE", "caCertificates": "/etc/ca.pem"})
    assert "sni" not in tls_context(cluster)
    assert http_options(cluster) == {
        "upstreamHttpProtocolOptions": {"autoSni": True, "autoSanValidation": True},
        # Envoy needs an upstream protocol in these options; istiod says HTTP/1.1.
        "explicitHttpConfig": {"httpProtocolOptions": {}},
    }


def test_subject_alt_names_match_any_san_type_exactly() -> None:
    cluster = applied(
        {"mode": "SIMPLE", "caCertificates": "/ca.pem", "subjectAltNames": ["db.example", "x"]}
    )
    validation = tls_context(cluster)["commonTlsContext"]["combinedValidationContext"]
    assert validation == root("/ca.pem", matchTypedSubjectAltNames=sans("db.example", "x"))
    # SANs given: the Host-derived SNI is still automatic, its SAN check is not.
    assert http_options(cluster) == {
        "upstreamHttpProtocolOptions": {"autoSni": True},
        "explicitHttpConfig": {"httpProtocolOptions": {}},
    }


def test_no_ca_means_the_system_roots() -> None:
    validation = tls_context(applied({"mode": "SIMPLE", "sni": "a"}))["commonTlsContext"]
    assert validation["combinedValidationContext"] == root(SYSTEM_CA_BUNDLE)


def test_insecure_skip_verify_leaves_an_empty_validation_context() -> None:
    cluster = applied({"mode": "SIMPLE", "insecureSkipVerify": True})
    assert tls_context(cluster)["commonTlsContext"] == {
        "tlsParams": TLS_PARAMS,
        "validationContext": {},
    }
    assert http_options(cluster) == {
        "upstreamHttpProtocolOptions": {"autoSni": True},
        "explicitHttpConfig": {"httpProtocolOptions": {}},
    }


def test_mutual_with_files_and_crl() -> None:
    cluster = applied(
        {
            "mode": "MUTUAL",
            "clientCertificate": "/certs/client.pem",
            "privateKey": "/certs/client.key",
            "caCertificates": "/certs/ca.pem",
            "caCrl": "/certs/ca.crl",
            "subjectAltNames": ["db"],
            "sni": "db",
        }
    )
    assert tls_context(cluster) == {
        "commonTlsContext": {
            "tlsParams": TLS_PARAMS,
            "tlsCertificateSdsSecretConfigs": [
                {"name": "file-cert:/certs/client.pem~/certs/client.key", "sdsConfig": ADS}
            ],
            "combinedValidationContext": root(
                "/certs/ca.pem",
                matchTypedSubjectAltNames=sans("db"),
                crl={"filename": "/certs/ca.crl"},
            ),
        },
        "sni": "db",
    }


def test_mutual_insecure_still_presents_the_client_certificate() -> None:
    common = tls_context(
        applied(
            {
                "mode": "MUTUAL",
                "clientCertificate": "/c.pem",
                "privateKey": "/k.pem",
                "insecureSkipVerify": True,
                "sni": "s",
            }
        )
    )["commonTlsContext"]
    assert common["tlsCertificateSdsSecretConfigs"][0]["name"] == "file-cert:/c.pem~/k.pem"
    assert common["validationContext"] == {}


def test_credential_name_simple_fetches_only_the_ca_over_ads() -> None:
    context = tls_context(
        applied(
            {"mode": "SIMPLE", "credentialName": "db-ca", "sni": "db", "subjectAltNames": ["db"]}
        )
    )
    assert context["commonTlsContext"] == {
        "tlsParams": TLS_PARAMS,
        "combinedValidationContext": {
            "defaultValidationContext": {"matchTypedSubjectAltNames": sans("db")},
            "validationContextSdsSecretConfig": {
                "name": "kubernetes://db-ca-cacert",
                "sdsConfig": ADS,
            },
        },
    }


def test_credential_name_mutual_fetches_key_and_ca_over_ads() -> None:
    cluster = applied({"mode": "MUTUAL", "credentialName": "db-client"})
    assert tls_context(cluster)["commonTlsContext"] == {
        "tlsParams": TLS_PARAMS,
        "tlsCertificateSdsSecretConfigs": [{"name": "kubernetes://db-client", "sdsConfig": ADS}],
        "combinedValidationContext": {
            "defaultValidationContext": {},
            "validationContextSdsSecretConfig": {
                "name": "kubernetes://db-client-cacert",
                "sdsConfig": ADS,
            },
        },
    }
    options = http_options(cluster)
    assert options is not None
    assert options["upstreamHttpProtocolOptions"] == {"autoSni": True, "autoSanValidation": True}


def test_credential_name_insecure_and_typed_names() -> None:
    common = tls_context(
        applied(
            {
                "mode": "MUTUAL",
                "credentialName": "kubernetes://other-ns/db-client",
                "insecureSkipVerify": True,
            }
        )
    )["commonTlsContext"]
    assert common == {
        "tlsParams": TLS_PARAMS,
        "tlsCertificateSdsSecretConfigs": [
            {"name": "kubernetes://other-ns/db-client", "sdsConfig": ADS}
        ],
    }


def test_disable_and_istio_mutual_add_no_transport_socket() -> None:
    for tls in ({"mode": "DISABLE"}, {}, {"mode": "ISTIO_MUTUAL"}):
        cluster = applied(tls)
        assert not cluster.HasField("transport_socket"), tls
        assert http_options(cluster) is None


def test_http2_clusters_advertise_h2() -> None:
    h2 = applied({"mode": "SIMPLE", "sni": "a"}, extra={"connectionPool": {"http": {}}})
    assert "alpnProtocols" not in tls_context(h2)["commonTlsContext"]
    upgraded = applied(
        {"mode": "SIMPLE", "sni": "a"},
        extra={"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}},
    )
    assert tls_context(upgraded)["commonTlsContext"]["alpnProtocols"] == ["h2"]


def test_clusters_get_the_tls_of_their_port_and_subset() -> None:
    db = service("db", ports=[service_port("tls", 5432), service_port("https-admin", 8443)])
    rule = dr_raw(
        {
            "trafficPolicy": {
                "tls": {"mode": "SIMPLE", "caCertificates": "/ca.pem", "sni": "db"},
                "portLevelSettings": [
                    {"port": {"number": 8443}, "tls": {"mode": "SIMPLE", "sni": "admin"}}
                ],
            },
            "subsets": [
                {
                    "name": "plain",
                    "labels": {"v": "0"},
                    "trafficPolicy": {"tls": {"mode": "DISABLE"}},
                },
                {"name": "v1", "labels": {"v": "1"}},
            ],
        }
    )
    found = clusters(context(db, rule), sidecar())
    host = hostname("db")
    assert tls_context(found[f"outbound|5432||{host}"])["sni"] == "db"
    assert tls_context(found[f"outbound|5432|v1|{host}"])["sni"] == "db"
    admin = tls_context(found[f"outbound|8443||{host}"])
    # The port-level tls replaced the whole tls: no CA from the top level, the system roots.
    assert admin["sni"] == "admin"
    assert admin["commonTlsContext"]["combinedValidationContext"] == root(SYSTEM_CA_BUNDLE)
    assert not found[f"outbound|5432|plain|{host}"].HasField("transport_socket")
    assert not found[f"outbound|8443|plain|{host}"].HasField("transport_socket")
    # A TCP port gets the same transport socket (TLS origination for any protocol).
    assert found[f"outbound|5432||{host}"].transport_socket.name == TLS_TRANSPORT_SOCKET


def test_grpc_port_keeps_http2_and_gets_alpn() -> None:
    api = service("api", ports=[service_port("grpc", 7070)])
    rule = dr_raw({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}}, host="api")
    cluster = clusters(context(api, rule), sidecar())[f"outbound|7070||{hostname('api')}"]
    assert tls_context(cluster)["commonTlsContext"]["alpnProtocols"] == ["h2"]
    options = http_options(cluster)
    assert options is not None
    assert options["explicitHttpConfig"] == {"http2ProtocolOptions": {}}
    assert options["upstreamHttpProtocolOptions"] == {"autoSni": True, "autoSanValidation": True}
