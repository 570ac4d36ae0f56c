"""Loopback addresses and free ports for tests that run side by side."""

from __future__ import annotations

import itertools
import os
import socket

# Each test process walks its own slice of 127.0.0.0/8, so parallel runs do not collide.
_hosts = itertools.count(1)
_base = 20 + os.getpid() % 200


def loopback_ip() -> str:
    n = next(_hosts)
    return f"127.{_base}.{n // 250}.{n % 250 + 2}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
