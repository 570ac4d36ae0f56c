"""The ADS gRPC service (SotW and Delta): a thin adapter around the sans-I/O stream protocol."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from istiolite.logs import get_logger
from istiolite.model.proxy import Proxy
from istiolite.networking.generator import generate
from istiolite.xds import types
from istiolite.xds.protocol import DeltaStream, Nack, ProtocolError, SotwStream, XdsStream

log = get_logger("xds")

_PUSH = object()  # queue marker: the config changed, diff and send
_END = object()  # queue marker: the client closed its side
_ids = itertools.count(1)


@dataclass(eq=False)
class Connection:
    """One ADS stream: its protocol state and the queue its writer drains."""

    id: str
    peer: str
    delta: bool
    stream: XdsStream[Any]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    push_pending: bool = False

    def request_push(self) -> None:
        # Pushes merge: one marker in the queue stands for every change since it was put there.
        if not self.push_pending:
            self.push_pending = True
            self.queue.put_nowait(_PUSH)

    @property
    def proxy(self) -> Proxy | None:
        return self.stream.proxy


class AdsService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Owns the current config snapshot and every live connection."""

    def __init__(self, context: Any, *, generator: Callable[..., Any] = generate) -> None:
        self.context = context
        self.connections: dict[str, Connection] = {}
        self._generate = generator

    def update(self, context: Any) -> None:
        """A new push context: every connection diffs against it and sends what changed."""
        self.context = context
        for conn in self.connections.values():
            conn.request_push()

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for response in self._serve(request_iterator, context, delta=False):
            yield response

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for response in self._serve(request_iterator, context, delta=True):
            yield response

    async def _serve(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, *, delta: bool
    ) -> AsyncIterator[Any]:
        stream_cls = DeltaStream if delta else SotwStream
        conn = Connection(
            id=f"conn-{next(_ids)}",
            peer=context.peer(),
            delta=delta,
            stream=stream_cls(self._generate, on_nack=_log_nack),
        )
        self.connections[conn.id] = conn
        reader = asyncio.create_task(_read(requests, conn.queue))
        try:
            while True:
                item = await conn.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item is _PUSH:
                    conn.push_pending = False
                    responses = conn.stream.on_push(self.context)
                else:
                    known = conn.proxy is not None
                    responses = conn.stream.on_request(item, self.context)
                    if not known and conn.proxy is not None:
                        log.info(
                            "proxy connected",
                            proxy=conn.proxy.id,
                            connection=conn.id,
                            peer=conn.peer,
                            delta=delta,
                        )
                for response in responses:
                    yield response
                if responses and conn.proxy is not None:
                    log.debug(
                        "sent",
                        proxy=conn.proxy.id,
                        types=[types.short_name(r.type_url) for r in responses],
                        reason="push" if item is _PUSH else "request",
                    )
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
            if conn.proxy is not None:
                log.info("proxy disconnected", proxy=conn.proxy.id, connection=conn.id)


async def _read(requests: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    try:
        async for request in requests:
            queue.put_nowait(request)
        queue.put_nowait(_END)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # the client went away mid-read
        queue.put_nowait(err)


def _proxy_id(conn: Connection) -> str:
    return conn.proxy.id if conn.proxy is not None else ""


def _log_nack(proxy: Proxy, type_url: str, nack: Nack) -> None:
    log.warning(
        "config rejected by proxy",
        proxy=proxy.id,
        type=types.short_name(type_url),
        version=nack.rejected_version,
        nonce=nack.nonce,
        error=nack.message,
    )
