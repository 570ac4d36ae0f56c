"""istiolite's ADS behind TLS in this process, on its own event-loop thread, for integration
tests whose own code is synchronous (Envoy processes, blocking HTTP): the same AdsService and
per-stream authentication the secure port runs, with a test authenticator and CA."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from istiolite.xds.ads import AdsService

T = TypeVar("T")


class TlsXdsServer:
    def __init__(
        self,
        pair: Any,
        authenticator: Any,
        make_ads: Callable[[], AdsService],
        *,
        max_connection_age_ms: int | None = None,
    ) -> None:
        """`pair`: the serving certificate and key; `make_ads` runs on the server's loop."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        options = []
        if max_connection_age_ms is not None:
            options = [
                ("grpc.max_connection_age_ms", max_connection_age_ms),
                ("grpc.max_connection_age_grace_ms", 500),
            ]
        self.ads: AdsService | None = None
        self.port = self.call(self._start(pair, authenticator, make_ads, options))

    async def _start(
        self, pair: Any, authenticator: Any, make_ads: Callable[[], AdsService], options: Any
    ) -> int:
        self.ads = make_ads()
        self.server = grpc.aio.server(options=options)
        self.ads.register(self.server, authenticator=authenticator)
        creds = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
        port = self.server.add_secure_port("127.0.0.1:0", creds)
        await self.server.start()
        return port

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def on_loop(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        result: T = self.call(run())
        return result

    def connected(self) -> list[str]:
        def ids() -> list[str]:
            assert self.ads is not None
            return [c.proxy.id for c in self.ads.connections.values() if c.proxy is not None]

        return self.on_loop(ids)

    def stop(self) -> None:
        try:
            self.call(self.server.stop(None))
            if self.ads is not None and self.ads.workload_certs is not None:
                self.call(self.ads.workload_certs.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
