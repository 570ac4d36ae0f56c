"""A real Envoy bootstrapped with `--token-file` and `--xds-root-cert`: it reaches ADS over TLS
only when the server's certificate carries the expected name and chains to the given root, sends
the token from the file, and after the token file is rotated, sends the new token when it
reconnects (the server here recycles connections every 2 s, as istiod's max connection age does
every 30 min)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from istiolite.security.identity import Identity
from istiolite.xds.ads import AdsService
from tests.protocol.harness import mesh
from tests.support import objects
from tests.support.certs import CertificateAuthority
from tests.support.processes import EnvoyProcess
from tests.support.secure_xds import TlsXdsServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy]

NODE_ID = "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local"
WEB = Identity("cluster.local", "shop", "web")


@dataclass
class RecordingAuthenticator:
    """Accepts the tokens in `valid` as WEB; records every token it is shown (thread-safe)."""

    valid: set[str]
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        token = dict(context.invocation_metadata() or ()).get("authorization", "")
        with self.lock:
            self.seen.append(str(token))
            valid = set(self.valid)
        if str(token).removeprefix("Bearer ") in valid:
            return WEB
        raise PermissionError("token not valid")

    def tokens(self) -> list[str]:
        with self.lock:
            return list(self.seen)


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[tuple[CertificateAuthority, Path, Path]]:
    ca = CertificateAuthority("secure bootstrap root")
    root = tmp_path / "root-cert.pem"
    root.write_bytes(ca.cert_pem)
    token = tmp_path / "token"
    token.write_text("first-token")
    yield ca, root, token


def _server(pair: Any, auth: RecordingAuthenticator) -> TlsXdsServer:
    # Connections recycled every 2 s, so Envoy reconnects (and reads its token) often.
    return TlsXdsServer(
        pair, auth, lambda: AdsService(objects.context(*mesh())), max_connection_age_ms=2000
    )


def _envoy(tmp_path: Path, port: int, token: Path, root: Path, *extra: str) -> EnvoyProcess:
    return EnvoyProcess(
        tmp_path,
        f"127.0.0.1:{port}",
        NODE_ID,
        delta=True,
        meta={"SERVICE_ACCOUNT": "web"},
        bootstrap_args=["--token-file", str(token), "--xds-root-cert", str(root), *extra],
        wait_ready=False,
    )


def _refused(envoy: EnvoyProcess, server: TlsXdsServer, auth: RecordingAuthenticator) -> None:
    """Envoy tried (its gRPC client counts failed ADS streams) and the server saw neither a
    stream nor the token."""

    def failed_streams() -> int:
        return sum(
            v
            for k, v in envoy.stats().items()
            if k.startswith("grpc.xds-grpc.streams_closed_") and not k.endswith("_closed_0")
        )

    wait_for(lambda: failed_streams() >= 2, timeout=20, what="envoy's failed ADS attempts")
    assert server.connected() == []
    assert auth.tokens() == [], "the token must not reach a server Envoy has not verified"


def test_envoy_sends_the_token_over_verified_tls_and_rereads_it(
    tmp_path: Path, pki: tuple[CertificateAuthority, Path, Path]
) -> None:
    ca, root, token = pki
    auth = RecordingAuthenticator({"first-token"})
    server = _server(ca.issue("istiod", dns=("istiod.istio-system.svc",)), auth)
    envoy = None
    try:
        envoy = _envoy(tmp_path, server.port, token, root)
        wait_for(lambda: NODE_ID in server.connected(), what="envoy connected over TLS")
        assert auth.tokens()[0] == "Bearer first-token"
        wait_for(envoy.synced, what="envoy has its config")
        # The projected token is replaced (and the old one stops being valid).
        token.write_text("second-token")
        with auth.lock:
            auth.valid = {"second-token"}
        wait_for(
            lambda: "Bearer second-token" in auth.tokens(),
            timeout=20,
            what="the rotated token on a reconnect",
        )
        wait_for(lambda: NODE_ID in server.connected(), what="envoy connected with the new token")
        assert envoy.alive()
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()


def test_envoy_refuses_a_server_certificate_for_another_name(
    tmp_path: Path, pki: tuple[CertificateAuthority, Path, Path]
) -> None:
    ca, root, token = pki
    auth = RecordingAuthenticator({"first-token"})
    server = _server(ca.issue("impostor", dns=("impostor.example.com",)), auth)
    envoy = None
    try:
        envoy = _envoy(tmp_path, server.port, token, root)
        _refused(envoy, server, auth)
        # The same server, its name given: now it is accepted.
        envoy.stop()
        envoy = _envoy(
            tmp_path, server.port, token, root, "--xds-server-name", "impostor.example.com"
        )
        wait_for(lambda: NODE_ID in server.connected(), what="envoy connected under that name")
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()


def test_envoy_refuses_a_server_from_another_root(
    tmp_path: Path, pki: tuple[CertificateAuthority, Path, Path]
) -> None:
    _, root, token = pki
    other = CertificateAuthority("someone else's root")
    auth = RecordingAuthenticator({"first-token"})
    server = _server(other.issue("istiod", dns=("istiod.istio-system.svc",)), auth)
    envoy = None
    try:
        envoy = _envoy(tmp_path, server.port, token, root)
        _refused(envoy, server, auth)
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
