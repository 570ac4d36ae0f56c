"""Who an ADS stream is, and which key material it may receive.

On the secure port a stream is authenticated before anything else happens (a client
certificate from the mesh CA, or a service-account token), and the node it then describes must
be that identity: its NAMESPACE and SERVICE_ACCOUNT metadata name the authenticated namespace and
service account, as istiod checks, else the stream fails with PERMISSION_DENIED before anything
is sent. It then gets `default` and `ROOTCA` of that identity, and the Kubernetes TLS credentials
its own config references (networking/credentials.py), which are scoped by that namespace; a
Secret of another namespace only when a ReferenceGrant lets this proxy's Gateway use it, and a
request for one it may not have is logged naming it and the reason (`credential_denial`).

On the plaintext port key material (workload `default` and gateway credentials alike) goes only
to a loopback or Unix-socket peer, and only with `--dev-plaintext-sds` (development only): the
identity is then whatever the node metadata says. Otherwise the stream gets every other resource,
and a request for `default` is answered with nothing and one log line saying why. The
`file-cert:`/`file-root:` secrets hold no key material (they name files on the proxy's disk)
and go to every stream.
"""

from __future__ import annotations

import inspect
import ipaddress
import urllib.parse
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import grpc

from istiolite import metrics, type_urls
from istiolite.logs import get_logger
from istiolite.model.proxy import Proxy
from istiolite.networking.credentials import credential_denial, is_file_secret
from istiolite.networking.resource import Resource
from istiolite.networking.tls_context import CREDENTIAL_PREFIX
from istiolite.networking.workload_secrets import WORKLOAD_SECRET_NAMES
from istiolite.security.identity import Identity
from istiolite.xds.protocol import MAX_LOGGED_ID, WILDCARD, Generate
from istiolite.xds.workload_certs import WorkloadCerts

log = get_logger("xds")

_NONE: Mapping[str, Resource] = MappingProxyType({})
# Istio's default service account, for a node (development mode) that names none.
DEFAULT_SERVICE_ACCOUNT = "default"
MAX_DENIALS_TRACKED = 64  # Secrets of other namespaces remembered per stream


class Authenticator(Protocol):
    """Who is calling (security/authn.py): raises when the caller proves no identity."""

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """An Identity, or an awaitable of one."""
        ...


class IdentityMismatch(Exception):
    """The node claims an identity other than the one the stream authenticated as."""


@dataclass(frozen=True, slots=True)
class PortPolicy:
    """How a gRPC port's ADS streams are trusted: `authenticator` set on the secure port;
    `dev_plaintext_sds` on the plaintext port (key material to loopback/Unix peers)."""

    authenticator: Authenticator | None = None
    dev_plaintext_sds: bool = False


def may_receive_keys(peer: str) -> bool:
    """Whether a plaintext peer is local (loopback in any spelling gRPC reports, or a Unix
    socket): the only peers the development mode of DESIGN §5 serves key material to."""
    if peer.startswith("unix:"):
        return True
    host = urllib.parse.unquote(peer.partition(":")[2]).rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def public_secrets(secrets: Mapping[str, Resource]) -> Mapping[str, Resource]:
    """The secrets without key material: those naming certificate files on the proxy."""
    found = {name: r for name, r in secrets.items() if is_file_secret(name)}
    return found if found else _NONE


def without_secrets(generate: Callable[..., Any]) -> Callable[..., Any]:
    """`generate` with no key material (what a stream without key rights is served)."""

    def generate_public(ctx: Any, proxy: Proxy, type_url: str) -> Any:
        if type_url == type_urls.SECRET:
            return public_secrets(generate(ctx, proxy, type_url))
        return generate(ctx, proxy, type_url)

    return generate_public


async def authenticate(
    policy: PortPolicy, context: grpc.aio.ServicerContext[Any, Any]
) -> Identity | None:
    """The caller's identity on a port with an authenticator (None elsewhere). Whatever the
    authenticator raises propagates: the caller turns it into UNAUTHENTICATED."""
    if policy.authenticator is None:
        return None
    result = policy.authenticator.authenticate(context)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, Identity):
        raise TypeError(f"the authenticator returned {type(result).__name__}, not an Identity")
    return result


def _claimed(proxy: Proxy) -> str:
    account = proxy.service_account or "(no SERVICE_ACCOUNT)"
    return f"namespace {proxy.namespace!r}, service account {account!r}"


class StreamSecrets:
    """One stream's identity and the Secrets it is served (a thin layer over the shared
    generator: Secrets only, every other type passes through)."""

    def __init__(
        self,
        *,
        peer: str,
        policy: PortPolicy,
        authenticated: Identity | None,
        certs: WorkloadCerts | None,
        shared: Generate,
        key: Hashable,
        on_change: Callable[[], None],
    ) -> None:
        self.peer = peer
        self.authenticated = authenticated
        self._certs = certs
        self._shared = shared
        self._key = key
        self._on_change = on_change
        self.refusal = self._refusal(policy, peer, authenticated)
        self.keys_allowed = self.refusal is None
        self.identity: Identity | None = None  # the workload identity, once the node is known
        self._attached = False
        self._refusal_logged = False
        self._proxy_id = ""
        # The last merge of shared Secrets and this identity's: the same object while neither
        # changes, so the stream sees "unchanged" by identity as it does for shared maps.
        self._merged: tuple[Mapping[str, Resource], Mapping[str, Resource], dict[str, Resource]]
        self._merged = (_NONE, _NONE, {})
        # Secrets of other namespaces asked for, and those whose refusal was logged.
        self._cross_requested: set[str] = set()
        self._denied: set[str] = set()
        self._last: tuple[Any, Proxy] | None = None  # the last (PushContext, node) generated
        # The last shared Secrets and their public part, kept for the same reason.
        self._public: tuple[Mapping[str, Resource], Mapping[str, Resource]] = (_NONE, _NONE)

    @staticmethod
    def _refusal(policy: PortPolicy, peer: str, authenticated: Identity | None) -> str | None:
        if authenticated is not None:
            return None
        if not policy.dev_plaintext_sds:
            return (
                "key material is served only on the TLS port to an authenticated proxy "
                "(or with --dev-plaintext-sds, development only, to loopback peers)"
            )
        if not may_receive_keys(peer):
            return f"--dev-plaintext-sds serves key material to loopback peers only, not {peer}"
        return None

    def identify(self, proxy: Proxy) -> None:
        """The stream's node is known: check it against the authenticated identity (raises
        IdentityMismatch) and fix the workload identity its `default` certifies."""
        self._proxy_id = proxy.id[:MAX_LOGGED_ID]
        authenticated = self.authenticated
        if authenticated is not None:
            if (proxy.namespace, proxy.service_account) != (
                authenticated.namespace,
                authenticated.service_account,
            ):
                raise IdentityMismatch(
                    f"node {proxy.id[:MAX_LOGGED_ID]!r} claims {_claimed(proxy)}, but the "
                    f"caller authenticated as {authenticated} (namespace "
                    f"{authenticated.namespace!r}, service account "
                    f"{authenticated.service_account!r})"
                )
            self.identity = authenticated
        elif self.keys_allowed and self._certs is not None:
            account = proxy.service_account or DEFAULT_SERVICE_ACCOUNT
            self.identity = Identity(self._certs.trust_domain, proxy.namespace, account)

    async def prepare(self, request: Any) -> None:
        """Before the protocol sees `request`: a first ask for `default`/`ROOTCA` waits for the
        identity's certificate (CertificateUnavailable if the CA cannot issue it), or, on a
        stream that may not have it, is logged once."""
        if request.type_url != type_urls.SECRET:
            return
        names = (
            request.resource_names_subscribe
            if hasattr(request, "resource_names_subscribe")
            else request.resource_names
        )
        self._note_requested(names)
        if self._attached:
            return
        if not any(n in WORKLOAD_SECRET_NAMES or n == WILDCARD for n in names):
            return
        if self.identity is None or self._certs is None:
            self._log_refusal()
            return
        await self._certs.attach(self.identity, self._key, self._on_change)
        self._attached = True

    def _note_requested(self, names: Any) -> None:
        """Remember the Secrets of other namespaces the proxy asks for (bounded: the peer picks
        the names), so that a refusal of one is logged naming it."""
        for name in names:
            if len(self._cross_requested) >= MAX_DENIALS_TRACKED:
                break
            if name.startswith(CREDENTIAL_PREFIX) and "/" in name[len(CREDENTIAL_PREFIX) :]:
                self._cross_requested.add(name)
        if self._last is not None:
            self._check_denials(*self._last)

    def _check_denials(self, ctx: Any, proxy: Proxy) -> None:
        for name in sorted(self._cross_requested - self._denied):
            reason = credential_denial(ctx, proxy, name)
            if reason is None:
                continue
            self._denied.add(name)
            metrics.SDS_REFUSED.inc("cross-namespace")
            log.warning(
                "SDS request for a Secret of another namespace denied",
                proxy=self._proxy_id,
                peer=self.peer,
                resource=name[:MAX_LOGGED_ID],
                reason=reason,
            )
        # Allowed now (a grant added): a later refusal is logged again.
        self._denied = {n for n in self._denied if credential_denial(ctx, proxy, n) is not None}

    def _log_refusal(self) -> None:
        if self._refusal_logged:
            return  # once per stream: Envoy asks again on every reconnect and update
        self._refusal_logged = True
        reason = self.refusal or "no certificate authority: workload certificates are not issued"
        metrics.SDS_REFUSED.inc("no-ca" if self.refusal is None else "not-authorized")
        log.warning(
            "SDS request for the workload certificate answered with nothing",
            proxy=self._proxy_id,
            peer=self.peer,
            reason=reason,
        )

    def own(self) -> Mapping[str, Resource]:
        """This stream's `default` and `ROOTCA` (empty until it asked for them)."""
        if not self._attached or self.identity is None or self._certs is None:
            return _NONE
        return self._certs.resources(self.identity)

    def generate(self, ctx: Any, proxy: Proxy, type_url: str) -> Mapping[str, Resource]:
        if type_url != type_urls.SECRET:
            return self._shared(ctx, proxy, type_url)
        shared = self._shared(ctx, proxy, type_url)
        self._last = (ctx, proxy)
        if self._cross_requested:
            self._check_denials(ctx, proxy)
        if not self.keys_allowed:
            last, public = self._public
            if shared is not last:
                public = public_secrets(shared)
                self._public = (shared, public)
            shared = public
        own = self.own()
        if not own:
            return shared
        if not shared:
            return own
        last_shared, last_own, merged = self._merged
        if shared is not last_shared or own is not last_own:
            merged = dict(sorted({**shared, **own}.items()))
            self._merged = (shared, own, merged)
        return merged

    def close(self) -> None:
        if self._attached and self.identity is not None and self._certs is not None:
            self._certs.detach(self.identity, self._key)
        self._attached = False
        self._merged = (_NONE, _NONE, {})
