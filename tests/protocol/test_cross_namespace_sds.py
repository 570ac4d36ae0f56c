"""SDS of a Gateway API listener's certificate Secret in another namespace, over real gRPC on the
authenticated port: the Gateway's own router gets `kubernetes://certs/shared-cert`; another
Gateway's router of the same namespace asking for it gets nothing and a log line naming the
resource; once the ReferenceGrant is removed the Gateway's router loses it too (Delta: removed;
SotW: no longer sent) and is told why."""

from __future__ import annotations

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
from tests.protocol.harness import XdsClient, make_node, resources
from tests.support import objects
from tests.support.certs import CertificateAuthority, tls_secret
from tests.support.workload_ca import SimpleCA, TokenAuthenticator

SDS = type_urls.SECRET
GW = "gateway.networking.k8s.io"
RESOURCE = "kubernetes://certs/shared-cert"
TOKENS = {
    "edge-token": Identity("cluster.local", "edge", "edge-istio"),
    "other-token": Identity("cluster.local", "edge", "other-istio"),
}
DENIED = "SDS request for a Secret of another namespace denied"


def _gateway(name: str, ref_namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "edge"},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "tls": {
                        "certificateRefs": [{"name": "shared-cert", "namespace": ref_namespace}]
                    },
                }
            ],
        },
    }


GRANT = {
    "apiVersion": f"{GW}/v1beta1",
    "kind": "ReferenceGrant",
    "metadata": {"name": "edge-gateways", "namespace": "certs"},
    "spec": {
        "from": [{"group": GW, "kind": "Gateway", "namespace": "edge"}],
        "to": [{"group": "", "kind": "Secret", "name": "shared-cert"}],
    },
}


def _config(*, grant: bool) -> list[Any]:
    pair = CertificateAuthority("shared CA").issue("shared.example.com")
    # "other" names a Secret of its own namespace: it has a Gateway, just not this grant.
    raws: list[Any] = [
        _gateway("edge", "certs"),
        _gateway("other", "edge"),
        tls_secret("shared-cert", "certs", pair),
        tls_secret("shared-cert", "edge", pair),
    ]
    return [*raws, GRANT] if grant else raws


def _router(gateway: str) -> Any:
    return make_node(
        f"router~10.0.0.2~{gateway}-1.edge~edge.svc.cluster.local",
        namespace="edge",
        labels={"gateway.networking.k8s.io/gateway-name": gateway},
        interception_mode="NONE",
        service_account=f"{gateway}-istio",
    )


@dataclass
class Server:
    ads: AdsService
    stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub
    clients: list[XdsClient]

    def connect(self, gateway: str, *, delta: bool) -> XdsClient:
        metadata = [("authorization", f"Bearer {gateway}-token")]
        client = XdsClient(self.stub, delta=delta, node=_router(gateway), metadata=metadata)
        self.clients.append(client)
        return client


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    certs = WorkloadCerts(SimpleCA(), linger=0)
    ads = AdsService(objects.context(*_config(grant=True)), workload_certs=certs)
    grpc_server = grpc.aio.server()
    ads.register(grpc_server, authenticator=TokenAuthenticator(TOKENS))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    running = Server(ads, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), [])
    try:
        yield running
    finally:
        for client in running.clients:
            await client.aclose()
        await channel.close()
        await grpc_server.stop(grace=None)
        await certs.close()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_only_the_gateways_router_gets_it_and_the_other_is_told_why(
    server: Server, delta: bool
) -> None:
    edge = server.connect("edge", delta=delta)
    got = resources(await edge.fetch(SDS, [RESOURCE]))
    assert list(got) == [RESOURCE]
    assert b"PRIVATE KEY" in got[RESOURCE].tls_certificate.private_key.inline_bytes

    other = server.connect("other", delta=delta)
    with capture_logs() as logs:
        for response in [await other.fetch(SDS, [RESOURCE]), *await other.collect()]:
            assert RESOURCE not in resources(response)
    denials = [e for e in logs if e["event"] == DENIED]
    assert len(denials) == 1, logs
    assert denials[0]["resource"] == RESOURCE
    assert "certs/shared-cert" in denials[0]["reason"]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_removing_the_grant_withdraws_it(server: Server, delta: bool) -> None:
    edge = server.connect("edge", delta=delta)
    assert RESOURCE in resources(await edge.fetch(SDS, [RESOURCE]))
    with capture_logs() as logs:
        server.ads.update(objects.context(*_config(grant=False)))
        if delta:
            pushed = await edge.recv(SDS)
            edge.ack(pushed)
            assert RESOURCE in pushed.removed_resources
        # SotW SDS sends only what exists: the Secret is simply no longer sent (and the
        # listener that named it is gone from LDS, see tests/integration).
        for response in await edge.collect():
            assert RESOURCE not in resources(response)
    assert [e["resource"] for e in logs if e["event"] == DENIED] == [RESOURCE]
