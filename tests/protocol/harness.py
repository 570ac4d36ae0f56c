"""An in-process ADS server and client for protocol tests: real gRPC on 127.0.0.1, real protos.

`XdsHarness` owns a grpc.aio server with `AdsService` registered and the client channel;
`XdsClient` holds one ADS conversation (SotW or Delta). Requests go in through a queue-fed
iterator, responses are read by a background task into another queue, so every wait is bounded
and a test never cancels a pending `call.read()`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from istiolite import type_urls
from istiolite.xds.ads import AdsService, Connection
from istiolite.xds.protocol import TypeState
from tests.support import objects

CDS, EDS, LDS, RDS = type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.ROUTE
NAME_TABLE, PROXY_CONFIG = type_urls.NAME_TABLE, type_urls.PROXY_CONFIG

NODE_ID = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local"

# How long "nothing more arrives" is watched for. Responses to one event are written back to back
# by the server, so a short quiet period after the last one is enough to know a burst is over.
SILENCE = 0.5
QUIET = 0.3
TIMEOUT = 5.0

MESSAGES: dict[str, Any] = {
    CDS: cluster_pb2.Cluster,
    EDS: endpoint_pb2.ClusterLoadAssignment,
    LDS: listener_pb2.Listener,
    RDS: route_pb2.RouteConfiguration,
    type_urls.SECRET: secret_pb2.Secret,
}

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
DeltaDiscoveryRequest = discovery_pb2.DeltaDiscoveryRequest
DeltaDiscoveryResponse = discovery_pb2.DeltaDiscoveryResponse
Response = DiscoveryResponse | DeltaDiscoveryResponse

# ---------------------------------------------------------------------------------------------
# The mesh the tests talk about.

REVIEWS = objects.outbound_cluster("reviews", 9080)
DETAILS = objects.outbound_cluster("details", 9081)
RATINGS = objects.outbound_cluster("ratings", 9080)
RATINGS_9082 = objects.outbound_cluster("ratings", 9082)
FIXED_CLUSTERS = ["BlackHoleCluster", "InboundPassthroughCluster", "PassthroughCluster"]
BASE_CLUSTERS = sorted([*FIXED_CLUSTERS, REVIEWS, DETAILS])
BASE_LISTENERS = ["0.0.0.0_9080", "0.0.0.0_9081", "virtualInbound", "virtualOutbound"]
REVIEWS_ENDPOINTS = ("10.1.0.1", "10.1.0.2")


def mesh(
    *,
    reviews_app_protocol: str | None = None,
    reviews_endpoints: Sequence[str] = REVIEWS_ENDPOINTS,
    details: bool = True,
    ratings: bool = False,
) -> list[objects.Raw]:
    """reviews (9080, two endpoints), details (9081, no endpoints), optionally ratings.

    ratings serves 9080 (a new virtual host in route "9080") and 9082 (a new listener, a new
    cluster and a new route name), so adding it touches CDS, EDS, LDS and RDS at once.
    """
    raws = [
        objects.service(
            "reviews",
            ports=[objects.service_port("http", 9080, app_protocol=reviews_app_protocol)],
        ),
        objects.endpoint_slice("reviews", endpoints=reviews_endpoints, ports=[("http", 9080)]),
    ]
    if details:
        raws.append(objects.service("details", ports=[objects.service_port("http", 9081)]))
    if ratings:
        raws.append(
            objects.service(
                "ratings",
                ports=[
                    objects.service_port("http", 9080),
                    objects.service_port("http-admin", 9082),
                ],
            )
        )
        raws.append(
            objects.endpoint_slice(
                "ratings", endpoints=["10.3.0.1"], ports=[("http", 9080), ("http-admin", 9082)]
            )
        )
    return raws


def make_node(
    node_id: str = NODE_ID,
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    interception_mode: str = "REDIRECT",
    service_account: str | None = None,
) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "NAMESPACE": namespace,
            "LABELS": labels or {"app": "app-1"},
            "INTERCEPTION_MODE": interception_mode,
        }
    )
    if service_account is not None:
        metadata.update({"SERVICE_ACCOUNT": service_account})
    return base_pb2.Node(id=node_id, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Decoding responses.


def decode(type_url: str, payload: bytes) -> Any:
    return MESSAGES[type_url].FromString(payload)


def _message_name(type_url: str, msg: Any) -> str:
    return msg.cluster_name if type_url == EDS else msg.name


def resources(response: Response) -> dict[str, Any]:
    """Decoded resources of a response, by name (checking the names are unique)."""
    names = resource_names(response)
    out: dict[str, Any] = {}
    if isinstance(response, DeltaDiscoveryResponse):
        for r in response.resources:
            out[r.name] = decode(response.type_url, r.resource.value)
    else:
        for any_msg in response.resources:
            msg = decode(response.type_url, any_msg.value)
            out[_message_name(response.type_url, msg)] = msg
    assert sorted(out) == sorted(names)
    return out


def resource_names(response: Response) -> list[str]:
    """Names in wire order. For Delta, also checks each name matches the resource inside."""
    names: list[str] = []
    if isinstance(response, DeltaDiscoveryResponse):
        for r in response.resources:
            assert r.resource.type_url == response.type_url, r.resource.type_url
            if response.type_url in MESSAGES:
                msg = decode(response.type_url, r.resource.value)
                inner = _message_name(response.type_url, msg)
                assert inner == r.name, f"resource named {r.name!r} carries {inner!r}"
            names.append(r.name)
    else:
        for any_msg in response.resources:
            assert any_msg.type_url == response.type_url, any_msg.type_url
            names.append(_message_name(response.type_url, decode(response.type_url, any_msg.value)))
    return names


def delta_versions(response: DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def describe(response: Response) -> str:
    kind = type_urls.short_name(response.type_url)
    names = resource_names(response) if response.type_url in MESSAGES else []
    text = f"{kind} nonce={response.nonce} resources={names}"
    if isinstance(response, DeltaDiscoveryResponse) and response.removed_resources:
        text += f" removed={list(response.removed_resources)}"
    return text


def assert_no_duplicate_names(response: Response) -> None:
    names = resource_names(response) if response.type_url in MESSAGES else []
    if isinstance(response, DeltaDiscoveryResponse):
        names = [r.name for r in response.resources]
        removed = list(response.removed_resources)
        dup_removed = [n for n, c in Counter(removed).items() if c > 1]
        assert not dup_removed, f"duplicate names in removed_resources: {dup_removed}"
        both = set(names) & set(removed)
        assert not both, f"names both sent and removed in one response: {sorted(both)}"
    dups = [n for n, c in Counter(names).items() if c > 1]
    kind = type_urls.short_name(response.type_url)
    assert not dups, f"duplicate names in one {kind} response: {dups}"


# ---------------------------------------------------------------------------------------------
# The client.

_CLOSE = object()
_EOF = object()


class XdsClient:
    """One ADS stream, as Envoy would hold it. Sends the node on the first request only."""

    def __init__(
        self,
        stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub,
        *,
        delta: bool,
        node: Any,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.delta = delta
        self._node = node
        self._first = True
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        # SotW requests carry the full list of names each time: remember it per type.
        self.names: dict[str, list[str]] = {}
        self.received: list[Response] = []
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.call = method(self._iterate(), metadata=metadata)
        self._reader = asyncio.create_task(self._read())

    async def _iterate(self) -> Any:
        while True:
            item = await self._requests.get()
            if item is _CLOSE:
                return
            yield item

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    self._responses.put_nowait(_EOF)
                    return
                self._responses.put_nowait(msg)
        except grpc.aio.AioRpcError as err:
            self._responses.put_nowait(err)

    # -- sending --------------------------------------------------------------------------

    def _put(self, request: Any) -> None:
        if self._first and self._node is not None:
            request.node.CopyFrom(self._node)
        self._first = False
        self._requests.put_nowait(request)

    def request(
        self,
        type_url: str,
        names: Iterable[str] | None = None,
        *,
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        """SotW: a DiscoveryRequest; `names` None keeps the names last sent for this type."""
        assert not self.delta
        if names is not None:
            self.names[type_url] = list(names)
        request = DiscoveryRequest(
            type_url=type_url,
            resource_names=self.names.get(type_url, []),
            response_nonce=nonce,
            version_info=version,
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        self._put(request)

    def delta_request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial_versions: dict[str, str] | None = None,
    ) -> None:
        assert self.delta
        request = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial_versions or {},
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        self._put(request)

    def ack(self, response: Response) -> None:
        if self.delta:
            self.delta_request(response.type_url, nonce=response.nonce)
        else:
            self.request(response.type_url, nonce=response.nonce, version=response.version_info)

    def nack(self, response: Response, message: str, *, acked_version: str = "") -> None:
        """As Envoy: the rejected nonce, the last version it accepted, and the reason."""
        if self.delta:
            self.delta_request(response.type_url, nonce=response.nonce, error=message)
        else:
            self.request(
                response.type_url, nonce=response.nonce, version=acked_version, error=message
            )

    def close(self) -> None:
        """Half-close: the client is done writing (what a graceful Envoy shutdown does)."""
        self._requests.put_nowait(_CLOSE)

    # -- receiving ------------------------------------------------------------------------

    async def _next(self, within: float) -> Any:
        return await asyncio.wait_for(self._responses.get(), within)

    async def recv(self, type_url: str | None = None, *, within: float = TIMEOUT) -> Any:
        """The next response (of `type_url`, if given); fails if none arrives `within` seconds."""
        try:
            item = await self._next(within)
        except TimeoutError:
            want = type_urls.short_name(type_url) if type_url else "any"
            raise AssertionError(f"no {want} response within {within}s") from None
        if isinstance(item, BaseException):
            raise item
        if item is _EOF:
            raise AssertionError("the server ended the stream")
        assert_no_duplicate_names(item)
        self.received.append(item)
        if type_url is not None:
            assert item.type_url == type_url, (
                f"expected a {type_urls.short_name(type_url)} response, got {describe(item)}"
            )
        return item

    async def expect_silence(self, seconds: float = SILENCE) -> None:
        """Nothing arrives within `seconds`."""
        try:
            item = await self._next(seconds)
        except TimeoutError:
            return
        what = describe(item) if isinstance(item, Response) else repr(item)
        raise AssertionError(f"expected no response, got {what}")

    async def drain(self, *, ack: bool = True, quiet: float = QUIET) -> list[Response]:
        """Every response until the stream goes quiet (at least one), ACKing each as Envoy would."""
        first = await self.recv()
        if ack:
            self.ack(first)
        return [first, *await self.collect(ack=ack, quiet=quiet)]

    async def collect(self, *, ack: bool = True, quiet: float = QUIET) -> list[Response]:
        """Whatever arrives until the stream goes quiet (maybe nothing), ACKing each."""
        out: list[Response] = []
        while True:
            try:
                item = await self._next(quiet)
            except TimeoutError:
                return out
            if isinstance(item, BaseException):
                raise item
            if item is _EOF:
                raise AssertionError("the server ended the stream")
            assert_no_duplicate_names(item)
            self.received.append(item)
            out.append(item)
            if ack:
                self.ack(item)

    async def fetch(self, type_url: str, names: Iterable[str] | None = None) -> Response:
        """Subscribe (SotW: `names`, Delta: subscribe `names`), read the answer, ACK it."""
        if self.delta:
            self.delta_request(type_url, subscribe=names or ())
        else:
            self.request(type_url, names or [])
        response = await self.recv(type_url)
        self.ack(response)
        return response

    async def error(self, within: float = TIMEOUT) -> grpc.aio.AioRpcError:
        """The status the stream failed with (skipping any responses before it)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                item = await self._next(max(left, 0.01))
            except TimeoutError:
                raise AssertionError(f"the stream did not fail within {within}s") from None
            if isinstance(item, grpc.aio.AioRpcError):
                return item
            if item is _EOF:
                raise AssertionError("the stream ended with OK, not an error")

    async def aclose(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, Exception):
            pass


# ---------------------------------------------------------------------------------------------
# The server.


class XdsHarness:
    def __init__(self, ads: AdsService, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> None:
        self.ads = ads
        self.stub = stub
        self.clients: list[XdsClient] = []

    def connect(
        self, *, delta: bool, node: base_pb2.Node | None = None, send_node: bool = True
    ) -> XdsClient:
        """A new stream; it sends `node` (default: the test sidecar) unless `send_node` is off."""
        chosen = (node if node is not None else make_node()) if send_node else None
        client = XdsClient(self.stub, delta=delta, node=chosen)
        self.clients.append(client)
        return client

    def update(self, raws: list[objects.Raw]) -> None:
        """A new PushContext (fresh cache) over these objects: every connection diffs and pushes."""
        self.ads.update(objects.context(*raws))

    def connection(self) -> Connection:
        assert len(self.ads.connections) == 1, list(self.ads.connections)
        return next(iter(self.ads.connections.values()))

    def state(self, type_url: str) -> TypeState:
        return self.connection().stream.types[type_url]

    async def wait_acked(self, response: Response, within: float = TIMEOUT) -> None:
        """Until the server has processed the client's ACK of `response` (it travels
        asynchronously, so a push started right after sending it could overtake it)."""
        if isinstance(response, DeltaDiscoveryResponse):
            version = response.system_version_info
        else:
            version = response.version_info
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.state(response.type_url).version_acked != version:
            if loop.time() > deadline:
                raise AssertionError(f"the server did not record the ACK of {describe(response)}")
            await asyncio.sleep(0.01)

    async def wait_until(
        self, condition: Callable[[], bool], what: str, within: float = TIMEOUT
    ) -> None:
        """Until the server's state satisfies `condition` (requests are processed async)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}")
            await asyncio.sleep(0.01)

    async def wait_for_connections(self, count: int, within: float = TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.ads.connections) != count:
            if loop.time() > deadline:
                raise AssertionError(
                    f"{len(self.ads.connections)} connections after {within}s, wanted {count}: "
                    f"{list(self.ads.connections)}"
                )
            await asyncio.sleep(0.02)


def types_of(responses: Iterable[Response]) -> list[str]:
    return [type_urls.short_name(r.type_url) for r in responses]
