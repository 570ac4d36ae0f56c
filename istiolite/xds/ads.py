"""The ADS gRPC service (SotW and Delta): a thin adapter around the sans-I/O stream protocol."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc, discovery_pb2

from istiolite import metrics, type_urls
from istiolite.logs import get_logger
from istiolite.model.proxy import Proxy
from istiolite.networking.generator import generate
from istiolite.push.request import FULL_PUSH, PushRequest
from istiolite.xds.protocol import (
    DeltaStream,
    Nack,
    ProtocolError,
    PushMemo,
    SotwStream,
    WireResponse,
    XdsStream,
)

log = get_logger("xds")

ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
# istiod's default push throttle: at most this many proxies are being pushed to at once.
DEFAULT_PUSH_CONCURRENCY = 100

_PUSH = object()  # queue marker: the config changed, diff and send
_END = object()  # queue marker: the client closed its side
_ids = itertools.count(1)


@dataclass(eq=False)
class Connection:
    """One ADS stream: its protocol state, its pending push, and the queue its writer drains."""

    id: str
    peer: str
    delta: bool
    stream: XdsStream[Any]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    pending: PushRequest | None = None
    pending_since: float = 0.0

    def request_push(self, request: PushRequest) -> None:
        # At most one pending push per proxy: later changes merge into it.
        if self.pending is None:
            self.pending = request
            self.pending_since = time.monotonic()
            metrics.QUEUE_DEPTH.inc()
            self.queue.put_nowait(_PUSH)
        else:
            self.pending = self.pending.merge(request)

    def take_push(self) -> PushRequest:
        request = self.pending or FULL_PUSH
        if self.pending is not None:
            metrics.QUEUE_DEPTH.dec()
            metrics.QUEUE_TIME.observe(time.monotonic() - self.pending_since)
        self.pending = None
        return request

    @property
    def proxy(self) -> Proxy | None:
        return self.stream.proxy


def _wire(response: bytes) -> bytes:
    # Responses leave the protocol already serialized (from bytes shared by many proxies).
    return response


class AdsService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Owns the current config snapshot and every live connection."""

    def __init__(
        self,
        context: Any,
        *,
        generator: Callable[..., Any] = generate,
        push_concurrency: int = DEFAULT_PUSH_CONCURRENCY,
    ) -> None:
        self.context = context
        self.connections: dict[str, Connection] = {}
        self._generate = generator
        # Comparisons shared by the streams within one push; emptied when the context changes.
        self.memo = PushMemo()
        self._push_slots = asyncio.Semaphore(push_concurrency)

    def register(self, server: grpc.aio.Server) -> None:
        """Add ADS to a server; responses are pre-serialized bytes, so no serializer runs."""
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_wire,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_wire,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),)
        )

    def update(self, context: Any, request: PushRequest = FULL_PUSH) -> None:
        """A new push context: every connection diffs against it and sends what changed."""
        self.context = context
        self.memo.clear()
        for conn in self.connections.values():
            conn.request_push(request.for_proxy(conn.proxy))

    # Coroutine handlers that write, not async generators: grpc.aio keeps the last message an
    # async generator yielded alive until the next one, which is ~1 MB per idle proxy.
    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, bytes]
    ) -> None:
        await self._serve(request_iterator, context, delta=False)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, bytes]
    ) -> None:
        await self._serve(request_iterator, context, delta=True)

    async def _serve(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, bytes],
        *,
        delta: bool,
    ) -> None:
        stream_cls = DeltaStream if delta else SotwStream
        peer = context.peer()
        generator = self._generate if may_receive_keys(peer) else _without_secrets(self._generate)
        conn = Connection(
            id=f"conn-{next(_ids)}",
            peer=peer,
            delta=delta,
            stream=stream_cls(generator, on_nack=_record_nack, memo=self.memo),
        )
        self.connections[conn.id] = conn
        reader = asyncio.create_task(_read(requests, conn.queue))
        client_version: str | None = None
        response: WireResponse | None = None  # released between items (see below)
        try:
            while True:
                item = await conn.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item is _PUSH:
                    async with self._push_slots:
                        request = conn.take_push()
                        started = time.perf_counter()
                        responses = conn.stream.on_push(self.context, request)
                        for response in responses:
                            await context.write(response.data)
                            _count(response, started)
                        if responses and request.started:
                            metrics.CONVERGENCE.observe(time.monotonic() - request.started)
                    _log_sent(conn, responses, "push")
                    # Idle streams must not keep their last (often megabyte-sized) responses.
                    responses = []
                    response = None
                    # Let requests and other streams in between pushes of a storm.
                    await asyncio.sleep(0)
                    continue
                started = time.perf_counter()
                responses = conn.stream.on_request(item, self.context)
                if client_version is None and conn.proxy is not None:
                    client_version = conn.proxy.istio_version or "unknown"
                    metrics.XDS_CLIENTS.labels(client_version).inc()
                    log.info(
                        "proxy connected",
                        proxy=conn.proxy.id,
                        connection=conn.id,
                        peer=conn.peer,
                        delta=delta,
                    )
                if responses:
                    # Initial answers are the biggest (a connect storm): bounded like pushes.
                    async with self._push_slots:
                        for response in responses:
                            await context.write(response.data)
                            _count(response, started)
                _log_sent(conn, responses, "request")
                responses, item, response = [], None, None
        except ProtocolError as err:
            log.warning("stream rejected", connection=conn.id, peer=conn.peer, error=str(err))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            # A bug in translation: say so loudly, close this stream; the proxy reconnects.
            log.exception("config generation failed", connection=conn.id, proxy=_proxy_id(conn))
            await context.abort(grpc.StatusCode.INTERNAL, f"config generation failed: {err}")
        finally:
            reader.cancel()
            del self.connections[conn.id]
            if conn.pending is not None:
                metrics.QUEUE_DEPTH.dec()
            if client_version is not None:
                metrics.XDS_CLIENTS.labels(client_version).dec()
            if conn.proxy is not None:
                log.info("proxy disconnected", proxy=conn.proxy.id, connection=conn.id)


def may_receive_keys(peer: str) -> bool:
    """Key material (SDS) crosses this plaintext port only on loopback or a Unix socket: the
    local development mode of DESIGN §5. Elsewhere a proxy must first prove its identity over
    the TLS port, which comes with the security work."""
    if peer.startswith("unix:"):
        return True
    host = urllib.parse.unquote(peer.partition(":")[2]).rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _without_secrets(generate: Callable[..., Any]) -> Callable[..., Any]:
    def generate_public(ctx: Any, proxy: Proxy, type_url: str) -> Any:
        if type_url == type_urls.SECRET:
            return {}
        return generate(ctx, proxy, type_url)

    return generate_public


async def _read(requests: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    try:
        async for request in requests:
            queue.put_nowait(request)
        queue.put_nowait(_END)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # the client went away mid-read
        queue.put_nowait(err)


def _metric_type(type_url: str) -> str:
    return type_urls.short_name(type_url).lower()


def _count(response: WireResponse, started: float) -> None:
    kind = _metric_type(response.type_url)
    metrics.PUSHES.inc(kind)
    metrics.CONFIG_SIZE.labels(kind).observe(len(response.data))
    metrics.PUSH_TIME.labels(kind).observe(time.perf_counter() - started)


def _log_sent(conn: Connection, responses: list[WireResponse], reason: str) -> None:
    if responses and conn.proxy is not None:
        log.debug(
            "sent",
            proxy=conn.proxy.id,
            reason=reason,
            types=[type_urls.short_name(r.type_url) for r in responses],
            versions=[r.version for r in responses],
        )


def _proxy_id(conn: Connection) -> str:
    return conn.proxy.id if conn.proxy is not None else ""


def _record_nack(proxy: Proxy, type_url: str, nack: Nack) -> None:
    metrics.REJECTS.inc(_metric_type(type_url))
    log.warning(
        "config rejected by proxy",
        proxy=proxy.id,
        type=type_urls.short_name(type_url),
        version=nack.rejected_version,
        nonce=nack.nonce,
        error=nack.message,
    )
