"""Test upstreams. HTTP/1.1 (HttpUpstream, over TLS when given a server context) answering as
the subclass decides: BehaviourServer by path (/flaky fails every other call with 503,
/slow/<ms> answers after a delay, anything else echoes as JSON like the demo's echo server),
NamedUpstream with its name and a status; EchoServer for raw TCP or TLS bytes."""

from __future__ import annotations

import json
import socketserver
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Handshake:
    """A TLS handshake an upstream saw: whether it completed, the client hello's SNI and the
    client certificate's CN."""

    ok: bool
    sni: str | None
    client_cn: str | None


class Request(BaseHTTPRequestHandler):
    """One connection to an HttpUpstream; `answer` reads `path`, `headers`, `handshake` (over
    TLS) and `nth` (which request to this path, counted from 1)."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer
    handshake: Handshake | None = None
    nth = 0

    def setup(self) -> None:
        if self.server.tls is not None:
            self.request.settimeout(10)
            self.request, self.handshake = self.server.upstream._handshake(
                self.request, self.server.tls
            )
        super().setup()

    def do_GET(self) -> None:
        upstream = self.server.upstream
        self.nth = upstream._hit(self.path.split("?", 1)[0])
        status, body = upstream.answer(self)
        self.send_response(status)
        if upstream.content_type:
            self.send_header("Content-Type", upstream.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], upstream: HttpUpstream, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(address, Request)
        self.upstream = upstream
        self.tls = tls

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes are recorded and dropped connections do not matter (ssl.SSLError is
        # an OSError); anything else is printed.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class HttpUpstream:
    """HTTP/1.1 on (host, port), a thread per connection, from start() until stop(). GETs are
    counted by path and answered by `answer`. With `tls` (a server context) every connection
    starts with a handshake, recorded (see `seen`); a failed one closes the connection."""

    content_type: str | None = "application/json"

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        # `tls` becomes this upstream's own: its sni_callback records the client hello's name.
        self.hits: Counter[str] = Counter()
        self.handshakes: list[Handshake] = []
        self._lock = threading.Lock()
        self._sni = threading.local()
        if tls is not None:
            tls.sni_callback = self._remember_sni  # type: ignore[assignment]
        self._httpd = _HttpServer((host, port), self, tls)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def answer(self, request: Request) -> tuple[int, bytes]:
        """(status, body) for one GET."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def seen(self) -> list[Handshake]:
        with self._lock:
            return list(self.handshakes)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _hit(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def _remember_sni(self, sock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        self._sni.name = name

    def _handshake(self, sock: Any, tls: ssl.SSLContext) -> tuple[ssl.SSLSocket, Handshake]:
        self._sni.name = None
        try:
            wrapped = tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            self._record(Handshake(False, self._sni.name, None))
            raise
        cert = wrapped.getpeercert() or {}
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        handshake = Handshake(True, self._sni.name, cn)
        self._record(handshake)
        return wrapped, handshake

    def _record(self, handshake: Handshake) -> None:
        with self._lock:
            self.handshakes.append(handshake)


class BehaviourServer(HttpUpstream):
    def __init__(self, host: str, port: int, name: str) -> None:
        super().__init__(host, port)
        self.name = name

    def answer(self, request: Request) -> tuple[int, bytes]:
        path = request.path.split("?", 1)[0]
        if path == "/flaky" and request.nth % 2 == 1:
            return 503, b'{"error": "flaky"}'
        if path.startswith("/slow/"):
            time.sleep(min(int(path.rsplit("/", 1)[1]), 5000) / 1000)
        body = {"server": self.name, "path": request.path, "headers": dict(request.headers)}
        return 200, json.dumps(body).encode()


class NamedUpstream(HttpUpstream):
    """Answers its name as plain text with `status` (changeable while it runs), after `delay`
    seconds."""

    content_type = None

    def __init__(self, host: str, port: int, name: str, *, status: int = 200, delay: float = 0):
        super().__init__(host, port)
        self.name = name
        self.status = status
        self.delay = delay

    def answer(self, request: Request) -> tuple[int, bytes]:
        if self.delay:
            time.sleep(self.delay)
        return self.status, self.name.encode()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        conn = self.request
        if server.tls is not None:
            try:
                conn = server.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return
        with conn:
            data = conn.recv(4096)
            conn.sendall(server.tag + b":" + data)


class EchoServer(socketserver.ThreadingTCPServer):
    """Answers the first bytes it receives with `<tag>:<bytes>`, over TLS when given a context."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tag: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.tag = tag.encode()
        self.tls = tls
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)
