"""The HTTP server against hostile clients (finding 6, debug port): a header past 64 KiB is a
clean 400 logged as one line, open connections are capped, and loopback-only handlers refuse
other peers with a one-line 403. Real sockets on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from istiolite.http_server import (
    HttpServer,
    Limits,
    Request,
    Response,
    is_loopback_peer,
    local_only,
)


def _peer(request: Request) -> Response:
    return Response(200, f"{request.peer}\n")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.23.4.5", "::1", "[::1]", "::ffff:127.0.0.1", "::1%lo"],
)
def test_loopback_peers(host: str) -> None:
    assert is_loopback_peer(host)


@pytest.mark.parametrize(
    "host",
    ["10.1.2.3", "192.0.2.2", "0.0.0.0", "::", "::ffff:10.1.2.3", "2001:db8::1", "", "x", "1.2"],
)
def test_other_peers(host: str) -> None:
    assert not is_loopback_peer(host)


async def test_local_only_refuses_another_peer_with_one_line() -> None:
    guarded = local_only(_peer, "--debug-on-http=true opens them")
    refused = await guarded(Request("/debug/syncz", peer="10.1.2.3"))  # type: ignore[misc]
    assert refused.status == 403
    assert isinstance(refused.body, str) and refused.body.count("\n") == 1
    assert "10.1.2.3" in refused.body and "--debug-on-http=true" in refused.body
    allowed = await guarded(Request("/debug/syncz", peer="127.0.0.1"))  # type: ignore[misc]
    assert (allowed.status, allowed.body) == (200, "127.0.0.1\n")


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = HttpServer(
        {"/peer": _peer, "/local": local_only(_peer, "opt in")},
        limits=Limits(max_connections=4, read_timeout=5.0),
    )
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


async def _exchange(
    port: int, raw: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer


async def test_the_peer_address_reaches_the_handler(server: HttpServer) -> None:
    head, reader, writer = await _exchange(server.port, b"GET /local HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(reader.readuntil(b"\n"), 5) == b"127.0.0.1\n"
    writer.close()


async def test_a_64_kib_header_is_a_400_without_a_traceback(
    server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    big = b"GET /peer HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024 + 1) + b"\r\n\r\n"
    head, reader, writer = await _exchange(server.port, big)
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400"
    assert await asyncio.wait_for(reader.read(), 5) is not None  # then closed
    writer.close()
    assert not [r for r in caplog.records if r.exc_info], "a client's bad request is no traceback"
    # ... and the server goes on serving.
    head, _, writer = await _exchange(server.port, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_connections_past_the_cap_are_refused_until_one_closes(server: HttpServer) -> None:
    held = []
    for _ in range(4):  # admitted: each serves a request and stays open (keep-alive)
        head, reader, writer = await _exchange(
            server.port, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readuntil(b"\n"), 5)
        held.append(writer)
    # The fifth: a 503 and closed, before its request is even read.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    reply = await asyncio.wait_for(reader.read(), 5)
    assert reply.startswith(b"HTTP/1.1 503") and reply.endswith(b"too many connections\n")
    writer.close()
    # One of the four leaves: a new connection is served again.
    held.pop().close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        head, reader, writer = await _exchange(
            server.port, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        if head.startswith(b"HTTP/1.1 200") or loop.time() > deadline:
            break
        writer.close()
        await asyncio.sleep(0.05)  # the server has not seen the close yet
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    for w in held:
        w.close()
