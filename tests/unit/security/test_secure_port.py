"""The secure port's TLS front end in front of a real grpc.aio server: client certificates
asked for but not required, identities recorded per forwarded connection, bounds."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from istiolite.security.authn import AuthenticationFailed, Authenticator
from istiolite.security.ca import MeshCA
from istiolite.security.identity import Identity
from istiolite.security.secure_port import ISTIOD_DNS_NAMES, SecureFrontEnd, serving_names

WHOAMI = "/test.Auth/WhoAmI"
ALICE = Identity("cluster.local", "shop", "alice")


@dataclass
class Rig:
    ca: MeshCA
    front: SecureFrontEnd
    authenticator: Authenticator
    backend_port: int

    def channel(self, cert: tuple[bytes, bytes] | None = None) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca.trust_bundle(),
            private_key=cert[1] if cert else None,
            certificate_chain=cert[0] if cert else None,
        )
        return grpc.aio.secure_channel(
            f"127.0.0.1:{self.front.port}",
            creds,
            options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")],
        )

    async def whoami(self, channel: grpc.aio.Channel, token: str | None = None) -> str:
        metadata = [("authorization", f"Bearer {token}")] if token else []
        reply: bytes = await channel.unary_unary(WHOAMI)(b"", metadata=metadata, timeout=10)
        return reply.decode()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    ca = MeshCA.load(tmp_path / "ca", "cluster.local")
    authenticator = Authenticator("cluster.local")

    async def whoami(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        try:
            identity = await authenticator.authenticate(context)
        except AuthenticationFailed as err:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        forwarded = authenticator.forwarded(context)
        assert forwarded is not None and forwarded.remote_address.startswith("127.0.0.1:")
        return str(identity).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Auth", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
            ),
        )
    )
    backend_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    front = SecureFrontEnd(
        ca,
        authenticator.peers,
        dns_names=serving_names(["istiolite.example"]),
        max_connections=3,
        handshake_timeout=0.5,
    )
    await front.start("127.0.0.1", 0, backend_port)
    try:
        yield Rig(ca, front, authenticator, backend_port)
    finally:
        await front.stop()
        await server.stop(None)
        ca.close()


async def test_client_certificate_from_the_mesh_ca_is_the_identity(rig: Rig) -> None:
    issued = await rig.ca.issue(ALICE)
    channel = rig.channel((issued.chain_pem, issued.key_pem))
    try:
        assert await rig.whoami(channel) == str(ALICE)
    finally:
        await channel.close()
    assert len(rig.authenticator.peers) <= 1


async def test_without_a_client_certificate_a_token_is_needed(rig: Rig) -> None:
    channel = rig.channel()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.whoami(channel)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no client certificate" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.whoami(channel, token="sa.x")
        assert "--kubeconfig" in (err.value.details() or "")  # reached the token path
    finally:
        await channel.close()


async def test_direct_connection_to_the_internal_port_is_not_trusted(rig: Rig) -> None:
    """While a certificate-authenticated connection is forwarded, a plaintext connection to the
    internal server gets nothing from it."""
    issued = await rig.ca.issue(ALICE)
    trusted = rig.channel((issued.chain_pem, issued.key_pem))
    direct = grpc.aio.insecure_channel(f"127.0.0.1:{rig.backend_port}")
    try:
        assert await rig.whoami(trusted) == str(ALICE)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await direct.unary_unary(WHOAMI)(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await trusted.close()
        await direct.close()


async def test_certificate_from_another_ca_is_refused_in_the_handshake(rig: Rig) -> None:
    other = MeshCA.load(None, "cluster.local")
    issued = await other.issue(ALICE)
    channel = rig.channel((issued.chain_pem, issued.key_pem))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.whoami(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
        other.close()


def _tls_client(rig: Rig, **kw: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=rig.ca.trust_bundle().decode())
    ctx.set_alpn_protocols(["h2"])
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


async def test_serving_certificate_tls_version_and_alpn(rig: Rig) -> None:
    ctx = _tls_client(rig)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", rig.front.port, ssl=ctx, server_hostname="istiod.istio-system.svc"
    )
    tls = writer.get_extra_info("ssl_object")
    assert tls.selected_alpn_protocol() == "h2"
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [*ISTIOD_DNS_NAMES, "istiolite.example"]
    writer.close()

    old = _tls_client(
        rig, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1
    )
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(
            "127.0.0.1", rig.front.port, ssl=old, server_hostname="istiod.istio-system.svc"
        )


async def test_serving_certificate_reissued_when_the_ca_changes(rig: Rig, tmp_path: Path) -> None:
    before = rig.front.serving_serial
    extra = MeshCA.load(None, "cluster.local")
    (tmp_path / "ca" / "root-cert-bundle.pem").write_bytes(extra.root_pem())
    assert rig.ca.reload()
    await asyncio.sleep(0.1)  # the swap is scheduled on the loop
    assert rig.front.serving_serial != before
    extra.close()


async def test_silent_client_is_dropped_after_the_handshake_timeout(rig: Rig) -> None:
    sock = socket.create_connection(("127.0.0.1", rig.front.port))
    sock.settimeout(5)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        data = await asyncio.to_thread(sock.recv, 100)  # never sends a ClientHello
        assert data == b""
        assert loop.time() - start < 4
    finally:
        sock.close()


async def test_connections_beyond_the_limit_are_closed(rig: Rig) -> None:
    socks = [socket.create_connection(("127.0.0.1", rig.front.port)) for _ in range(3)]
    try:
        for _ in range(50):
            if rig.front.connections == 3:
                break
            await asyncio.sleep(0.02)
        assert rig.front.connections == 3
        extra = socket.create_connection(("127.0.0.1", rig.front.port))
        extra.settimeout(5)
        try:
            assert await asyncio.to_thread(extra.recv, 100) == b""
        except ConnectionResetError:
            pass  # closed with a reset: refused just the same
        finally:
            extra.close()
    finally:
        for s in socks:
            s.close()
