"""The secure port's TLS front end (15012): terminates TLS itself and forwards each connection's
bytes to an internal plaintext grpc.aio server on 127.0.0.1.

Why: grpc-python's server credentials either require a client certificate or never ask for one;
istiod asks and verifies only if given (a proxy may instead bring a token). Python's `ssl` does
exactly that with CERT_OPTIONAL. For each forwarded connection the front end records, under its
own ephemeral port towards the internal server (what that server's `context.peer()` shows), the
real remote address and the verified certificate's identity (`authn.PeerTable`); the
Authenticator reads it. A connection made to the internal port directly has no entry: it is
never taken for a certificate-authenticated peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from istiolite.logs import get_logger
from istiolite.security.authn import ForwardedPeer, PeerTable
from istiolite.security.ca import MeshCA
from istiolite.security.identity import Identity

log = get_logger("secure-port")

# istiod's serving certificate names (pilot/pkg/bootstrap: istiod.<ns>.svc and the others).
ISTIOD_DNS_NAMES = (
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod.istio-system",
    "istiod",
)
MAX_CONNECTIONS = 10_000
HANDSHAKE_TIMEOUT = 10.0
_CHUNK = 256 * 1024


def serving_names(extra: Iterable[str] = ()) -> list[str]:
    names = list(ISTIOD_DNS_NAMES)
    names += [n for n in extra if n not in names]
    return names


def certificate_identity(der: bytes, trust_domain: str) -> Identity | None:
    """The SPIFFE identity in a (verified) client certificate's URI SAN, if it is one of ours."""
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            identity = Identity.parse(uri)
        except ValueError:
            continue
        if identity.trust_domain == trust_domain:
            return identity
    return None


class SecureFrontEnd:
    def __init__(
        self,
        ca: MeshCA,
        peers: PeerTable,
        *,
        dns_names: list[str],
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.ca = ca
        self.peers = peers
        self.dns_names = dns_names
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.port = 0
        self.serving_serial = 0
        self._backend_port = 0
        self._server: asyncio.Server | None = None
        self._context = self._new_context()
        self._connections: set[asyncio.Task[None]] = set()
        self._renew: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        ca.on_change(self._root_changed)

    def _new_context(self) -> ssl.SSLContext:
        """A server context: the mesh CA's serving certificate, client certificates asked for
        and verified against the trust bundle when given."""
        chain, key = self.ca.issue_serving(self.dns_names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["h2"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=self.ca.trust_bundle().decode())
        # ssl loads a key only from a file: a private directory, removed once loaded.
        with tempfile.TemporaryDirectory(prefix="istiolite-tls-") as tmp:
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_path.write_bytes(chain)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
            ctx.load_cert_chain(cert_path, key_path)
        leaf = x509.load_pem_x509_certificate(chain)
        self.serving_serial = leaf.serial_number
        self._serving_not_before = leaf.not_valid_before_utc
        self._serving_not_after = leaf.not_valid_after_utc
        return ctx

    def _rotate(self, why: str) -> None:
        self._context = self._new_context()
        log.info("secure port certificate reissued", reason=why, serial=f"{self.serving_serial:x}")

    def _root_changed(self) -> None:
        # on_change may come from any thread: the context is swapped on the loop.
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._rotate, "CA changed")
        else:
            self._rotate("CA changed")

    async def _renew_at_half_life(self) -> None:
        while True:
            half = (
                self._serving_not_before + (self._serving_not_after - self._serving_not_before) / 2
            )
            delay = max(1.0, (half - datetime.now(UTC)).total_seconds())
            await asyncio.sleep(min(delay, 3600.0))
            if datetime.now(UTC) >= half:
                self._rotate("half of its lifetime passed")

    async def start(self, host: str, port: int, backend_port: int) -> int:
        self._loop = asyncio.get_running_loop()
        self._backend_port = backend_port
        self._server = await self._loop.create_server(
            lambda: _Accepted(self), host, port, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._renew = asyncio.create_task(self._renew_at_half_life(), name="secure-port-renew")
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._renew is not None:
            self._renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _accepted(self, transport: asyncio.Transport) -> None:
        if len(self._connections) >= self.max_connections:
            log.warning("secure port: connection limit reached", limit=self.max_connections)
            transport.abort()
            return
        task = asyncio.create_task(self._connection(transport))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection(self, transport: asyncio.Transport) -> None:
        try:
            await self._serve(transport)
        except asyncio.CancelledError:
            pass
        finally:
            transport.abort()

    async def _serve(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        # TLS on the raw connection, whose reading is paused since accept: no byte of the
        # ClientHello is read before the TLS layer is in place. The context is the current one
        # (a reissued serving certificate takes effect for the next handshake).
        try:
            tls_transport = await loop.start_tls(
                transport,
                protocol,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as err:
            log.debug("secure port: TLS handshake failed", remote=remote, error=str(err)[:200])
            return
        if tls_transport is None:
            return
        protocol.connection_made(tls_transport)
        writer = asyncio.StreamWriter(tls_transport, protocol, reader, loop)
        try:
            await self._forward(reader, writer, remote)
        finally:
            tls_transport.abort()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str
    ) -> None:
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        identity = certificate_identity(der, self.ca.trust_domain) if der else None
        try:
            back_reader, back_writer = await asyncio.open_connection(
                "127.0.0.1", self._backend_port, limit=_CHUNK
            )
        except OSError as err:
            log.warning("secure port: internal gRPC server unreachable", error=str(err))
            return
        local_port = int(back_writer.get_extra_info("sockname")[1])
        self.peers.add(local_port, ForwardedPeer(remote, identity))
        try:
            await _pump_both(reader, writer, back_reader, back_writer)
        finally:
            # The entry goes before the socket closes: its port is never reused while listed.
            self.peers.remove(local_port)
            back_writer.transport.abort()


class _Accepted(asyncio.Protocol):
    """Accepts a TCP connection with its reading paused and hands it to the front end."""

    def __init__(self, front: SecureFrontEnd) -> None:
        self._front = front

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self._front._accepted(transport)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError, ssl.SSLError):
        pass


async def _pump_both(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    back_reader: asyncio.StreamReader,
    back_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until either side closes, then stop both."""
    upstream = asyncio.create_task(_pump(client_reader, back_writer))
    downstream = asyncio.create_task(_pump(back_reader, client_writer))
    try:
        await asyncio.wait((upstream, downstream), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upstream, downstream):
            task.cancel()
        for task in (upstream, downstream):
            with contextlib.suppress(asyncio.CancelledError):
                await task
