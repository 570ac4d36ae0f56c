"""HTTP/1.1 servers on the event loop (aiohttp.web): /ready, /version, /metrics, /debug/*, and
later the webhooks (POST, over TLS).

Handlers see this module's `Request` and return its `Response`: they stay plain functions,
testable without sockets, and aiohttp stays behind this one module. Every request is bounded:

- header size: a request line or header field longer than `max_header_bytes` gets a 400 and the
  connection is closed (aiohttp's `max_line_size` / `max_field_size`), logged as one line, not
  aiohttp's traceback;
- body size: more than `max_body_bytes` gets a 413 (aiohttp's `client_max_size`);
- slow clients: a request head must arrive whole within `read_timeout` of its first byte (of the
  connection opening, for the first request), else the connection is closed; a body that does not
  arrive within `read_timeout` gets a 408; an idle keep-alive connection is closed after
  `keepalive_timeout`;
- handlers: one that takes longer than `handler_timeout` gets a 503;
- connections: past `max_connections` open at once, a new one gets a 503 and is closed before
  anything of it is read.

`local_only` wraps a handler so that it answers only loopback peers (403 to others): the debug
pages list every object and every proxy, and the port they share with /ready listens on every
interface (the kubelet probes the pod IP).

An unknown path is a 404, a known path with another method a 405 (with `Allow`). A failing handler
is a 500 and a log line, never a dropped connection.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from istiolite.logs import get_logger

log = get_logger("http")


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive when served
    body: bytes = b""
    peer: str = ""  # the client's IP address ("" when unknown, e.g. a Unix socket)

    def arg(self, name: str) -> str:
        """The first value of a query parameter, stripped ("" when absent)."""
        return (self.query.get(name) or [""])[0].strip()


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: str | bytes
    content_type: str = "text/plain; charset=utf-8"


# A handler takes the Request; it returns a Response or awaits one.
Handler = Callable[[Request], Response | Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 8190
    max_body_bytes: int = 4 * 1024 * 1024  # an AdmissionReview carries up to two ~1.5 MB objects
    read_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    handler_timeout: float = 30.0
    max_connections: int = 128


def is_loopback_peer(host: str) -> bool:
    """Whether a client address is this host's own: 127.0.0.0/8, ::1, or v4-mapped loopback.
    Anything unparseable is not."""
    try:
        address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def local_only(handler: Handler, opt_in: str) -> Handler:
    """`handler` for loopback peers; a 403 naming the peer and how to opt in for any other."""

    async def guarded(request: Request) -> Response:
        if not is_loopback_peer(request.peer):
            return Response(
                403,
                f"{request.path} is served to loopback clients only ({opt_in}); "
                f"this request came from {request.peer or 'an unknown address'}\n",
            )
        result = handler(request)
        return await result if inspect.isawaitable(result) else result

    return guarded


class _OneLineParseErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a header past the limit, garbage) with a
    traceback: that is the client's mistake, so it becomes one bounded log line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        log.info("http bad request", peer=str(peer), status=exc.code, error=str(exc)[:200])
        return False


_aiohttp_log = logging.getLogger("istiolite.http.aiohttp")
_aiohttp_log.addFilter(_OneLineParseErrors())


class _ConnectionSlots:
    """Open connections of one site, up to a cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give(self) -> None:
        self.open -= 1


_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
)


class _SlowClientGuard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: closes it when a request head does not arrive
    whole within the read timeout (aiohttp bounds idle connections, not slow ones)."""

    def __init__(
        self, inner: asyncio.Protocol, read_timeout: float, slots: _ConnectionSlots
    ) -> None:
        self._inner = inner
        self._slots = slots
        self._admitted = False
        self._read_timeout = read_timeout
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a request is being handled: its body has its own timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._slots.take():
            # Over the cap: answered and closed here; aiohttp never sees the connection.
            log.warning("http connection refused: too many open", limit=self._slots.limit)
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_TOO_MANY)
            transport.close()
            return
        self._admitted = True
        self._arm()  # the first request counts from the connection's opening
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._timer is None and not self._busy:
            self._arm()  # first byte of the next request
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._slots.give()
        self._disarm()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_done(self) -> None:
        self._busy = False  # idle until the next byte: aiohttp's keep-alive timeout applies

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._read_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            log.info(
                "http client too slow, closing", peer=self._transport.get_extra_info("peername")
            )
            self._transport.close()


def _guard_of(request: web.BaseRequest) -> _SlowClientGuard | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, _SlowClientGuard) else None


@web.middleware
async def _every_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Marks the connection busy while a request is handled; words 404 and 405 for humans."""
    guard = _guard_of(request)
    if guard is not None:
        guard.request_started()
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _plain(404, f"no such page: {request.path}\n")
    except web.HTTPMethodNotAllowed as err:
        response = _plain(405, f"{request.method} is not allowed on {request.path}\n")
        response.headers["Allow"] = ",".join(sorted(err.allowed_methods))
        return response
    finally:
        if guard is not None:
            guard.request_done()


class _GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with each connection's protocol wrapped in a _SlowClientGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        read_timeout: float,
        max_connections: int,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self._read_timeout = read_timeout
        self._slots = _ConnectionSlots(max_connections)
        self._listener: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        if self._listener is not None and self._listener.sockets:
            return int(self._listener.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        timeout, slots = self._read_timeout, self._slots
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: _SlowClientGuard(server(), timeout, slots),
            self._host,
            self._port,
            ssl=self._ssl_context,
        )
        self._server = self._listener  # BaseSite.stop closes it


def _response(response: Response) -> web.Response:
    body = response.body.encode() if isinstance(response.body, str) else response.body
    return web.Response(
        status=response.status, body=body, headers={"Content-Type": response.content_type}
    )


def _plain(status: int, text: str) -> web.Response:
    return _response(Response(status, text))


class HttpServer:
    """Routes: path -> handler, per method (GET also answers HEAD). Start, then `port`."""

    def __init__(
        self,
        get: Mapping[str, Handler],
        post: Mapping[str, Handler] | None = None,
        *,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "http",
    ) -> None:
        self.limits = limits or Limits()
        self._ssl = ssl_context
        self._name = name
        self._app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[_every_request]
        )
        for path, handler in get.items():
            self._app.router.add_get(path, self._adapt(handler))
        for path, handler in (post or {}).items():
            self._app.router.add_post(path, self._adapt(handler))
        self._runner: web.AppRunner | None = None
        self._site: _GuardedSite | None = None
        self.port = 0

    def _adapt(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        limits = self.limits

        async def serve(request: web.Request) -> web.Response:
            try:
                async with asyncio.timeout(limits.read_timeout):
                    body = await request.read()  # over client_max_size: aiohttp's 413
            except TimeoutError:
                response = _plain(408, "request body not received in time\n")
                response.force_close()
                return response
            req = Request(
                path=request.path,
                query=parse_qs(request.query_string),
                method=request.method,
                headers=request.headers,
                body=body,
                peer=request.remote or "",
            )
            try:
                async with asyncio.timeout(limits.handler_timeout):
                    result = handler(req)
                    if inspect.isawaitable(result):
                        result = await result
            except TimeoutError:
                log.warning("http handler timed out", server=self._name, path=request.path)
                return _plain(503, "timed out\n")
            except Exception as err:
                log.exception("http handler failed", server=self._name, path=request.path)
                return _plain(500, f"internal error: {type(err).__name__}: {err}\n")
            return _response(result)

        return serve

    async def start(self, host: str, port: int) -> None:
        limits = self.limits
        runner = web.AppRunner(
            self._app,
            handle_signals=False,
            access_log=None,
            logger=_aiohttp_log,
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            shutdown_timeout=1.0,
            lingering_time=limits.read_timeout,  # draining an unread body before closing
        )
        await runner.setup()
        site = _GuardedSite(
            runner,
            host,
            port,
            ssl_context=self._ssl,
            read_timeout=limits.read_timeout,
            max_connections=limits.max_connections,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site
        self.port = site.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None
