"""One typed settings object: command-line flags, with ISTIOLITE_* environment defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def env_default(name: str, default: str) -> str:
    return os.environ.get(f"ISTIOLITE_{name}", default)


def split_host_port(value: str) -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT' or ':PORT' (all interfaces)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


@dataclass(slots=True)
class Settings:
    config_dirs: list[Path] = field(default_factory=list)
    grpc_addr: str = ":15010"
    http_addr: str = ":8080"
    monitoring_addr: str = ":15014"
    trust_domain: str = "cluster.local"
    domain: str = "cluster.local"
    debounce_quiet: float = 0.1
    debounce_max: float = 10.0
    push_concurrency: int = 100
    xds_send_timeout: float = 5.0
    grpc_max_recv_size: int = 4 * 1024 * 1024
    log_format: str = "json"
    log_level: str = "info"
    # Debug pages (/debug/*) on the HTTP port: "local" answers loopback peers only, "true"
    # every peer (istiod's ENABLE_DEBUG_ON_HTTP), "false" serves none.
    debug_on_http: str = "local"
    # Development only: SDS key material on the plaintext gRPC port (to loopback/Unix peers).
    dev_plaintext_sds: bool = False
    # RequestAuthentication jwksUri key sets: refreshed this often (istiod: 20 minutes).
    jwks_refresh_interval: float = 20 * 60.0
