"""The ADS gRPC service (SotW and Delta): a thin adapter around the sans-I/O stream protocol."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc, discovery_pb2

from istiolite import metrics, type_urls
from istiolite.logs import get_logger
from istiolite.model.proxy import Proxy
from istiolite.networking.generator import generate
from istiolite.networking.resource import Resource
from istiolite.push.request import FULL_PUSH, PushRequest
from istiolite.xds.protocol import (
    DeltaStream,
    Nack,
    ProtocolError,
    PushMemo,
    SotwStream,
    WireResponse,
    XdsStream,
    bounded,
)
from istiolite.xds.stream_secrets import (
    Authenticator,
    IdentityMismatch,
    PortPolicy,
    StreamSecrets,
    authenticate,
    may_receive_keys,
    without_secrets,
)
from istiolite.xds.workload_certs import CertificateUnavailable, WorkloadCerts

__all__ = ["AdsService", "Connection", "may_receive_keys", "without_secrets"]

log = get_logger("xds")

ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
# istiod's default push throttle: at most this many proxies are being pushed to at once.
DEFAULT_PUSH_CONCURRENCY = 100
# istiod's PILOT_XDS_SEND_TIMEOUT: a write the peer has not taken in this long closes the stream.
DEFAULT_SEND_TIMEOUT = 5.0
# A push write not done after this long waits on the peer's flow control, not on this process:
# its push slot goes to another stream meanwhile.
SLOT_HOLD = 0.1
# Requests read ahead of the stream's handler; when full, reading stops and HTTP/2 flow control
# pushes back on the peer.
INBOUND_LIMIT = 100

_PUSH = object()  # queue marker: the config changed, diff and send
_END = object()  # queue marker: the client closed its side
_ids = itertools.count(1)
_KNOWN_TYPES = frozenset({*type_urls.PUSH_ORDER, type_urls.NAME_TABLE, type_urls.PROXY_CONFIG})
# What a stream's new workload certificate asks for: a full push, in which only the Secrets
# differ from what the stream has.
SECRETS_PUSH = PushRequest(full=True, reasons=frozenset({"secret"}))


@dataclass(eq=False)
class Connection:
    """One ADS stream: its protocol state, its pending push, and the queue its writer drains."""

    id: str
    peer: str
    delta: bool
    stream: XdsStream[Any]
    secrets: StreamSecrets | None = None
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    pending: PushRequest | None = None
    pending_since: float = 0.0
    # Room for requests in `queue` (push and end markers need none: there is at most one each).
    inbound_room: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(INBOUND_LIMIT)
    )

    @property
    def inbound_depth(self) -> int:
        """Requests read from the peer and not yet handled (at most INBOUND_LIMIT)."""
        return INBOUND_LIMIT - self.inbound_room._value

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

    def workload_secrets(self) -> Mapping[str, Resource]:
        """`default` and `ROOTCA` of this stream's identity, if it has them (for the debug
        pages, which redact the key)."""
        return self.secrets.own() if self.secrets is not None else {}


def _wire(response: bytes) -> bytes:
    # Responses leave the protocol already serialized (from bytes shared by many proxies).
    return response


class SendTimeout(Exception):
    """The peer did not take a response within the send timeout (it does not read)."""


class _Slot:
    """A held push slot, released at most once: early if the write waits on the peer."""

    __slots__ = ("_slots", "held")

    def __init__(self, slots: asyncio.Semaphore | None) -> None:
        self._slots = slots
        self.held = slots is not None

    def release(self) -> None:
        if self.held and self._slots is not None:
            self.held = False
            self._slots.release()


class AdsService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Owns the current config snapshot and every live connection.

    Key material: `workload_certs` issues `default`/`ROOTCA` per identity; which stream gets
    them (and the gateway credentials) is decided per gRPC port by the PortPolicy it was
    registered with: an authenticator on the secure port, `dev_plaintext_sds` on the
    plaintext one (see stream_secrets.py).
    """

    def __init__(
        self,
        context: Any,
        *,
        generator: Callable[..., Any] = generate,
        push_concurrency: int = DEFAULT_PUSH_CONCURRENCY,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        workload_certs: WorkloadCerts | None = None,
        dev_plaintext_sds: bool = False,
    ) -> None:
        self.context = context
        self.connections: dict[str, Connection] = {}
        self._generate = generator
        self.workload_certs = workload_certs
        self.dev_plaintext_sds = dev_plaintext_sds
        # Comparisons shared by the streams within one push; emptied when the context changes.
        self.memo = PushMemo()
        self._push_slots = asyncio.Semaphore(push_concurrency)
        self.send_timeout = send_timeout

    def register(
        self, server: grpc.aio.Server, *, authenticator: Authenticator | None = None
    ) -> None:
        """Add ADS to a server; responses are pre-serialized bytes, so no serializer runs.
        With `authenticator` (the secure port) every stream is authenticated first and gets the
        key material of its own identity; without, this is the plaintext port (see
        stream_secrets.py and `dev_plaintext_sds`)."""
        policy = PortPolicy(authenticator, self.dev_plaintext_sds and authenticator is None)

        async def sotw(requests: AsyncIterator[Any], context: Any) -> None:
            await self._serve(requests, context, delta=False, policy=policy)

        async def delta(requests: AsyncIterator[Any], context: Any) -> None:
            await self._serve(requests, context, delta=True, policy=policy)

        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_wire,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                delta,
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
        await self._serve(request_iterator, context, delta=False, policy=self._plaintext())

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, bytes]
    ) -> None:
        await self._serve(request_iterator, context, delta=True, policy=self._plaintext())

    def _plaintext(self) -> PortPolicy:
        return PortPolicy(None, self.dev_plaintext_sds)

    async def _serve(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, bytes],
        *,
        delta: bool,
        policy: PortPolicy,
    ) -> None:
        stream_cls = DeltaStream if delta else SotwStream
        peer = context.peer()
        try:
            # Before anything is read or sent: who is calling (secure port only).
            authenticated = await authenticate(policy, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            reason = bounded(str(err), 300)
            log.warning("stream not authenticated", peer=peer, error=reason)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"not authenticated: {reason}")
            return
        conn_id = f"conn-{next(_ids)}"
        secrets = StreamSecrets(
            peer=peer,
            policy=policy,
            authenticated=authenticated,
            certs=self.workload_certs,
            shared=self._generate,
            key=conn_id,
            on_change=lambda: conn.request_push(SECRETS_PUSH),
        )
        conn = Connection(
            id=conn_id,
            peer=peer,
            delta=delta,
            stream=stream_cls(secrets.generate, on_nack=_record_nack, memo=self.memo),
            secrets=secrets,
        )
        self.connections[conn.id] = conn
        reader = asyncio.create_task(_read(requests, conn))
        client_version: str | None = None
        response: WireResponse | None = None  # released between items (see below)
        stuck: SendTimeout | None = None
        try:
            while True:
                item = await conn.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item is _PUSH:
                    await self._push_slots.acquire()
                    slot = _Slot(self._push_slots)
                    try:
                        request = conn.take_push()
                        started = time.perf_counter()
                        responses = conn.stream.on_push(self.context, request)
                        for response in responses:
                            await self._write(context, response.data, slot)
                            _count(response, started)
                    finally:
                        slot.release()
                    if responses and request.started:
                        metrics.CONVERGENCE.observe(time.monotonic() - request.started)
                    _log_sent(conn, responses, "push")
                    # Idle streams must not keep their last (often megabyte-sized) responses.
                    responses = []
                    response = None
                    # Let requests and other streams in between pushes of a storm.
                    await asyncio.sleep(0)
                    continue
                conn.inbound_room.release()
                if conn.proxy is None:
                    # The node's claim is checked before anything is generated for it.
                    proxy = conn.stream.identify(item)
                    secrets.identify(proxy)
                    if secrets.identity is not None and self.workload_certs is not None:
                        # It will hold a mesh certificate: auto-mTLS and PERMISSIVE mTLS
                        # chains are generated only for such proxies (networking/mtls.py).
                        conn.stream.proxy = dataclasses.replace(proxy, mesh_mtls=True)
                await secrets.prepare(item)
                started = time.perf_counter()
                responses = conn.stream.on_request(item, self.context)
                if client_version is None and conn.proxy is not None:
                    client_version = metrics.xds_client_connected(conn.proxy.istio_version)
                    log.info(
                        "proxy connected",
                        proxy=bounded(conn.proxy.id),
                        connection=conn.id,
                        peer=conn.peer,
                        delta=delta,
                    )
                # Answers to a request are outside the push throttle: they are what the proxy
                # waits for, and a slot must never wait on a peer's reading.
                for response in responses:
                    await self._write(context, response.data, _Slot(None))
                    _count(response, started)
                _log_sent(conn, responses, "request")
                responses, item, response = [], None, None
        except SendTimeout as err:
            metrics.SEND_TIMEOUTS.inc()
            log.warning(
                "stream closed: the peer does not read",
                connection=conn.id,
                peer=conn.peer,
                proxy=bounded(_proxy_id(conn)),
                error=str(err),
            )
            stuck = err
        except ProtocolError as err:
            log.warning(
                "stream rejected", connection=conn.id, peer=conn.peer, error=bounded(str(err))
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except IdentityMismatch as err:
            log.warning(
                "stream refused: the node claims another identity",
                connection=conn.id,
                peer=conn.peer,
                error=str(err),
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
        except CertificateUnavailable as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            # A bug in translation: say so loudly, close this stream; the proxy reconnects.
            log.exception(
                "config generation failed", connection=conn.id, proxy=bounded(_proxy_id(conn))
            )
            await context.abort(grpc.StatusCode.INTERNAL, f"config generation failed: {err}")
        finally:
            reader.cancel()
            secrets.close()
            del self.connections[conn.id]
            if conn.pending is not None:
                metrics.QUEUE_DEPTH.dec()
            if client_version is not None:
                metrics.xds_client_disconnected(client_version)
            if conn.proxy is not None:
                log.info("proxy disconnected", proxy=bounded(conn.proxy.id), connection=conn.id)
        if stuck is not None:
            # Only now, with the stream's slot and bookkeeping let go: the status itself queues
            # behind the data the peer does not take, so this may wait until the connection ends.
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(stuck))

    async def _write(
        self, context: grpc.aio.ServicerContext[Any, bytes], data: bytes, slot: _Slot
    ) -> None:
        """One write, within the send timeout; a push slot is let go once the write waits on
        the peer's flow control rather than on this process."""
        write = asyncio.ensure_future(context.write(data))
        waited = 0.0
        try:
            if slot.held:
                waited = min(SLOT_HOLD, self.send_timeout)
                await asyncio.wait((write,), timeout=waited)
                slot.release()
            if not write.done():
                await asyncio.wait((write,), timeout=self.send_timeout - waited)
        except BaseException:
            write.cancel()
            raise
        if not write.done():
            write.cancel()
            raise SendTimeout(
                f"a {len(data)}-byte response was not taken within {self.send_timeout:g}s"
            )
        write.result()


async def _read(requests: AsyncIterator[Any], conn: Connection) -> None:
    queue = conn.queue
    try:
        while True:
            # No room: stop reading, so the peer's sends wait on HTTP/2 flow control instead
            # of growing this process.
            await conn.inbound_room.acquire()
            try:
                request = await anext(requests)
            except StopAsyncIteration:
                break
            queue.put_nowait(request)
        queue.put_nowait(_END)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # the client went away mid-read
        queue.put_nowait(err)


def _metric_type(type_url: str) -> str:
    # Type URLs come from clients: unknown ones share one label value.
    if type_url not in _KNOWN_TYPES:
        return "other"
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
            types=[bounded(type_urls.short_name(r.type_url), 200) for r in responses],
            versions=[r.version for r in responses],
        )


def _proxy_id(conn: Connection) -> str:
    return conn.proxy.id if conn.proxy is not None else ""


def _record_nack(proxy: Proxy, type_url: str, nack: Nack) -> None:
    metrics.REJECTS.inc(_metric_type(type_url))
    log.warning(
        "config rejected by proxy",
        proxy=bounded(proxy.id),
        type=bounded(type_urls.short_name(type_url), 200),
        version=nack.rejected_version,
        nonce=nack.nonce,
        error=nack.message,  # already cut to NACK_MESSAGE_MAX
    )
