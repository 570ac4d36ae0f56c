"""A small HTTP upstream that answers with its own name: the demo's and the tests' backends.

Run alone: `python -m istiolite.demo.echo --listen 127.0.0.21:9081 --name hello-1`.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EchoServer:
    """Answers every request with JSON naming this server; counts the requests it served."""

    def __init__(self, host: str, port: int, name: str) -> None:
        self.name = name
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server._lock:
                    server.hits[self.path] += 1
                body = json.dumps(
                    {
                        "server": server.name,
                        "path": self.path,
                        "host": self.headers.get("Host", ""),
                        "headers": dict(self.headers.items()),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.address = self._httpd.server_address
        self._thread: threading.Thread | None = None

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def start(self) -> EchoServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        self._httpd.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    EchoServer(host, int(port), args.name).serve_forever()


if __name__ == "__main__":
    main()
