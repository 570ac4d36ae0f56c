"""A real Envoy bootstrapped with `--token-file` and `--xds-root-cert`: it reaches ADS over TLS
only when the server's certificate carries the expected name and chains to the given root, sends
the token from the file, and after the token file is rotated, sends the new token when it
reconnects (the server here recycles connections every 2 s, as istiod's max connection age does
every 30 min)."""

from __future__ import annotations

import asyncio
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


class TlsXdsServer:
    """istiolite's ADS behind TLS, on its own event loop thread (the test itself is sync)."""

    def __init__(self, pair: Any, authenticator: RecordingAuthenticator) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ads: AdsService | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(pair, authenticator), self.loop)
        self.port_number = self.port.result(timeout=10)

    async def _start(self, pair: Any, authenticator: RecordingAuthenticator) -> int:
        self.ads = AdsService(objects.context(*mesh()))
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_connection_age_ms", 2000),
                ("grpc.max_connection_age_grace_ms", 500),
            ]
        )
        self.ads.register(self.server, authenticator=authenticator)
        creds = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
        port = self.server.add_secure_port("127.0.0.1:0", creds)
        await self.server.start()
        return port

    def connected(self) -> list[str]:
        async def ids() -> list[str]:
            assert self.ads is not None
            return [c.proxy.id for c in self.ads.connections.values() if c.proxy is not None]

        return asyncio.run_coroutine_threadsafe(ids(), self.loop).result(timeout=5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[tuple[CertificateAuthority, Path, Path]]:
    ca = CertificateAuthority("secure bootstrap root")
    root = tmp_path / "root-cert.pem"
    root.write_bytes(ca.cert_pem)
    token = tmp_path / "token"
    token.write_text("first-token")
    yield ca, root, token


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
    server = TlsXdsServer(ca.issue("istiod", dns=("istiod.istio-system.svc",)), auth)
    envoy = None
    try:
        envoy = _envoy(tmp_path, server.port_number, token, root)
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
    server = TlsXdsServer(ca.issue("impostor", dns=("impostor.example.com",)), auth)
    envoy = None
    try:
        envoy = _envoy(tmp_path, server.port_number, token, root)
        _refused(envoy, server, auth)
        # The same server, its name given: now it is accepted.
        envoy.stop()
        envoy = _envoy(
            tmp_path, server.port_number, token, root, "--xds-server-name", "impostor.example.com"
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
    server = TlsXdsServer(other.issue("istiod", dns=("istiod.istio-system.svc",)), auth)
    envoy = None
    try:
        envoy = _envoy(tmp_path, server.port_number, token, root)
        _refused(envoy, server, auth)
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
