"""The webhooks' TLS: a serving certificate from the mesh CA for istiod's DNS names.

The API server verifies it against the `caBundle` of the webhook configurations (the mesh root,
patched in by the leader). One SSLContext lives as long as the server; a new certificate is
loaded into it when the CA changes and at half of its lifetime, and takes effect for the next
handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from istiolite.logs import get_logger
from istiolite.security.ca import MeshCA

log = get_logger("webhooks")


class ServingContext:
    def __init__(self, ca: MeshCA, dns_names: list[str]) -> None:
        self.ca = ca
        self.dns_names = dns_names
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self.serial = 0
        self._not_before = self._not_after = datetime.now(UTC)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._renew: asyncio.Task[None] | None = None
        self._load()
        ca.on_change(self._root_changed)

    def _load(self) -> None:
        chain, key = self.ca.issue_serving(self.dns_names)
        # ssl loads a key only from a file: a private directory, removed once loaded.
        with tempfile.TemporaryDirectory(prefix="istiolite-webhook-tls-") as tmp:
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_path.write_bytes(chain)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
            self.context.load_cert_chain(cert_path, key_path)
        leaf = x509.load_pem_x509_certificate(chain)
        self.serial = leaf.serial_number
        self._not_before, self._not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc

    def reissue(self, why: str) -> None:
        self._load()
        log.info("webhook certificate reissued", reason=why, serial=f"{self.serial:x}")

    def _root_changed(self) -> None:
        # on_change may come from any thread: the certificate is swapped on the loop.
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self.reissue, "CA changed")
        else:
            self.reissue("CA changed")

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._renew = asyncio.create_task(self._renew_at_half_life(), name="webhook-cert-renew")

    async def stop(self) -> None:
        if self._renew is not None:
            self._renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew

    async def _renew_at_half_life(self) -> None:
        while True:
            half = self._not_before + (self._not_after - self._not_before) / 2
            delay = max(1.0, (half - datetime.now(UTC)).total_seconds())
            await asyncio.sleep(min(delay, 3600.0))
            if datetime.now(UTC) >= half:
                self.reissue("half of its lifetime passed")
