"""Istio mutual TLS on outbound clusters, as istiod's buildAutoMtlsSettings decides it.

- A DestinationRule `tls.mode: ISTIO_MUTUAL` (top, subset or port level, already merged into
  the policy): the cluster's transport socket is mutual TLS with the mesh certificates; SNI and
  SANs are the rule's when given, else `outbound_.<port>_.<subset>_.<fqdn>` and the identities
  of the service's workloads.
- No TLS setting at all: auto mTLS, unless the service is outside the mesh (a MESH_EXTERNAL
  ServiceEntry, an ExternalName Service), passes connections through (headless, resolution
  NONE, loadBalancer PASSTHROUGH: istiod looks at every endpoint there; istiolite keeps such
  clusters plaintext), or the PeerAuthentication of its namespace (else the mesh's) is
  DISABLE. Endpoints then choose: `tlsMode: istio` metadata (endpoint.py) → mutual TLS, else
  plaintext.
- Any other TLS mode (DISABLE, SIMPLE, MUTUAL) is the user's, applied by traffic_policy.
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.cluster.v3 import cluster_pb2

from istiolite.model.destinationrule import TrafficPolicy
from istiolite.model.peerauthentication import MtlsMode
from istiolite.model.service import Service, ServicePort
from istiolite.networking.mtls import auto_mtls_matches, istio_mutual_upstream, sni_name
from istiolite.networking.tls_context import transport_socket
from istiolite.networking.traffic_policy import HTTP_OPTIONS_KEY, HttpProtocolOptions
from istiolite.push.context import PushContext

Cluster: TypeAlias = cluster_pb2.Cluster


def _is_http2(cluster: Cluster) -> bool:
    if HTTP_OPTIONS_KEY not in cluster.typed_extension_protocol_options:
        return False
    options = HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(options)
    return bool(options.explicit_http_config.HasField("http2_protocol_options"))


def auto_mtls_applies(ctx: PushContext, service: Service, cluster: Cluster) -> bool:
    if service.mesh_external or service.type == "ExternalName":
        return False
    if cluster.type == Cluster.ORIGINAL_DST:
        return False
    return ctx.namespace_mtls_mode(service.namespace) != MtlsMode.DISABLE


def apply_istio_mtls(
    ctx: PushContext,
    cluster: Cluster,
    service: Service,
    port: ServicePort,
    subset: str,
    policy: TrafficPolicy | None,
    *,
    auto_mtls: bool = True,
) -> None:
    """Give a freshly built outbound cluster its mesh TLS (see module doc). `auto_mtls` False:
    the proxy has no mesh certificate, so only an explicit ISTIO_MUTUAL is applied."""
    tls = policy.tls if policy is not None else None
    host = ctx.hostname(service)
    default_sni = sni_name(port.port, subset, host)
    if tls is not None:
        if tls.mode != "ISTIO_MUTUAL":
            return
        sans = tls.subject_alt_names or ctx.service_identities(service)
        context = istio_mutual_upstream(sans, tls.sni or default_sni, http2=_is_http2(cluster))
        cluster.transport_socket.CopyFrom(transport_socket(context))
        return
    if not auto_mtls or not auto_mtls_applies(ctx, service, cluster):
        return
    context = istio_mutual_upstream(
        ctx.service_identities(service), default_sni, http2=_is_http2(cluster)
    )
    cluster.transport_socket_matches.extend(auto_mtls_matches(context))
