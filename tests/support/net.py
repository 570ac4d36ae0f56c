"""Loopback addresses and free ports for tests that run side by side, and an HTTP client."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any

# Each test process walks its own slice of 127.0.0.0/8, so parallel runs do not collide.
_hosts = itertools.count(1)
_base = 20 + os.getpid() % 200


def loopback_ip() -> str:
    n = next(_hosts)
    return f"127.{_base}.{n // 250}.{n % 250 + 2}"


def loopback_block(size: int) -> list[str]:
    """`size` consecutive loopback addresses of this process's slice (for a program that takes
    the first and counts on from it)."""
    while (n := next(_hosts)) % 250 + size > 250:
        pass
    for _ in range(size - 1):
        next(_hosts)
    return [f"127.{_base}.{n // 250}.{n % 250 + 2 + i}" for i in range(size)]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different free ports (each socket stays bound until all are chosen, so the kernel
    cannot hand out one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: str

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def http_request(
    address: str,
    port: int,
    host: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 5,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """One request on its own connection to address:port (over TLS with a client context) with
    this Host header."""
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=tls)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    finally:
        conn.close()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
