"""Who is calling: istiod's authenticators, in istiod's order.

(a) a client certificate chaining to the mesh root, verified by the secure port's TLS front end
    (`security.secure_port`), which records per forwarded connection what it verified;
(b) `authorization: Bearer <token>` checked with the Kubernetes TokenReview API (audience
    `istio-ca`), through a `TokenReviewer` (the Kubernetes adapter, `sources.kube.client`) —
    or, for a token of the local issuer (`--token-issuer-key`, `security.local_tokens`), against
    that issuer's public key, with no API at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import grpc

from istiolite.logs import get_logger
from istiolite.security.identity import Identity

log = get_logger("authn")

AUDIENCE = "istio-ca"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
_SA_PREFIX = "system:serviceaccount:"
CLUSTER_ID_METADATA = "clusterid"
MAX_TOKEN_BYTES = 8 * 1024  # real service-account tokens are ~1 KB; gRPC caps metadata at 16 KiB
MAX_MESSAGE = 300  # an error message is cut here: nothing a peer sent is echoed at length
CACHE_TTL = 60.0  # seconds a successful review is reused (500 proxies reconnecting: no 500 reviews)
CACHE_SIZE = 10_000
REVIEW_TIMEOUT = 10.0


class AuthenticationFailed(Exception):
    """The caller could not be authenticated; the message says why (never the token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message[:MAX_MESSAGE])


@dataclass(frozen=True, slots=True)
class TokenReviewResult:
    """The `status` of a TokenReview (a failed one may carry only `error`)."""

    authenticated: bool
    username: str = ""
    groups: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    error: str = ""


class TokenReviewer(Protocol):
    async def review_token(self, token: str, audiences: list[str]) -> TokenReviewResult: ...


class LocalVerifier(Protocol):
    """A token authority checked in process (`security.local_tokens.LocalTokenVerifier`)."""

    def issued_here(self, token: str) -> bool: ...

    def verify(self, token: str) -> Identity: ...


@dataclass(frozen=True, slots=True)
class ForwardedPeer:
    """A connection the secure port's TLS front end accepted and forwards to the internal
    gRPC server: the real client address and, when it presented one, the identity of its
    verified client certificate."""

    remote_address: str
    identity: Identity | None


class PeerTable:
    """The secure front end's forwarded connections, keyed by the front end's own ephemeral
    port towards the internal server (what that server's `context.peer()` shows). A connection
    made to the internal port directly is in no entry and gets no trust from it."""

    def __init__(self) -> None:
        self._peers: dict[int, ForwardedPeer] = {}

    def add(self, local_port: int, peer: ForwardedPeer) -> None:
        self._peers[local_port] = peer

    def remove(self, local_port: int) -> None:
        self._peers.pop(local_port, None)

    def __len__(self) -> int:
        return len(self._peers)

    def lookup(self, grpc_peer: str) -> ForwardedPeer | None:
        """The entry for a `context.peer()` string such as `ipv4:127.0.0.1:51234`."""
        scheme, _, rest = grpc_peer.partition(":")
        host, _, port = rest.rpartition(":")
        if scheme != "ipv4" or host != "127.0.0.1" or not port.isdigit():
            return None
        return self._peers.get(int(port))


def identity_from_username(username: str, trust_domain: str) -> Identity:
    """`system:serviceaccount:<ns>:<sa>` → the SPIFFE identity; AuthenticationFailed otherwise."""
    if not username.startswith(_SA_PREFIX):
        raise AuthenticationFailed(f"token is not a service account token (user {username[:80]!r})")
    parts = username[len(_SA_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        raise AuthenticationFailed(f"invalid service account user name {username[:80]!r}")
    return Identity(trust_domain, parts[0], parts[1])


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header; None without that header."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("authorization header is not 'Bearer <token>'")
        token = token.strip()
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthenticationFailed(f"bearer token longer than {MAX_TOKEN_BYTES} bytes")
        return token
    return None


class Authenticator:
    """Authenticates gRPC callers of the secure port (see the module doc for the order)."""

    def __init__(
        self,
        trust_domain: str,
        *,
        peers: PeerTable | None = None,
        reviewer: TokenReviewer | None = None,
        local: LocalVerifier | None = None,
        cluster_id: str = "Kubernetes",
        cache_ttl: float = CACHE_TTL,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trust_domain = trust_domain
        self.peers = peers if peers is not None else PeerTable()
        self.reviewer = reviewer
        self.local = local
        self.cluster_id = cluster_id
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Identity]] = {}
        self.reviews = 0  # TokenReviews sent (the cache's effect, for tests and benches)

    def forwarded(self, context: grpc.aio.ServicerContext) -> ForwardedPeer | None:  # type: ignore[type-arg]
        """The secure front end's record of this call's connection; None for a call that did not
        come through it (the plaintext port, or a direct connection to the internal port)."""
        return self.peers.lookup(context.peer() or "")

    async def authenticate(self, context: grpc.aio.ServicerContext) -> Identity:  # type: ignore[type-arg]
        forwarded = self.forwarded(context)
        if forwarded is not None and forwarded.identity is not None:
            return forwarded.identity
        metadata = context.invocation_metadata()
        token = bearer_token(metadata)
        if token is None:
            raise AuthenticationFailed(
                "no client certificate and no 'authorization: Bearer <token>' metadata"
            )
        self.check_cluster(metadata)
        return await self.authenticate_token(token)

    def check_cluster(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """A token is only judged by the cluster that issued it: as istiod, a caller naming a
        cluster other than ours (pilot-agent sends `clusterid`) is refused; none means ours."""
        for key, value in metadata or ():
            if key.lower() != CLUSTER_ID_METADATA:
                continue
            claimed = value.decode(errors="replace") if isinstance(value, bytes) else value
            if claimed and claimed != self.cluster_id:
                raise AuthenticationFailed(
                    f"client claims to be in cluster {claimed[:64]!r}, but this istiolite "
                    f"serves cluster {self.cluster_id!r} (--cluster-id)"
                )

    async def authenticate_token(self, token: str) -> Identity:
        if self.local is not None and self.local.issued_here(token):
            # A signature check in process (~0.1 ms): not cached, so expiry is always current.
            return self.local.verify(token)
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is not None:  # the same token under review already: wait for that one
            return await asyncio.shield(pending)
        future: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            identity = await self._review(token)
        except BaseException as err:
            future.set_exception(err if isinstance(err, AuthenticationFailed) else
                                 AuthenticationFailed("token review did not complete"))  # fmt: skip
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(identity)
        finally:
            del self._inflight[key]
        self._cache[key] = (self._clock() + self._cache_ttl, identity)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return identity

    async def _review(self, token: str) -> Identity:
        if self.reviewer is None:
            raise AuthenticationFailed(
                "bearer token cannot be checked: no Kubernetes API to send a TokenReview to "
                "(give --kubeconfig, or run istiolite in a cluster)"
            )
        self.reviews += 1
        try:
            result = await asyncio.wait_for(
                self.reviewer.review_token(token, [AUDIENCE]), REVIEW_TIMEOUT
            )
        except TimeoutError:
            raise AuthenticationFailed(
                f"TokenReview: no answer from the Kubernetes API in {REVIEW_TIMEOUT:g} s"
            ) from None
        except (OSError, ValueError) as err:
            # Never the token: the adapter's messages name the HTTP status and the API's message.
            log.warning("TokenReview failed", error=str(err)[:MAX_MESSAGE])
            raise AuthenticationFailed(f"TokenReview failed: {str(err)[:200]}") from None
        except Exception as err:
            log.warning("TokenReview failed", error=type(err).__name__)
            raise AuthenticationFailed(f"TokenReview failed: {type(err).__name__}") from None
        if result.error:
            raise AuthenticationFailed(f"token rejected by TokenReview: {result.error[:200]}")
        if not result.authenticated:
            raise AuthenticationFailed("token rejected by TokenReview: not authenticated")
        if AUDIENCE not in result.audiences:
            raise AuthenticationFailed(
                f"token is not for audience {AUDIENCE!r} (TokenReview audiences: "
                f"{', '.join(result.audiences)[:100] or 'none'})"
            )
        if SERVICE_ACCOUNTS_GROUP not in result.groups:
            raise AuthenticationFailed(
                f"token is not a service account token (not in group {SERVICE_ACCOUNTS_GROUP})"
            )
        return identity_from_username(result.username, self.trust_domain)
