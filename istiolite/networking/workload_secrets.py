"""SDS for workload identities: `default` (the proxy's certificate chain and private key) and
`ROOTCA` (the mesh trust bundle), named exactly as istiod names them, so listeners and clusters
that reference them over ADS (`sds_config: {ads: {}}`) work as they do with Istio.

These resources are per identity: they are built here from an issued certificate and kept by
the xDS layer (xds/workload_certs.py) for the streams of that identity only, never in the shared
ResourceCache, whose entries any proxy may be served and any debug page may show.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from istiolite import type_urls
from istiolite.networking.resource import Resource, to_resource
from istiolite.security.authority import IssuedCertificate

DEFAULT = "default"
ROOTCA = "ROOTCA"
WORKLOAD_SECRET_NAMES = frozenset({DEFAULT, ROOTCA})


def default_secret(issued: IssuedCertificate) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=DEFAULT,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=issued.chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=issued.key_pem),
        ),
    )


def root_ca_secret(bundle: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=ROOTCA,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=bundle)
        ),
    )


def default_resource(issued: IssuedCertificate) -> Resource:
    return to_resource(DEFAULT, type_urls.SECRET, default_secret(issued))


def root_ca_resource(bundle: bytes) -> Resource:
    return to_resource(ROOTCA, type_urls.SECRET, root_ca_secret(bundle))
