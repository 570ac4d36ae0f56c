"""TLS contexts and the SDS references in them, shaped as istiod builds them."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from istiolite.model.server_tls import ServerTLS
from istiolite.networking.typed import ads_config_source, bool_value, pack

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
# Istio's names for credentials read from Kubernetes Secrets, served over ADS.
CREDENTIAL_PREFIX = "kubernetes://"
CA_SUFFIX = "-cacert"
# ... and for certificate files on the proxy's own disk, as istiod names them. Served over SDS
# (the Secret only names the files: Envoy reads them), so a missing file leaves that one secret
# unready instead of making Envoy refuse the whole CDS or LDS update that names it.
FILE_CERT_PREFIX = "file-cert:"
FILE_ROOT_PREFIX = "file-root:"
# What a listener terminating TLS for HTTP offers: HTTP/2 first, then HTTP/1.1.
HTTP_ALPN = ("h2", "http/1.1")

_VERSIONS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}


def credential_resource(name: str) -> str:
    return CREDENTIAL_PREFIX + name


def credential_ca_resource(name: str) -> str:
    return CREDENTIAL_PREFIX + name + CA_SUFFIX


def file_cert_resource(certificate: str, private_key: str) -> str:
    return f"{FILE_CERT_PREFIX}{certificate}~{private_key}"


def file_root_resource(ca_certificates: str) -> str:
    return FILE_ROOT_PREFIX + ca_certificates


def file_secret(name: str) -> secret_pb2.Secret | None:
    """The Secret a `file-cert:<cert>~<key>` or `file-root:<ca>` name stands for (None for any
    other name): it points Envoy at the files, and holds no key material itself."""
    if name.startswith(FILE_CERT_PREFIX):
        cert, sep, key = name[len(FILE_CERT_PREFIX) :].partition("~")
        if not sep or not cert or not key:
            return None
        return secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=_file(cert), private_key=_file(key)
            ),
        )
    if name.startswith(FILE_ROOT_PREFIX) and len(name) > len(FILE_ROOT_PREFIX):
        return secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=_file(name[len(FILE_ROOT_PREFIX) :])
            ),
        )
    return None


def server_file_resources(tls: ServerTLS) -> list[str]:
    """The file secrets a terminating server (Gateway, Sidecar ingress) names."""
    if tls.credential_names:
        return []
    names = [file_cert_resource(cert, key) for cert, key in tls.certificate_files]
    if tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and tls.ca_certificates:
        names.append(file_root_resource(tls.ca_certificates))
    return names


def sds_config(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def san_matchers(names: tuple[str, ...]) -> list[common_pb2.SubjectAltNameMatcher]:
    # A SAN may be a DNS name or a URI (SPIFFE): match either, as istiod does.
    return [
        common_pb2.SubjectAltNameMatcher(san_type=kind, matcher=string_pb2.StringMatcher(exact=n))
        for n in names
        for kind in (common_pb2.SubjectAltNameMatcher.DNS, common_pb2.SubjectAltNameMatcher.URI)
    ]


def _file(path: str) -> base_pb2.DataSource:
    return base_pb2.DataSource(filename=path)


def downstream_tls_context(
    tls: ServerTLS,
    *,
    alpn: Sequence[str] = HTTP_ALPN,
    min_version: str = "TLSV1_2",
    state_optional_client_certificate: bool = False,
) -> tls_pb2.DownstreamTlsContext:
    """TLS termination (istiod's BuildListenerTLSContext): the certificate from credential
    Secrets (SDS `kubernetes://<name>`) or from files; MUTUAL also verifies the client against
    the CA, OPTIONAL_MUTUAL a client that offers a certificate.

    The defaults are a Gateway server's: HTTP ALPN on every server and istiod's gateway floor of
    TLS 1.2 when no minProtocolVersion is set. A Sidecar ingress listener offers ALPN for HTTP
    only, pins no version of its own and states require_client_certificate even when false
    (`state_optional_client_certificate`)."""
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    common.alpn_protocols.extend(alpn)
    params = common.tls_params
    minimum = tls.min_protocol_version or min_version
    if minimum:
        params.tls_minimum_protocol_version = _VERSIONS[minimum]
    if tls.max_protocol_version:
        params.tls_maximum_protocol_version = _VERSIONS[tls.max_protocol_version]
    if tls.cipher_suites:
        params.cipher_suites.extend(tls.cipher_suites)
    for name in tls.credential_names:
        common.tls_certificate_sds_secret_configs.append(sds_config(credential_resource(name)))
    if not tls.credential_names:
        for cert, key in tls.certificate_files:
            common.tls_certificate_sds_secret_configs.append(
                sds_config(file_cert_resource(cert, key))
            )
    if state_optional_client_certificate or tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        context.require_client_certificate.CopyFrom(bool_value(tls.mode == "MUTUAL"))
    if tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        matchers = san_matchers(tls.subject_alt_names)
        if tls.credential_name:
            combined = common.combined_validation_context
            combined.default_validation_context.match_typed_subject_alt_names.extend(matchers)
            combined.validation_context_sds_secret_config.CopyFrom(
                sds_config(credential_ca_resource(tls.credential_name))
            )
        else:
            combined = common.combined_validation_context
            combined.default_validation_context.match_typed_subject_alt_names.extend(matchers)
            combined.validation_context_sds_secret_config.CopyFrom(
                sds_config(file_root_resource(tls.ca_certificates))
            )
    return context


def transport_socket(
    context: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext,
) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))
