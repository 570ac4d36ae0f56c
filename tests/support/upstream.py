"""A test upstream whose behaviour the request picks: /flaky fails every other call with 503,
/slow/<ms> answers after a delay, anything else echoes as JSON (like the demo's echo server)."""

from __future__ import annotations

import json
import socketserver
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BehaviourServer:
    def __init__(self, host: str, port: int, name: str) -> None:
        self.name = name
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.hits[path] += 1
                    count = server.hits[path]
                if path == "/flaky" and count % 2 == 1:
                    self._reply(503, b'{"error": "flaky"}')
                    return
                if path.startswith("/slow/"):
                    time.sleep(min(int(path.rsplit("/", 1)[1]), 5000) / 1000)
                body = {"server": server.name, "path": self.path, "headers": dict(self.headers)}
                self._reply(200, json.dumps(body).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def start(self) -> BehaviourServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


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
