"""The HTTP server's contract over real sockets on 127.0.0.1 (port 0): routing, keep-alive, POST,
TLS, and the per-request limits (header size, body size, slow clients, slow handlers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from istiolite.http_server import HttpServer, Limits, Request, Response
from tests.support import certs

LIMITS = Limits(
    max_header_bytes=1024,
    max_body_bytes=2048,
    read_timeout=0.5,
    keepalive_timeout=5.0,
    handler_timeout=0.5,
)


async def _echo(request: Request) -> Response:
    return Response(200, f"{request.method} {len(request.body)} {request.arg('x')}\n")


async def _slow(_request: Request) -> Response:
    await asyncio.sleep(10)
    return Response(200, "late\n")


def _fails(_request: Request) -> Response:
    raise RuntimeError("boom")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = HttpServer(
        {
            "/hello": lambda _request: Response(200, "hello\n"),
            "/echo": _echo,
            "/slow": _slow,
            "/fails": _fails,
        },
        {"/echo": _echo},
        limits=LIMITS,
    )
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


async def _read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def _request(
    port: int, raw: bytes
) -> tuple[Reply, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    return await _read_reply(reader), reader, writer


async def _once(port: int, raw: bytes) -> Reply:
    reply, _, writer = await _request(port, raw)
    writer.close()
    return reply


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


async def _closed(reader: asyncio.StreamReader, within: float = 5) -> bool:
    """True once the server closed the connection (EOF or reset) within `within` seconds."""
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionError:
        return True


# -- routing -----------------------------------------------------------------------------------


async def test_get_with_query_and_content_type(server: HttpServer) -> None:
    reply = await _once(server.port, _get("/echo?x=1&x=2"))
    assert (reply.status, reply.body) == (200, b"GET 0 1\n")
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"


async def test_unknown_path_is_404_and_wrong_method_is_405(server: HttpServer) -> None:
    missing = await _once(server.port, _get("/nope"))
    assert missing.status == 404
    assert b"no such page: /nope" in missing.body
    wrong = await _once(server.port, b"DELETE /hello HTTP/1.1\r\nHost: test\r\n\r\n")
    assert wrong.status == 405
    assert set(wrong.headers["allow"].split(",")) == {"GET", "HEAD"}


async def test_post_carries_the_body(server: HttpServer) -> None:
    body = b"x" * 100
    raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + body
    reply = await _once(server.port, raw)
    assert (reply.status, reply.body) == (200, b"POST 100 \n")


async def test_keep_alive_serves_two_requests_on_one_connection(server: HttpServer) -> None:
    first, reader, writer = await _request(server.port, _get("/hello"))
    try:
        assert first.status == 200 and first.headers.get("connection", "").lower() != "close"
        writer.write(_get("/echo?x=again"))
        await writer.drain()
        second = await _read_reply(reader)
        assert (second.status, second.body) == (200, b"GET 0 again\n")
    finally:
        writer.close()


async def test_a_failing_handler_is_a_500_and_the_connection_lives_on(server: HttpServer) -> None:
    reply, reader, writer = await _request(server.port, _get("/fails"))
    try:
        assert reply.status == 500 and b"RuntimeError: boom" in reply.body
        writer.write(_get("/hello"))
        await writer.drain()
        assert (await _read_reply(reader)).status == 200
    finally:
        writer.close()


async def test_served_over_tls_with_a_context() -> None:
    ca = certs.CertificateAuthority("http test CA")
    pair = ca.issue("localhost", dns=("localhost",))
    srv = HttpServer(
        {"/hello": lambda _r: Response(200, "hello\n")},
        {"/echo": _echo},
        ssl_context=certs.server_context(pair),
    )
    await srv.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=certs.client_context(ca), server_hostname="localhost"
        )
        writer.write(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc")
        await writer.drain()
        reply = await _read_reply(reader)
        assert (reply.status, reply.body) == (200, b"POST 3 \n")
        writer.close()
    finally:
        await srv.stop()


# -- limits ------------------------------------------------------------------------------------


async def test_an_oversized_header_is_refused(server: HttpServer) -> None:
    reply = await _once(server.port, _get("/hello", f"X-Big: {'a' * 2000}\r\n"))
    assert reply.status in (400, 431)


async def test_an_oversized_request_line_is_refused(server: HttpServer) -> None:
    reply = await _once(server.port, _get("/hello?pad=" + "a" * 2000))
    assert reply.status in (400, 414, 431)


async def test_an_oversized_body_is_413(server: HttpServer) -> None:
    body = b"x" * (LIMITS.max_body_bytes + 1)
    raw = f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    reply = await _once(server.port, raw + body)
    assert reply.status == 413


async def test_a_body_that_does_not_arrive_is_408(server: HttpServer) -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly a part"
    reply, reader, writer = await _request(server.port, raw)
    assert reply.status == 408
    assert await _closed(reader)
    writer.close()


async def test_a_slow_handler_is_503(server: HttpServer) -> None:
    reply = await _once(server.port, _get("/slow"))
    assert reply.status == 503


async def test_a_slow_client_is_cut_off_and_others_are_served_meanwhile(
    server: HttpServer,
) -> None:
    """Headers sent a byte at a time: closed once read_timeout has passed since the first byte,
    while other clients get their answers as usual."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    drip = _get("/hello", "X-Long: " + "a" * 500 + "\r\n")  # takes ~5 s at one byte per 10 ms
    started = time.monotonic()
    cut_off_at: float | None = None
    served_meanwhile = 0
    try:
        for i, byte in enumerate(drip):
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                cut_off_at = time.monotonic()
                break
            if reader.at_eof():
                cut_off_at = time.monotonic()
                break
            if i % 10 == 0:
                other = await _once(server.port, _get("/hello"))
                assert other.status == 200
                served_meanwhile += 1
            await asyncio.sleep(0.01)
        if cut_off_at is None and await _closed(reader, within=1):
            cut_off_at = time.monotonic()
    finally:
        writer.close()
    assert cut_off_at is not None, "the slow client was never cut off"
    # Cut off well before it could finish, not before the read timeout had passed.
    assert cut_off_at - started >= LIMITS.read_timeout
    assert i < len(drip) - 1
    assert served_meanwhile >= 2


async def test_an_idle_connection_is_closed_after_the_first_request_times_out() -> None:
    """A connection that never sends a byte is closed after the read timeout."""
    srv = HttpServer({"/hello": lambda _r: Response(200, "hello\n")}, limits=LIMITS)
    await srv.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        started = time.monotonic()
        assert await _closed(reader)
        assert time.monotonic() - started >= LIMITS.read_timeout * 0.9
        writer.close()
    finally:
        await srv.stop()
