"""The certificates of the workload identities that have a live ADS stream, and their rotation.

One certificate per identity, shared by every stream of that identity (a Deployment of fifty
replicas signs once, not fifty times), issued by the CA off the event loop. At about half its
lifetime (±2 % jitter, so identities issued in one burst do not all rotate in the same instant)
a new one is issued and only the streams of that identity are told, so they send `default`
again; nothing else is pushed and no connection is interrupted. When the CA's roots change,
`ROOTCA` changes for everyone and every live identity gets a certificate from the new signer.

Bounded by the live identities: an identity's certificate is dropped shortly after its last
stream closes (LINGER, so a proxy that reconnects, as every stream does when its connection
reaches its maximum age, finds the same certificate instead of costing a signature and a new
`default`). The certificates and keys live here only: never in the shared ResourceCache, logs or
debug pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.networking.resource import Resource
from istiolite.networking.workload_secrets import (
    DEFAULT,
    ROOTCA,
    default_resource,
    root_ca_resource,
)
from istiolite.security.authority import CertificateAuthority, IssuedCertificate
from istiolite.security.identity import Identity

log = get_logger("workload-certs")

# Rotate at this fraction of the remaining lifetime at issue, as Istio's agent (0.5)...
ROTATE_AT = 0.5
# ...give or take this much of it.
JITTER = 0.02
# A failed issue is retried after this long, growing to RETRY_MAX; never past the half-life
# already reached, so a certificate that cannot be renewed still has time to be.
RETRY_MIN = 1.0
RETRY_MAX = 60.0
# Seconds an identity's certificate is kept after its last stream closed.
LINGER = 30.0

Listener = Callable[[], None]


class CertificateUnavailable(Exception):
    """The CA could not issue a certificate for an identity (the message says why)."""


@dataclass(eq=False)
class _Entry:
    identity: Identity
    # The streams of this identity: key -> what to call when its secrets change.
    listeners: dict[Hashable, Listener] = field(default_factory=dict)
    issued: IssuedCertificate | None = None
    # {"ROOTCA": ..., "default": ...}: one object until either changes (streams compare it by
    # identity to know nothing changed).
    resources: Mapping[str, Resource] = field(default_factory=dict)
    first: asyncio.Future[None] | None = None
    rotation: asyncio.Task[None] | None = None
    drop: asyncio.TimerHandle | None = None  # set while it has no stream (see LINGER)


class WorkloadCerts:
    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        ttl: timedelta | None = None,
        jitter: float = JITTER,
        rng: Callable[[], float] = random.random,
        linger: float = LINGER,
    ) -> None:
        self._ca = ca
        self.trust_domain = ca.trust_domain
        self._ttl = ttl
        self._jitter = jitter
        self._rng = rng
        self._linger = linger
        self._entries: dict[Identity, _Entry] = {}
        self._root = root_ca_resource(ca.trust_bundle())
        self._loop: asyncio.AbstractEventLoop | None = None
        on_change = getattr(ca, "on_change", None)
        if on_change is not None:
            on_change(self.roots_changed)

    # -- what streams use --------------------------------------------------------------------

    async def attach(self, identity: Identity, key: Hashable, listener: Listener) -> None:
        """Registers a stream of `identity` (called when its secrets change) and waits until
        the identity has a certificate. CertificateUnavailable if the CA cannot issue one."""
        self._loop = asyncio.get_running_loop()
        entry = self._entries.get(identity)
        if entry is None:
            entry = self._entries[identity] = _Entry(identity)
            entry.first = asyncio.ensure_future(self._first_issue(entry))
            metrics.WORKLOAD_IDENTITIES.set(len(self._entries))
        if entry.drop is not None:
            entry.drop.cancel()  # back within LINGER: the same certificate
            entry.drop = None
        entry.listeners[key] = listener
        assert entry.first is not None
        try:
            # Shielded: one stream going away must not cancel the issue the others wait for.
            await asyncio.shield(entry.first)
        except asyncio.CancelledError:
            self.detach(identity, key)
            raise
        except CertificateUnavailable:
            self.detach(identity, key)
            raise

    def detach(self, identity: Identity, key: Hashable) -> None:
        """A stream of `identity` closed; LINGER seconds after the last one (unless another
        comes) the certificate goes too."""
        entry = self._entries.get(identity)
        if entry is None:
            return
        entry.listeners.pop(key, None)
        if entry.listeners or entry.drop is not None:
            return
        if self._linger > 0 and entry.issued is not None:
            loop = asyncio.get_running_loop()
            entry.drop = loop.call_later(self._linger, self._drop, entry)
            return
        self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if entry.listeners or self._entries.get(entry.identity) is not entry:
            return
        del self._entries[entry.identity]
        metrics.WORKLOAD_IDENTITIES.set(len(self._entries))
        if entry.first is not None and not entry.first.done():
            entry.first.cancel()
        if entry.rotation is not None:
            entry.rotation.cancel()
        if entry.drop is not None:
            entry.drop.cancel()
        entry.issued = None
        entry.resources = {}

    def resources(self, identity: Identity) -> Mapping[str, Resource]:
        """`default` and `ROOTCA` of `identity` (empty until its certificate is issued)."""
        entry = self._entries.get(identity)
        return entry.resources if entry is not None else {}

    def certificate(self, identity: Identity) -> IssuedCertificate | None:
        entry = self._entries.get(identity)
        return entry.issued if entry is not None else None

    def identities(self) -> list[Identity]:
        return sorted(self._entries)

    # -- the CA's side -----------------------------------------------------------------------

    def roots_changed(self, *_args: Any) -> None:
        """The CA's trust bundle (or signer) changed: may be called from any thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or (loop is not None and running is not loop):
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._roots_changed)
            else:
                self._root = root_ca_resource(self._ca.trust_bundle())  # no stream yet
            return
        self._roots_changed()

    def _roots_changed(self) -> None:
        root = root_ca_resource(self._ca.trust_bundle())
        changed = root.version != self._root.version
        self._root = root
        for entry in list(self._entries.values()):
            if changed and entry.issued is not None:
                self._publish(entry)
            # A new signer may stand behind the new bundle: reissue now rather than at the
            # half-life, so no certificate outlives the root it chains to.
            if entry.issued is not None:
                self._schedule(entry, delay=0.0)
        log.info("trust bundle changed", changed=changed, identities=len(self._entries))

    # -- issuing and rotating ----------------------------------------------------------------

    async def _issue(self, identity: Identity) -> IssuedCertificate:
        try:
            issued = await self._ca.issue(identity, self._ttl)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            metrics.WORKLOAD_CERT_FAILURES.inc()
            raise CertificateUnavailable(
                f"cannot issue a certificate for {identity}: {type(err).__name__}: {err}"
            ) from None
        metrics.WORKLOAD_CERTS_ISSUED.inc()
        return issued

    async def _first_issue(self, entry: _Entry) -> None:
        try:
            issued = await self._issue(entry.identity)
        except CertificateUnavailable as err:
            log.warning("workload certificate not issued", error=str(err))
            if self._entries.get(entry.identity) is entry:
                # Not kept: the next stream of this identity tries again.
                del self._entries[entry.identity]
                metrics.WORKLOAD_IDENTITIES.set(len(self._entries))
            raise
        self._install(entry, issued, notify=False)

    def _install(self, entry: _Entry, issued: IssuedCertificate, *, notify: bool) -> None:
        if self._entries.get(entry.identity) is not entry:
            return  # its last stream closed meanwhile
        entry.issued = issued
        log.info(
            "workload certificate issued",
            identity=str(entry.identity),
            serial=format(issued.serial, "x"),
            not_after=issued.not_after.isoformat(),
            streams=len(entry.listeners),
        )
        if notify:
            self._publish(entry)
        else:
            entry.resources = self._resource_map(issued)
        self._schedule(entry, delay=self._rotation_delay(issued))

    def _resource_map(self, issued: IssuedCertificate) -> Mapping[str, Resource]:
        return {ROOTCA: self._root, DEFAULT: default_resource(issued)}  # sorted by name

    def _publish(self, entry: _Entry) -> None:
        assert entry.issued is not None
        entry.resources = self._resource_map(entry.issued)
        for listener in list(entry.listeners.values()):
            listener()

    def _rotation_delay(self, issued: IssuedCertificate) -> float:
        remaining = (issued.not_after - datetime.now(UTC)).total_seconds()
        factor = ROTATE_AT * (1 + self._jitter * (2 * self._rng() - 1))
        return max(0.0, remaining * factor)

    def _schedule(self, entry: _Entry, *, delay: float) -> None:
        if entry.rotation is not None and entry.rotation is not asyncio.current_task():
            entry.rotation.cancel()
        entry.rotation = asyncio.ensure_future(self._rotate(entry, delay))

    async def _rotate(self, entry: _Entry, delay: float) -> None:
        retry = RETRY_MIN
        await asyncio.sleep(delay)
        while self._entries.get(entry.identity) is entry:
            try:
                issued = await self._issue(entry.identity)
            except CertificateUnavailable as err:
                log.warning("workload certificate not rotated; retrying", error=str(err))
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            metrics.WORKLOAD_CERT_ROTATIONS.inc()
            self._install(entry, issued, notify=True)
            return

    async def close(self) -> None:
        """Stops every rotation (at shutdown)."""
        for entry in self._entries.values():
            if entry.drop is not None:
                entry.drop.cancel()
        tasks = [t for e in self._entries.values() for t in (e.rotation, e.first) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, CertificateUnavailable):
                await task
        self._entries.clear()
        metrics.WORKLOAD_IDENTITIES.set(0)
