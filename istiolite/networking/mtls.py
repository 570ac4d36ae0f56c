"""Istio mutual TLS between sidecars: the TLS contexts istiod builds with the workload's own
certificate, SDS `default` (certificate chain and key), and the mesh trust bundle, SDS `ROOTCA`,
both over the ADS stream.

Outbound (istiod's buildIstioMutualTLS, buildAutoMtlsSettings): a DestinationRule `ISTIO_MUTUAL`
or, with no TLS setting at all, auto mTLS — a transport socket per endpoint, TLS to endpoints whose
metadata says `tlsMode: istio` (they have a sidecar), plaintext to the rest. Inbound
(BuildInboundTLS): TLS requiring a client certificate that chains to `ROOTCA`.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from istiolite.networking.tls_context import sds_config, transport_socket
from istiolite.networking.typed import bool_value, pack
from istiolite.push.context import ISTIO_TLS_MODE

# The workload's own certificate and the mesh trust bundle (DESIGN §3).
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
# Endpoint metadata auto mTLS matches on (istiod's EnvoyTransportSocketMetadataKey).
TRANSPORT_SOCKET_MATCH_KEY = "envoy.transport_socket_match"
TLS_MODE_KEY = "tlsMode"
RAW_BUFFER = "envoy.transport_sockets.raw_buffer"

# ALPN a client sidecar offers (istiod's ALPNInMeshWithMxc / ALPNInMeshH2WithMxc): "istio" tells
# a PERMISSIVE server this is mesh mTLS and not an application's own TLS.
ALPN_IN_MESH = ("istio-peer-exchange", "istio")
ALPN_IN_MESH_H2 = ("istio-peer-exchange", "istio", "h2")
# What a server sidecar's mTLS filter chains match (istiod's allIstioMtlsALPNs): the in-mesh ALPN,
# and istio-proxy's per-protocol rewrites (istio-http/1.1 …) that Istio's own sidecars send.
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
ALL_MTLS_ALPNS = ("istio", "istio-peer-exchange", *MTLS_HTTP_ALPNS)
# What the server's TLS context itself offers (ALPNDownstreamWithMxc for TCP, ALPNHttp for HTTP):
# never "istio", which would get in the way of negotiating HTTP/2.
DOWNSTREAM_ALPN_TCP = ("istio-peer-exchange", "h2", "http/1.1")
DOWNSTREAM_ALPN_HTTP = ("h2", "http/1.1")
# istiod's SupportedCiphers for sidecar servers.
SUPPORTED_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)


def sni_name(port: int, subset: str, host: str) -> str:
    """istiod's BuildDNSSrvSubsetKey: `outbound_.<port>_.<subset>_.<fqdn>`, the SNI a client
    sidecar sends and an AUTO_PASSTHROUGH gateway routes by."""
    return f"outbound_.{port}_.{subset}_.{host}"


def parse_sni_name(sni: str) -> tuple[int, str, str] | None:
    """(port, subset, host) of an `outbound_.` SNI name, None for anything else."""
    if not sni.startswith("outbound_."):
        return None
    parts = sni.removeprefix("outbound_.").split("_.", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1], parts[2]


def _uri_matchers(names: Sequence[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    # istiod's StringToExactMatch on the untyped field means any SAN type; SPIFFE IDs are URIs
    # and a ServiceEntry's subjectAltNames may be DNS names: match both kinds.
    return [
        common_pb2.SubjectAltNameMatcher(san_type=kind, matcher=string_pb2.StringMatcher(exact=n))
        for n in names
        for kind in (common_pb2.SubjectAltNameMatcher.URI, common_pb2.SubjectAltNameMatcher.DNS)
    ]


def istio_mutual_upstream(
    subject_alt_names: Sequence[str], sni: str, *, http2: bool = False
) -> tls_pb2.UpstreamTlsContext:
    """ISTIO_MUTUAL to an upstream sidecar: present `default`, verify against `ROOTCA` and the
    identities the service's workloads run as (any identity from the mesh root when none is
    known), SNI naming the cluster."""
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        ),
        alpn_protocols=ALPN_IN_MESH_H2 if http2 else ALPN_IN_MESH,
    )
    common.tls_certificate_sds_secret_configs.append(sds_config(WORKLOAD_SECRET))
    combined = common.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.extend(
        _uri_matchers(subject_alt_names)
    )
    combined.validation_context_sds_secret_config.CopyFrom(sds_config(ROOT_SECRET))
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


def raw_buffer_socket() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=RAW_BUFFER, typed_config=pack(raw_buffer_pb2.RawBuffer()))


def auto_mtls_matches(
    context: tls_pb2.UpstreamTlsContext,
) -> list[cluster_pb2.Cluster.TransportSocketMatch]:
    """istiod's auto mTLS sockets: endpoints with `tlsMode: istio` get mutual TLS, the rest
    (no sidecar, or a workload whose PeerAuthentication is DISABLE) plaintext."""
    istio = struct_pb2.Struct()
    istio.update({TLS_MODE_KEY: ISTIO_TLS_MODE})
    return [
        cluster_pb2.Cluster.TransportSocketMatch(
            name="tlsMode-istio", match=istio, transport_socket=transport_socket(context)
        ),
        cluster_pb2.Cluster.TransportSocketMatch(
            name="tlsMode-disabled", match=struct_pb2.Struct(), transport_socket=raw_buffer_socket()
        ),
    ]


def endpoint_mtls_metadata() -> base_pb2.Metadata:
    """The metadata of an endpoint that takes auto mTLS."""
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[TRANSPORT_SOCKET_MATCH_KEY].update({TLS_MODE_KEY: ISTIO_TLS_MODE})
    return metadata


def istio_mutual_downstream(*, http: bool) -> tls_pb2.DownstreamTlsContext:
    """Inbound mutual TLS (istiod's BuildInboundTLS): the workload's certificate, a client
    certificate required and verified against the mesh root."""
    common = tls_pb2.CommonTlsContext(
        alpn_protocols=DOWNSTREAM_ALPN_HTTP if http else DOWNSTREAM_ALPN_TCP,
        tls_params=common_pb2.TlsParameters(
            cipher_suites=SUPPORTED_CIPHERS,
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        ),
    )
    common.tls_certificate_sds_secret_configs.append(sds_config(WORKLOAD_SECRET))
    combined = common.combined_validation_context
    combined.default_validation_context.SetInParent()
    combined.validation_context_sds_secret_config.CopyFrom(sds_config(ROOT_SECRET))
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=common, require_client_certificate=bool_value(True)
    )


def istio_mutual_gateway(alpn: Sequence[str]) -> tls_pb2.DownstreamTlsContext:
    """A Gateway server with `tls.mode: ISTIO_MUTUAL`: the gateway's own mesh certificate,
    clients must present one from the mesh."""
    common = tls_pb2.CommonTlsContext(
        alpn_protocols=alpn,
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2
        ),
    )
    common.tls_certificate_sds_secret_configs.append(sds_config(WORKLOAD_SECRET))
    combined = common.combined_validation_context
    combined.default_validation_context.SetInParent()
    combined.validation_context_sds_secret_config.CopyFrom(sds_config(ROOT_SECRET))
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=common, require_client_certificate=bool_value(True)
    )
