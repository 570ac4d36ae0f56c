"""The limit: a bare grpc.aio ADS server that sends pre-serialized bytes to every stream.

It registers both ADS methods (SotW and Delta) with identity serializers, so the bytes it was
given (responses istiolite really sent, captured by the load generator) go out unchanged. It
reads and discards whatever the clients send (their ACKs and subscriptions). On `send` it queues
the same list of messages on every open stream; each stream's handler yields them back to back,
as istiolite's ADS handler yields its responses. So the difference between istiolite's push time
and this one is what istiolite spends deciding, building and serializing, and its scheduling.

Runs in its own process (like istiolite) and is driven over a pipe by `RawSenderHandle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

import grpc

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_CLOSE = object()

# The options that matter for throughput, as istiolite's server sets them.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class RawAds:
    def __init__(self) -> None:
        self.streams: dict[int, asyncio.Queue[Any]] = {}
        self.ready: set[int] = set()  # streams whose first request has arrived
        self._ids = 0

    async def handle(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self._ids += 1
        sid = self._ids
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.streams[sid] = queue

        async def drain() -> None:
            with contextlib.suppress(Exception):
                async for _ in requests:
                    self.ready.add(sid)
            queue.put_nowait(_CLOSE)

        reader = asyncio.create_task(drain())
        try:
            while True:
                batch = await queue.get()
                if batch is _CLOSE:
                    return
                for payload in batch:
                    yield payload
        finally:
            reader.cancel()
            self.streams.pop(sid, None)
            self.ready.discard(sid)

    def send(self, payloads: list[bytes]) -> int:
        for queue in self.streams.values():
            queue.put_nowait(payloads)
        return len(self.streams)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(self.handle)  # bytes in, bytes out
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {"StreamAggregatedResources": method, "DeltaAggregatedResources": method},
        )


async def _serve(conn: Connection) -> None:
    ads = RawAds()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((ads.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(port)
    loop = asyncio.get_running_loop()
    try:
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "exit":
                break
            if command == "ready":
                conn.send(len(ads.ready))
            elif command == "send":
                conn.send(ads.send(args[0]))
            else:
                conn.send({"error": f"unknown command {command}"})
    finally:
        await server.stop(grace=None)
    conn.send(None)


def _main(conn: Connection) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(conn))


class RawSenderHandle:
    """Start the raw sender in its own process; `send` returns the time just before the order."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(30):
            raise TimeoutError("raw sender did not start")
        self.port: int = self.conn.recv()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def _call(self, command: str, *args: Any, timeout: float = 30.0) -> Any:
        self.conn.send((command, args))
        if not self.conn.poll(timeout):
            raise TimeoutError(f"raw sender: no reply to {command} in {timeout}s")
        return self.conn.recv()

    def ready_streams(self) -> int:
        return int(self._call("ready"))

    def send(self, payloads: list[bytes]) -> tuple[float, int]:
        started = time.monotonic()
        streams = int(self._call("send", payloads))
        return started, streams

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self._call("exit", timeout=10)
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its PID
            self.process.join(timeout=5)
        self.conn.close()
