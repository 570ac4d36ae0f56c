"""The state the debug pages read, built from real parts and no sockets.

A real `Istiolite` (not started) loads a config directory; proxies are `Connection`s whose
`SotwStream`/`DeltaStream` (the real sans-I/O protocol) are fed DiscoveryRequests directly, so
their subscriptions, nonces, ACKs and NACKs are exactly what a live stream would record.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from istiolite import type_urls
from istiolite.networking.generator import generate
from istiolite.server import DebugStatusView, Istiolite
from istiolite.settings import Settings
from istiolite.xds.ads import Connection
from istiolite.xds.protocol import DeltaStream, SotwStream, TypeState
from tests.protocol.harness import make_node
from tests.support import mesh, objects

CDS, EDS, LDS, RDS = type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.ROUTE
NODE_ID = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local"
OTHER_NODE_ID = "sidecar~10.0.0.2~web-1.shop~shop.svc.cluster.local"
REVIEWS = objects.outbound_cluster("reviews", 9080)
DETAILS = objects.outbound_cluster("details", 9081)
BROKEN_MESSAGE = "must be between 1 and 65535, got 99999"

_ids = itertools.count(1)


def write_config(directory: Path) -> None:
    """reviews (one ready endpoint in region r1 / zone z1, one not ready), details (no
    endpoints), and a file holding one invalid Service next to a valid Namespace."""
    mesh.write(
        directory / "reviews.yaml",
        objects.service(
            "reviews",
            ports=[objects.service_port("http", 9080, target_port=8080)],
            cluster_ip="10.96.0.10",
        ),
        objects.endpoint_slice(
            "reviews",
            endpoints=[
                objects.endpoint("10.1.0.1", node_name="n1", pod="reviews-1", namespace="default"),
                objects.endpoint("10.1.0.2", ready=False),
            ],
            ports=[("http", 8080)],
        ),
        objects.pod(
            "reviews-1",
            ip="10.1.0.1",
            labels={"app": "reviews"},
            service_account="bookinfo-reviews",
            node_name="n1",
        ),
        objects.node("n1", region="r1", zone="z1"),
    )
    mesh.write(
        directory / "details.yaml",
        objects.service("details", ports=[objects.service_port("http", 9081)]),
    )
    mesh.write(
        directory / "broken.yaml",
        objects.namespace("shop"),
        objects.service("broken", "shop", ports=[objects.service_port("http", 99999)]),
    )


def make_app(tmp_path: Path) -> Istiolite:
    config = tmp_path / "config"
    config.mkdir()
    write_config(config)
    app = Istiolite(Settings(config_dirs=[config]))
    app.files.load_all()
    app.pusher.start()
    return app


def status(app: Istiolite) -> DebugStatusView:
    """What the debug pages read of this app (the server's own adapter)."""
    return DebugStatusView(app)


@dataclass
class Driver:
    """One proxy's stream, driven with the requests Envoy would send."""

    app: Istiolite
    conn: Connection
    node_id: str
    names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def delta(self) -> bool:
        return self.conn.delta

    def state(self, type_url: str) -> TypeState:
        return self.conn.stream.types[type_url]

    def _node(self) -> object:
        return make_node(self.node_id, namespace=self.node_id.split("~")[2].split(".")[1])

    def subscribe(self, type_url: str, names: list[str] | None = None) -> None:
        ctx = self.app.ads.context
        stream = self.conn.stream
        if self.delta:
            assert isinstance(stream, DeltaStream)
            stream.on_request(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=self._node(), type_url=type_url, resource_names_subscribe=names or []
                ),
                ctx,
            )
        else:
            assert isinstance(stream, SotwStream)
            self.names[type_url] = names or []
            stream.on_request(
                discovery_pb2.DiscoveryRequest(
                    node=self._node(), type_url=type_url, resource_names=names or []
                ),
                ctx,
            )

    def ack(self, type_url: str) -> None:
        self._answer(type_url, None)

    def nack(self, type_url: str, message: str) -> None:
        self._answer(type_url, message)

    def _answer(self, type_url: str, error: str | None) -> None:
        state = self.state(type_url)
        ctx = self.app.ads.context
        if self.delta:
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, response_nonce=state.nonce_sent
            )
        else:
            request = discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                resource_names=self.names.get(type_url, []),
                response_nonce=state.nonce_sent,
                # A NACK carries the last version the client accepted, an ACK the one it got.
                version_info=state.version_acked if error else state.version_sent,
            )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        self.conn.stream.on_request(request, ctx)  # type: ignore[arg-type]

    def push(self) -> None:
        """The config changed: the stream diffs and (in its own bookkeeping) sends."""
        self.conn.stream.on_push(self.app.ads.context)


def connect(app: Istiolite, node_id: str = NODE_ID, *, delta: bool = False) -> Driver:
    stream = (DeltaStream if delta else SotwStream)(generate)
    conn = Connection(
        id=f"conn-test-{next(_ids)}", peer="ipv4:127.0.0.1:40000", delta=delta, stream=stream
    )
    app.ads.connections[conn.id] = conn
    return Driver(app, conn, node_id)


def synced(app: Istiolite, node_id: str = NODE_ID, *, delta: bool = False) -> Driver:
    """A proxy that subscribed to CDS, EDS (every EDS cluster), LDS and RDS and ACKed it all."""
    driver = connect(app, node_id, delta=delta)
    driver.subscribe(CDS)
    driver.ack(CDS)
    driver.subscribe(EDS, [DETAILS, REVIEWS])
    driver.ack(EDS)
    driver.subscribe(LDS)
    driver.ack(LDS)
    driver.subscribe(RDS, ["9080", "9081"])
    driver.ack(RDS)
    return driver
