"""SDS of workload identities over real gRPC, SotW and Delta: an authenticated stream gets
`default` and `ROOTCA` of its own identity only; a node claiming another identity gets
PERMISSION_DENIED and nothing before it; the plaintext port serves key material only to
loopback peers and only in the development mode; a rotation reaches only the streams of the
rotated identity."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc
from structlog.testing import capture_logs

from istiolite import type_urls
from istiolite.security.identity import Identity
from istiolite.xds.ads import AdsService
from istiolite.xds.workload_certs import WorkloadCerts
from tests.protocol.harness import CDS, XdsClient, make_node, mesh, resources
from tests.support import objects
from tests.support.workload_ca import SimpleCA, TokenAuthenticator, certificate, spiffe_uris

SDS = type_urls.SECRET
WORKLOAD = ["default", "ROOTCA"]
ALICE = Identity("cluster.local", "shop", "alice")
BOB = Identity("cluster.local", "shop", "bob")
TOKENS = {"alice-token": ALICE, "bob-token": BOB}


def node(name: str, namespace: str = "shop", service_account: str | None = None) -> Any:
    node_id = f"sidecar~10.0.0.1~{name}.{namespace}~{namespace}.svc.cluster.local"
    return make_node(node_id, namespace=namespace, service_account=service_account)


@dataclass
class Ports:
    ads: AdsService
    ca: SimpleCA
    certs: WorkloadCerts
    secure: ads_pb2_grpc.AggregatedDiscoveryServiceStub
    plain: ads_pb2_grpc.AggregatedDiscoveryServiceStub
    clients: list[XdsClient]

    def connect(
        self, *, delta: bool, node: Any, token: str | None = None, secure: bool = True
    ) -> XdsClient:
        metadata = [("authorization", f"Bearer {token}")] if token else None
        stub = self.secure if secure else self.plain
        client = XdsClient(stub, delta=delta, node=node, metadata=metadata)
        self.clients.append(client)
        return client


async def _serve(
    *, dev_plaintext_sds: bool = False, ttl: datetime.timedelta | None = None
) -> AsyncIterator[Ports]:
    ca = SimpleCA()
    certs = WorkloadCerts(ca, ttl=ttl, linger=0)  # forgotten at once: the tests see it
    ads = AdsService(
        objects.context(*mesh()), workload_certs=certs, dev_plaintext_sds=dev_plaintext_sds
    )
    # Two gRPC servers as istiolite runs them: one whose streams are authenticated, one not.
    secure_server, plain_server = grpc.aio.server(), grpc.aio.server()
    ads.register(secure_server, authenticator=TokenAuthenticator(TOKENS))
    ads.register(plain_server)
    secure_port = secure_server.add_insecure_port("127.0.0.1:0")
    plain_port = plain_server.add_insecure_port("127.0.0.1:0")
    await secure_server.start()
    await plain_server.start()
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{secure_port}"),
        grpc.aio.insecure_channel(f"127.0.0.1:{plain_port}"),
    ]
    ports = Ports(
        ads,
        ca,
        certs,
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[0]),
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[1]),
        [],
    )
    try:
        yield ports
    finally:
        for client in ports.clients:
            await client.aclose()
        for channel in channels:
            await channel.close()
        await secure_server.stop(grace=None)
        await plain_server.stop(grace=None)
        await certs.close()


@pytest.fixture
async def ports() -> AsyncIterator[Ports]:
    async for p in _serve():
        yield p


@pytest.fixture
async def dev_ports() -> AsyncIterator[Ports]:
    async for p in _serve(dev_plaintext_sds=True):
        yield p


async def _workload_secrets(client: XdsClient) -> dict[str, Any]:
    response = await client.fetch(SDS, WORKLOAD)
    return resources(response)


def _leaf_uri(secrets: dict[str, Any]) -> str:
    chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
    return spiffe_uris(certificate(chain))[0]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_an_authenticated_stream_gets_its_own_identity(ports: Ports, delta: bool) -> None:
    alice = ports.connect(
        delta=delta, node=node("a-1", service_account="alice"), token="alice-token"
    )
    got = await _workload_secrets(alice)
    assert sorted(got) == ["ROOTCA", "default"]
    assert _leaf_uri(got) == "spiffe://cluster.local/ns/shop/sa/alice"
    assert b"PRIVATE KEY" in got["default"].tls_certificate.private_key.inline_bytes
    assert got["ROOTCA"].validation_context.trusted_ca.inline_bytes == ports.ca.trust_bundle()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_each_identity_gets_its_own_certificate_and_replicas_share_one(
    ports: Ports, delta: bool
) -> None:
    alice_1 = ports.connect(
        delta=delta, node=node("a-1", service_account="alice"), token="alice-token"
    )
    alice_2 = ports.connect(
        delta=delta, node=node("a-2", service_account="alice"), token="alice-token"
    )
    bob = ports.connect(delta=delta, node=node("b-1", service_account="bob"), token="bob-token")
    got = [await _workload_secrets(c) for c in (alice_1, alice_2, bob)]
    serials = [
        certificate(g["default"].tls_certificate.certificate_chain.inline_bytes).serial_number
        for g in got
    ]
    assert serials[0] == serials[1] != serials[2]
    assert [_leaf_uri(g) for g in got] == [
        "spiffe://cluster.local/ns/shop/sa/alice",
        "spiffe://cluster.local/ns/shop/sa/alice",
        "spiffe://cluster.local/ns/shop/sa/bob",
    ]
    assert len(ports.ca.issued) == 2


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
@pytest.mark.parametrize("first", [SDS, CDS], ids=["sds-first", "cds-first"])
async def test_a_node_claiming_another_service_account_is_denied_and_gets_nothing(
    ports: Ports, delta: bool, first: str
) -> None:
    mallory = ports.connect(
        delta=delta, node=node("m-1", service_account="bob"), token="alice-token"
    )
    # One request: the stream ends with the denial (a client writing on would see its own
    # write fail instead of the status).
    if delta:
        mallory.delta_request(first, subscribe=WORKLOAD if first == SDS else ())
    else:
        mallory.request(first, WORKLOAD if first == SDS else [])
    error = await mallory.error()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    message = error.details() or ""
    assert "spiffe://cluster.local/ns/shop/sa/alice" in message and "'bob'" in message
    assert mallory.received == [], "nothing may be sent before the denial"
    assert ports.ca.issued == []


async def test_a_node_claiming_another_namespace_is_denied(ports: Ports) -> None:
    other = ports.connect(
        delta=True, node=node("a-1", namespace="bank", service_account="alice"), token="alice-token"
    )
    other.delta_request(CDS)
    error = await other.error()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'bank'" in (error.details() or "") and "ns/shop/sa/alice" in (error.details() or "")


async def test_a_node_naming_no_service_account_is_denied(ports: Ports) -> None:
    anonymous = ports.connect(delta=False, node=node("a-1"), token="alice-token")
    anonymous.request(CDS)
    error = await anonymous.error()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no SERVICE_ACCOUNT" in (error.details() or "")


@pytest.mark.parametrize("token", [None, "forged"])
async def test_without_a_valid_token_the_secure_port_sends_nothing(
    ports: Ports, token: str | None
) -> None:
    client = ports.connect(delta=True, node=node("a-1", service_account="alice"), token=token)
    client.delta_request(CDS)
    error = await client.error()
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert client.received == []


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_the_plaintext_port_answers_default_with_nothing_and_says_why_once(
    ports: Ports, delta: bool
) -> None:
    client = ports.connect(delta=delta, node=node("a-1", service_account="alice"), secure=False)
    with capture_logs() as logs:
        first = await client.fetch(SDS, WORKLOAD)
        assert resources(first) == {}
        # Asked again (a new subscription for the same names): still nothing, no new line.
        if delta:
            client.delta_request(SDS, unsubscribe=WORKLOAD)
            client.delta_request(SDS, subscribe=WORKLOAD)
        else:
            client.request(SDS, ["ROOTCA"])
            client.request(SDS, WORKLOAD)
        for response in await client.collect():
            assert resources(response) == {}
        cds = await client.fetch(CDS)
        assert resources(cds), "every other type is served as usual"
    refusals = [e for e in logs if "workload certificate answered with nothing" in e["event"]]
    assert len(refusals) == 1, logs
    assert "TLS port" in refusals[0]["reason"] and "--dev-plaintext-sds" in refusals[0]["reason"]
    assert ports.ca.issued == []


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_the_dev_flag_serves_loopback_peers_the_identity_their_node_names(
    dev_ports: Ports, delta: bool
) -> None:
    client = dev_ports.connect(delta=delta, node=node("a-1", service_account="alice"), secure=False)
    got = await _workload_secrets(client)
    assert _leaf_uri(got) == "spiffe://cluster.local/ns/shop/sa/alice"


async def test_rotation_reaches_only_the_streams_of_that_identity() -> None:
    async for ports in _serve(ttl=datetime.timedelta(seconds=6)):
        alice = ports.connect(
            delta=True, node=node("a-1", service_account="alice"), token="alice-token"
        )
        bob = ports.connect(delta=False, node=node("b-1", service_account="bob"), token="bob-token")
        for client, identity in ((alice, ALICE), (bob, BOB)):
            first = await _workload_secrets(client)
            # Rotated at about half of the 5-6 s left: one push of `default` alone, its own.
            pushed = await client.recv(SDS, within=10)
            client.ack(pushed)
            assert resources(pushed).keys() == {"default"}, "only the certificate changed"
            new = resources(pushed)["default"].tls_certificate.certificate_chain.inline_bytes
            old = first["default"].tls_certificate.certificate_chain.inline_bytes
            assert certificate(new).serial_number != certificate(old).serial_number
            assert spiffe_uris(certificate(new)) == [identity.spiffe_uri]
            # The other identity's rotation (at another moment) is not pushed here.
            await client.expect_silence(0.5)


async def test_an_identity_is_forgotten_with_its_last_stream(ports: Ports) -> None:
    clients = [
        ports.connect(delta=True, node=node(f"a-{i}", service_account="alice"), token="alice-token")
        for i in range(2)
    ]
    for client in clients:
        await _workload_secrets(client)
    assert ports.certs.identities() == [ALICE]
    for client in clients:
        await client.aclose()
    for _ in range(100):
        if not ports.certs.identities():
            break
        await asyncio.sleep(0.02)
    assert ports.certs.identities() == []
    ports.clients.clear()
