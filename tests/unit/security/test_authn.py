"""Authenticating gRPC callers: a real grpc.aio server whose one method answers with the
caller's identity, TokenReview through the real adapter against the test API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from istiolite.security.authn import (
    AuthenticationFailed,
    Authenticator,
    ForwardedPeer,
    PeerTable,
    bearer_token,
    identity_from_username,
)
from istiolite.security.identity import Identity
from istiolite.sources.kube.client import KubeClient
from tests.support.kube_apiserver import KubeApiServer

WHOAMI = "/test.Auth/WhoAmI"


@dataclass
class Rig:
    authenticator: Authenticator
    apiserver: KubeApiServer
    channel: grpc.aio.Channel
    peers_seen: list[str]
    now: list[float]

    async def whoami(
        self, token: str | None = None, header: str | None = None, cluster: str | None = None
    ) -> str:
        metadata = []
        if cluster is not None:
            metadata.append(("clusterid", cluster))
        if header is not None:
            metadata.append(("authorization", header))
        elif token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        call = self.channel.unary_unary(WHOAMI)
        reply: bytes = await call(b"", metadata=metadata, timeout=15)
        return reply.decode()


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


@pytest.fixture
async def rig(apiserver: KubeApiServer, tmp_path: Path) -> AsyncIterator[Rig]:
    kube = await KubeClient.connect(apiserver.write_kubeconfig(tmp_path / "kubeconfig"))
    now = [1000.0]
    authenticator = Authenticator("cluster.local", reviewer=kube, clock=lambda: now[0])
    peers_seen: list[str] = []

    async def whoami(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        peers_seen.append(context.peer())
        try:
            identity = await authenticator.authenticate(context)
        except AuthenticationFailed as err:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        return str(identity).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Auth", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Rig(authenticator, apiserver, channel, peers_seen, now)
    finally:
        await channel.close()
        await server.stop(None)
        assert kube is not None
        await kube.close()


async def _refused(rig: Rig, **kw: str | None) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.whoami(**kw)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return err.value.details() or ""


async def test_service_account_token_is_the_identity(rig: Rig) -> None:
    token = rig.apiserver.add_token("shop", "reviews")
    assert await rig.whoami(token) == "spiffe://cluster.local/ns/shop/sa/reviews"
    (review,) = rig.apiserver.reviews()
    assert review.body["spec"]["audiences"] == ["istio-ca"]


async def test_refusals_say_why_and_never_echo_the_token(rig: Rig) -> None:
    wrong_audience = rig.apiserver.add_token("shop", "reviews", audiences=("vault",))
    lying = rig.apiserver.add_token("shop", "reviews")
    rig.apiserver.lying_audiences[lying] = ("https://kubernetes.default.svc",)
    unknown = "sa.unknown-token-" + "x" * 40

    assert "no client certificate and no 'authorization: Bearer" in await _refused(rig)
    message = await _refused(rig, token=unknown)
    assert "invalid bearer token" in message and unknown not in message
    message = await _refused(rig, token=wrong_audience)
    assert "istio-ca" in message and wrong_audience not in message
    message = await _refused(rig, token=lying)
    assert "not for audience 'istio-ca'" in message and lying not in message
    assert "not 'Bearer <token>'" in await _refused(rig, header="Basic dXNlcjpwYXNz")
    assert len(await _refused(rig, header="Bearer " + "y" * 5000)) <= 300
    # gRPC's own metadata limit (8 KiB soft) comes first; the authenticator's own bound too:
    with pytest.raises(AuthenticationFailed, match="longer than"):
        bearer_token([("authorization", "Bearer " + "x" * 10_000)])


async def test_a_caller_naming_another_cluster_is_refused_before_any_review(rig: Rig) -> None:
    token = rig.apiserver.add_token("shop", "reviews")
    assert (
        await rig.whoami(token, cluster="Kubernetes") == "spiffe://cluster.local/ns/shop/sa/reviews"
    )
    reviews = rig.authenticator.reviews
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.whoami(token, cluster="east")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "'east'" in (err.value.details() or "") and "'Kubernetes'" in (err.value.details() or "")
    assert rig.authenticator.reviews == reviews  # the token went to no API server


async def test_successful_reviews_are_cached_briefly(rig: Rig) -> None:
    token = rig.apiserver.add_token("shop", "reviews")
    for _ in range(5):
        await rig.whoami(token)
    assert len(rig.apiserver.reviews()) == 1
    rig.now[0] += 61  # past the cache's 60 s
    await rig.whoami(token)
    assert len(rig.apiserver.reviews()) == 2


async def test_concurrent_callers_with_one_token_share_one_review(rig: Rig) -> None:
    token = rig.apiserver.add_token("shop", "reviews")
    answers = await asyncio.gather(*(rig.whoami(token) for _ in range(20)))
    assert set(answers) == {"spiffe://cluster.local/ns/shop/sa/reviews"}
    assert len(rig.apiserver.reviews()) == 1


async def test_failed_reviews_are_not_cached(rig: Rig) -> None:
    await _refused(rig, token="sa.unknown")
    await _refused(rig, token="sa.unknown")
    assert len(rig.apiserver.reviews()) == 2


async def test_forwarded_certificate_identity_needs_no_token(rig: Rig) -> None:
    """What the secure front end records for its connection is the caller's identity; a
    connection that has no entry (a direct one) must bring a token."""
    await _refused(rig)
    (peer,) = rig.peers_seen
    port = int(peer.rpartition(":")[2])
    alice = Identity("cluster.local", "shop", "alice")
    rig.authenticator.peers.add(port, ForwardedPeer("10.0.0.7:4321", alice))
    assert await rig.whoami() == str(alice)
    # Recorded without a certificate: a token is still needed.
    rig.authenticator.peers.add(port, ForwardedPeer("10.0.0.7:4321", None))
    await _refused(rig)
    rig.authenticator.peers.remove(port)
    await _refused(rig)


async def test_without_a_kubernetes_api_tokens_cannot_be_checked() -> None:
    authenticator = Authenticator("cluster.local")
    with pytest.raises(AuthenticationFailed, match="--kubeconfig"):
        await authenticator.authenticate_token("sa.token")


def test_peer_table_lookup_only_for_loopback_ipv4() -> None:
    table = PeerTable()
    peer = ForwardedPeer("1.2.3.4:5", Identity("cluster.local", "a", "b"))
    table.add(40000, peer)
    assert table.lookup("ipv4:127.0.0.1:40000") is peer
    assert table.lookup("ipv4:127.0.0.2:40000") is None
    assert table.lookup("ipv6:[::1]:40000") is None
    assert table.lookup("unix:/tmp/x") is None
    assert table.lookup("") is None


@pytest.mark.parametrize(
    "username",
    [
        "system:serviceaccount:shop",
        "system:serviceaccount:shop:a:b",
        "admin",
        "system:serviceaccount::x",
    ],
)
def test_usernames_that_are_not_one_service_account(username: str) -> None:
    with pytest.raises(AuthenticationFailed):
        identity_from_username(username, "cluster.local")
