"""SDS: TLS credentials from Kubernetes Secrets, as `kubernetes://<name>` (certificate and key)
and `kubernetes://<name>-cacert` (the trust bundle for verifying clients or servers).

A proxy sees only the Secrets of its own namespace, as istiod authorizes credential reads, and of
those only the ones its own config references (`referenced_credentials`): the credentialNames of
the Gateway servers that select it and of the DestinationRules that apply in its namespace. A
TLS Secret nothing references never leaves istiolite. The one way to a Secret of another
namespace is a Gateway API Gateway whose listener names it (`kubernetes://<namespace>/<name>`)
with a ReferenceGrant there allowing it: that Secret goes to that Gateway's router proxies only
(`credential_denial` says why anyone else is refused), and stops when the grant goes. Whether
the connection may carry key material at all is the server's decision (`--dev-plaintext-sds`,
see server.py and xds/ads.py).

Certificates given as files (Gateway `serverCertificate`, DestinationRule `clientCertificate`,
Sidecar ingress `tls`) are SDS secrets too, `file-cert:<cert>~<key>` and `file-root:<ca>` as
istiod names them: they only name files on the proxy's disk (no key material), so every stream
gets those its config references.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from istiolite.model.destinationrule import ClientTls, DestinationRule
from istiolite.model.proxy import Proxy, ProxyType
from istiolite.model.secret import Secret
from istiolite.networking.tls_context import (
    CA_SUFFIX,
    CREDENTIAL_PREFIX,
    FILE_CERT_PREFIX,
    FILE_ROOT_PREFIX,
    credential_ca_resource,
    credential_resource,
    file_cert_resource,
    file_root_resource,
    file_secret,
    server_file_resources,
)
from istiolite.networking.traffic_policy import SYSTEM_CA_BUNDLE, upstream_credential
from istiolite.networking.workload import proxy_labels
from istiolite.push.context import PushContext


def _ca_secret(name: str, bundle: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=bundle)
        ),
    )


def _key_pair(resource: str, secret: Secret) -> secret_pb2.Secret:
    cred = secret.credential
    return secret_pb2.Secret(
        name=resource,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=cred.certificate_chain),
            private_key=base_pb2.DataSource(inline_bytes=cred.private_key),
        ),
    )


def credential_secrets(ctx: PushContext, namespace: str) -> list[secret_pb2.Secret]:
    out: dict[str, secret_pb2.Secret] = {}
    explicit_ca: dict[str, secret_pb2.Secret] = {}
    for name, secret in ctx.secrets_in(namespace):
        cred = secret.credential
        if secret.has_key_pair:
            resource = credential_resource(name)
            out[resource] = _key_pair(resource, secret)
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


def _client_tls(rule: DestinationRule) -> Iterator[ClientTls]:
    """Every `tls` of a DestinationRule: top level, per port, per subset (and its ports)."""
    policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets)]
    for policy in policies:
        if policy is None:
            continue
        if policy.tls is not None:
            yield policy.tls
        yield from (p.tls for p in policy.port_level_settings if p.tls is not None)


def _applies_in(rule: DestinationRule, namespace: str) -> bool:
    return rule.namespace == namespace or "*" in rule.export_to or namespace in rule.export_to


def referenced_credentials(ctx: PushContext, proxy: Proxy) -> frozenset[str]:
    """The SDS resource names this proxy's own config may ask for: a gateway's server
    certificates (and the client CA of a MUTUAL server); a DestinationRule's client certificate
    (MUTUAL) and its CA. Trust bundles (`-cacert`) are public, but served only when referenced
    too: nothing is sent that the proxy's listeners and clusters do not name."""
    names: set[str] = set()
    if proxy.type == ProxyType.ROUTER:
        for gateway in ctx.gateways_for(proxy_labels(ctx, proxy), proxy.namespace):
            for server in gateway.servers:
                tls = server.tls
                if tls is None:
                    continue
                names.update(credential_resource(n) for n in tls.credential_names)
                if tls.terminates:
                    names.update(server_file_resources(tls))
                if tls.credential_name and tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
                    names.add(credential_ca_resource(tls.credential_name))
    for rule in ctx.all_destination_rules():
        if not _applies_in(rule, proxy.namespace):
            continue
        for client in _client_tls(rule):
            if not client.credential_name:
                names.update(_client_file_resources(client))
                continue
            if client.mode == "MUTUAL":
                names.add(upstream_credential(client.credential_name))
            if not client.insecure_skip_verify:
                names.add(upstream_credential(client.credential_name + CA_SUFFIX))
    if proxy.type != ProxyType.ROUTER:
        # Sidecar ingress ports terminating TLS from files: every Sidecar of the namespace (the
        # names are not secret, and sidecars of one namespace share this result).
        for sidecar in ctx.sidecars_in(proxy.namespace):
            for listener in sidecar.ingress:
                if listener.tls is not None:
                    names.update(server_file_resources(listener.tls))
    return frozenset(names)


def _client_file_resources(client: ClientTls) -> list[str]:
    if client.mode not in ("SIMPLE", "MUTUAL"):
        return []
    names = []
    if client.mode == "MUTUAL" and client.client_certificate and client.private_key:
        names.append(file_cert_resource(client.client_certificate, client.private_key))
    if not client.insecure_skip_verify:
        names.append(file_root_resource(client.ca_certificates or SYSTEM_CA_BUNDLE))
    return names


def is_file_secret(name: str) -> bool:
    return name.startswith((FILE_CERT_PREFIX, FILE_ROOT_PREFIX))


def cross_namespace(resource: str, proxy_namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of a `kubernetes://<namespace>/<name>` resource naming a Secret
    outside `proxy_namespace` (None for any other resource)."""
    if not resource.startswith(CREDENTIAL_PREFIX):
        return None
    namespace, slash, name = resource[len(CREDENTIAL_PREFIX) :].partition("/")
    if not slash or namespace == proxy_namespace:
        return None
    return namespace, name


def credential_denial(ctx: PushContext, proxy: Proxy, resource: str) -> str | None:
    """Why `proxy` may not receive the Secret a `kubernetes://<namespace>/<name>` resource
    names (None: it may, or the resource names no Secret of another namespace). Allowed only to
    a router proxy of a Gateway API Gateway whose valid listener names that Secret, which the
    conversion lets through only with a ReferenceGrant in the Secret's namespace."""
    where = cross_namespace(resource, proxy.namespace)
    if where is None:
        return None
    namespace, name = where
    if proxy.type != ProxyType.ROUTER:
        return f"{resource}: Secret {namespace}/{name} is in another namespace; sidecars get none"
    labels = proxy_labels(ctx, proxy)
    for result in ctx.gateway_api.gateway_results.values():
        if result.proxy_namespace != proxy.namespace:
            continue
        if any(labels.get(k) != v for k, v in result.selector.items()):
            continue
        if any(lr.usable and where in lr.secrets for lr in result.listeners):
            return None
    return (
        f"{resource}: Secret {namespace}/{name} is in another namespace and no Gateway of this "
        f"proxy (namespace {proxy.namespace!r}) has a listener allowed to use it by a "
        f"ReferenceGrant in {namespace!r}"
    )


def _granted(ctx: PushContext, proxy: Proxy, wanted: frozenset[str]) -> list[secret_pb2.Secret]:
    """The Secrets of other namespaces among `wanted` that `proxy` may receive."""
    out = []
    for resource in sorted(wanted):
        where = cross_namespace(resource, proxy.namespace)
        if where is None or credential_denial(ctx, proxy, resource) is not None:
            continue
        secret = ctx.secret(*where)
        if secret is not None and secret.has_key_pair:
            out.append(_key_pair(resource, secret))
    return out


def proxy_credentials(ctx: PushContext, proxy: Proxy) -> list[secret_pb2.Secret]:
    """The Secrets of the proxy's namespace that its own config references, and those of other
    namespaces a ReferenceGrant lets its Gateway use (see module doc)."""
    wanted = referenced_credentials(ctx, proxy)
    if not wanted:
        return []
    found = [s for s in credential_secrets(ctx, proxy.namespace) if s.name in wanted]
    found += _granted(ctx, proxy, wanted)
    for name in sorted(n for n in wanted if is_file_secret(n)):
        secret = file_secret(name)
        if secret is not None:
            found.append(secret)
    return sorted(found, key=lambda s: s.name)
