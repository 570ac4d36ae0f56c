"""A small HTTP/1.1 server on the event loop for /ready, /version and the debug pages."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from istiolite.logs import get_logger

log = get_logger("http")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: str | bytes
    content_type: str = "text/plain; charset=utf-8"


# A handler takes no argument or the query (dict of lists); it returns a Response or awaits one.
Handler = Callable[..., Response | Awaitable[Response]]


async def _call(handler: Handler, query: dict[str, list[str]], path: str) -> Response:
    """Run a handler (plain or async); a failure is a 500 and a log line, never a dropped socket."""
    try:
        takes_query = bool(inspect.signature(handler).parameters)
        result = handler(query) if takes_query else handler()
        if inspect.isawaitable(result):
            result = await result
        return result  # type: ignore[no-any-return]
    except Exception as err:
        log.exception("debug page failed", path=path)
        return Response(500, f"internal error: {type(err).__name__}: {err}\n")


class HttpServer:
    """GET only; a handler takes no arguments or one (the query as a dict of lists)."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self._routes = routes
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            url = urlsplit(target)
            handler = self._routes.get(url.path)
            if method != "GET":
                response = Response(400, "only GET is supported\n")
            elif handler is None:
                response = Response(404, f"no such page: {url.path}\n")
            else:
                response = await _call(handler, parse_qs(url.query), url.path)
            body = response.body.encode() if isinstance(response.body, str) else response.body
            writer.write(
                f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
