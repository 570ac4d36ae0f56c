"""A gRPC upstream for route tests: answers any unary method of the services it is given with
its own name and the method's path, as raw bytes (no generated stubs needed), on loopback."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent import futures
from typing import Any

import grpc


class GrpcUpstream:
    def __init__(self, name: str, services: Iterable[str], methods: Iterable[str]) -> None:
        self.name = name
        self._services = tuple(services)
        self._methods = tuple(methods)
        self._server: grpc.Server | None = None
        self.port = 0

    def _handler(self, path: str) -> grpc.RpcMethodHandler:
        def answer(request: bytes, context: Any) -> bytes:
            seen = dict(context.invocation_metadata())
            echoed = seen.get("x-echo", "")
            return f"{self.name} {path} {echoed}".strip().encode()

        return grpc.unary_unary_rpc_method_handler(answer)

    def start(self) -> GrpcUpstream:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for service in self._services:
            handlers = {m: self._handler(f"/{service}/{m}") for m in self._methods}
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(timeout=5)
            self._server = None
