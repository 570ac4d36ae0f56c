"""A failed call of the demo's load says why: the demo app's 502 names the next hop that failed
and how (and who answered it), an Envoy's own answer shows its body, and no answer at all keeps
the exception's message. The real app handler on loopback sockets, no namespaces needed."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from istiolite.demo.mesh.app import make_handler
from istiolite.demo.mesh.load import answered, no_answer
from tests.support.net import free_port


@pytest.fixture
def serve() -> Iterator[list[ThreadingHTTPServer]]:
    servers: list[ThreadingHTTPServer] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _start(servers: list[ThreadingHTTPServer], handler: type[BaseHTTPRequestHandler]) -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    servers.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def _get(port: int):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    start = time.monotonic()
    try:
        conn.request("GET", "/", headers={"Host": "reviews"})
        resp = conn.getresponse()
        return answered(start, resp, resp.read())
    finally:
        conn.close()


class EnvoyLike(BaseHTTPRequestHandler):
    """What a sidecar answers itself when the next app resets the connection."""

    def do_GET(self) -> None:
        body = b"upstream connect error or disconnect/reset before headers. reset reason: " \
               b"connection termination"  # fmt: skip
        self.send_response(503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def version_string(self) -> str:
        return "envoy"  # the Server header

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_200_has_who_answered_and_no_detail(serve: list[ThreadingHTTPServer]) -> None:
    port = _start(serve, make_handler("reviews", "v2", "reviews-v2", [], set()))
    result = _get(port)
    assert (result.status, result.answered_by, result.detail) == (200, "reviews-v2", "")


def test_the_apps_502_names_the_failed_hop_and_its_answer(
    serve: list[ThreadingHTTPServer],
) -> None:
    envoy = _start(serve, EnvoyLike)
    closed = free_port()  # nothing listens here
    calls = [f"127.0.0.1:{envoy}", f"127.0.0.1:{closed}"]
    port = _start(serve, make_handler("reviews", "v2", "reviews-v2", calls, set()))
    result = _get(port)
    assert (result.status, result.answered_by) == (502, "reviews-v2")
    text = str(result)
    assert text.startswith("502 after ")
    assert f"hop 127.0.0.1:{envoy} -> 503 from 'envoy': upstream connect error" in text
    assert f"hop 127.0.0.1:{closed} -> 0: ConnectionRefusedError" in text


def test_an_envoy_answer_keeps_its_server_and_body(serve: list[ThreadingHTTPServer]) -> None:
    result = _get(_start(serve, EnvoyLike))
    assert result.status == 503 and result.answered_by == ""
    assert "server='envoy'" in result.detail
    assert "reset reason: connection termination" in result.detail


def test_no_answer_keeps_the_exception_and_its_message() -> None:
    try:
        http.client.HTTPConnection("127.0.0.1", free_port(), timeout=5).request("GET", "/")
    except OSError as err:
        result = no_answer(time.monotonic(), err)
    assert result.status == 0
    assert result.error.startswith("ConnectionRefusedError: ")
    assert str(result).startswith("0 after ")
