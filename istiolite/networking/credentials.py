"""SDS: TLS credentials from Kubernetes Secrets, as `kubernetes://<name>` (certificate and key)
and `kubernetes://<name>-cacert` (the trust bundle for verifying clients or servers).

A proxy sees only the Secrets of its own namespace, as istiod authorizes credential reads. Whether
the connection may carry key material at all is the xDS server's decision (see xds/ads.py).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from istiolite.networking.tls_context import CA_SUFFIX, credential_resource
from istiolite.push.context import PushContext


def _ca_secret(name: str, bundle: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=bundle)
        ),
    )


def credential_secrets(ctx: PushContext, namespace: str) -> list[secret_pb2.Secret]:
    out: dict[str, secret_pb2.Secret] = {}
    explicit_ca: dict[str, secret_pb2.Secret] = {}
    for name, secret in ctx.secrets_in(namespace):
        cred = secret.credential
        if secret.has_key_pair:
            resource = credential_resource(name)
            out[resource] = secret_pb2.Secret(
                name=resource,
                tls_certificate=common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_bytes=cred.certificate_chain),
                    private_key=base_pb2.DataSource(inline_bytes=cred.private_key),
                ),
            )
        if secret.has_ca:
            if name.endswith(CA_SUFFIX) and not secret.has_key_pair:
                # A separate `<name>-cacert` Secret holds the CA: it wins over `<name>`'s ca.crt.
                resource = credential_resource(name)
                explicit_ca[resource] = _ca_secret(resource, cred.ca_certificates)
            else:
                resource = credential_resource(name + CA_SUFFIX)
                out.setdefault(resource, _ca_secret(resource, cred.ca_certificates))
    out.update(explicit_ca)
    return [out[name] for name in sorted(out)]
