"""The webhook server's TLS: a mesh CA certificate, replaced when the CA changes (a new root
reaches the API server through the caBundle, so the next handshake must chain to it)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from istiolite.security.ca import MeshCA
from istiolite.security.secure_port import serving_names
from istiolite.webhooks.server import WebhookServer
from istiolite.webhooks.sidecar_template import InjectionConfig
from tests.support.cacerts import write_plugin_dir

SERVER_NAME = "istiod.istio-system.svc"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[WebhookServer, MeshCA]]:
    ca = MeshCA.load(tmp_path / "ca", "cluster.local")
    webhooks = WebhookServer(
        ca,
        dns_names=serving_names(),
        injection=InjectionConfig(),
        namespace_labels=lambda _ns: None,
    )
    await webhooks.start("127.0.0.1", 0)
    try:
        yield webhooks, ca
    finally:
        await webhooks.stop()
        ca.close()


async def _handshake(port: int, root: bytes) -> None:
    ctx = ssl.create_default_context(cadata=root.decode())
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME
    )
    writer.close()
    await writer.wait_closed()


async def test_the_certificate_follows_a_new_root(
    server: tuple[WebhookServer, MeshCA], tmp_path: Path
) -> None:
    webhooks, ca = server
    old_root = ca.root_pem()
    await _handshake(webhooks.port, old_root)
    before = webhooks.tls.serial
    # The operator plugs in another CA (Istio's cacerts): a new root altogether.
    for name in ("root-cert.pem", "ca-key.pem"):
        (tmp_path / "ca" / name).unlink()
    new_root, _intermediate = write_plugin_dir(tmp_path / "ca")
    assert ca.reload()
    await asyncio.sleep(0.1)  # the swap is scheduled on the loop
    assert webhooks.tls.serial != before
    await _handshake(webhooks.port, new_root.pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(webhooks.port, old_root)
