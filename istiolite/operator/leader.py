"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection (which
istiod uses): acquire when the Lease is free or its holder stopped renewing it for a lease
duration (measured on this replica's clock, from when it last saw the record change), renew
every retry period, give up after failing to renew for the renew deadline, release on a clean
shutdown. Every write carries the resourceVersion read, so two candidates never both win.

Durations as istiod's (pilot/pkg/leaderelection): a 30 s lease, renewed within 15 s, tried every
7.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.sources.kube.errors import KubeApiError, NotFound
from istiolite.sources.kube.refs import ObjectRef, lease

log = get_logger("leader")

LEASE_NAME = "istiolite-leader"
_JITTER = 1.2  # client-go's JitterFactor for the acquire loop
_RELEASE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    lease_duration: float = 30.0
    renew_deadline: float = 15.0
    retry_period: float = 7.5

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration "
                f"(got {self.retry_period} s, {self.renew_deadline} s, {self.lease_duration} s)"
            )

    @classmethod
    def from_lease_duration(cls, seconds: float) -> LeaseTimings:
        """istiod's proportions: renew within half the lease, try every quarter."""
        return cls(seconds, seconds / 2, seconds / 4)


class LeaseApi(Protocol):
    """The calls the elector makes (KubeClient's writes)."""

    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]: ...

    async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(
        self, ref: ObjectRef, obj: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]: ...


def micro_time(when: datetime) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}Z"


def parse_micro_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class LeaderElector:
    """Runs the election for `identity` on Lease `namespace/name`. `run()` until cancelled,
    then `release()`. Callbacks are plain functions called on the loop; they must not block."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        timings: LeaseTimings | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not identity:
            raise ValueError("leader election needs an identity (POD_NAME)")
        self._api = api
        self.ref = lease(namespace, name)
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self._clock = clock
        self._now = now
        self._started: list[Callable[[], None]] = []
        self._stopped: list[Callable[[], None]] = []
        self.leading = False
        # The last spec seen and when (local clock) it was first seen.
        self._observed: dict[str, Any] = {}
        self._observed_at = 0.0
        self.transitions = 0  # times this replica became the leader
        self._keep_for_release = False  # led until cancelled: release() gives the Lease up
        metrics.LEADER.labels(lease=name).set(0)

    def on_started_leading(self, callback: Callable[[], None]) -> None:
        self._started.append(callback)

    def on_stopped_leading(self, callback: Callable[[], None]) -> None:
        self._stopped.append(callback)

    @property
    def holder(self) -> str:
        """Who holds the Lease as last seen ("" when free or unknown)."""
        holder = self._observed.get("holderIdentity")
        return holder if isinstance(holder, str) else ""

    def status(self) -> dict[str, Any]:
        """For /debug: read-only facts about the election."""
        return {
            "lease": f"{self.ref.namespace}/{self.ref.name}",
            "identity": self.identity,
            "leader": self.leading,
            "holder": self.holder,
            "lease_duration_seconds": self.timings.lease_duration,
            "became_leader": self.transitions,
        }

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, lead until renewing fails, and start over; until cancelled."""
        try:
            while True:
                await self._acquire()
                self._set_leading(True)
                await self._renew()
                self._set_leading(False)
        finally:
            if self.leading:
                self._set_leading(False)
                self._keep_for_release = True

    async def _acquire(self) -> None:
        retry = self.timings.retry_period
        while True:
            if await self._try(self.timings.renew_deadline):
                return
            await asyncio.sleep(retry * random.uniform(1.0, _JITTER))

    async def _renew(self) -> None:
        t = self.timings
        last = self._clock()
        while True:
            await asyncio.sleep(t.retry_period)
            remaining = t.renew_deadline - (self._clock() - last)
            if await self._try(max(remaining, 0.5)):
                last = self._clock()
                continue
            if self.holder and self.holder != self.identity:
                log.warning("leadership lost: the lease is held by another", holder=self.holder)
                return
            if self._clock() - last >= t.renew_deadline:
                log.warning("leadership lost: could not renew the lease within the deadline",
                            lease=str(self.ref), deadline=t.renew_deadline)  # fmt: skip
                return

    async def _try(self, within: float) -> bool:
        """One tryAcquireOrRenew; False on any failure (logged)."""
        try:
            async with asyncio.timeout(within):
                return await self._try_acquire_or_renew()
        except TimeoutError:
            log.warning("lease call timed out", lease=str(self.ref))
        except KubeApiError as err:
            # A 409 is another candidate's write between our read and ours: lost this round.
            level = log.info if err.status == 409 else log.warning
            level("lease not acquired or renewed", lease=str(self.ref), error=str(err))
        except (OSError, ValueError) as err:
            log.warning("lease call failed", lease=str(self.ref), error=str(err)[:300])
        return False

    def _record(self, acquired: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.timings.lease_duration)),
            "acquireTime": acquired,
            "renewTime": micro_time(self._now()),
            "leaseTransitions": transitions,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = spec
            self._observed_at = self._clock()

    async def _try_acquire_or_renew(self) -> bool:
        try:
            current = await self._api.get(self.ref)
        except NotFound:
            spec = self._record(micro_time(self._now()), 0)
            created = await self._api.create(self.ref, {"spec": spec})
            self._observe(_spec(created))
            return True
        old = _spec(current)
        self._observe(old)
        holder = self.holder
        if holder and holder != self.identity:
            duration = old.get("leaseDurationSeconds")
            seconds = duration if isinstance(duration, int) and duration > 0 else 0
            if self._observed_at + seconds > self._clock():
                return False  # held, and renewed recently enough as far as we can see
        transitions = old.get("leaseTransitions")
        count = transitions if isinstance(transitions, int) and transitions >= 0 else 0
        if holder == self.identity:
            acquired = old.get("acquireTime")
            spec = self._record(acquired if isinstance(acquired, str) else "", count)
            if not spec["acquireTime"]:
                spec["acquireTime"] = spec["renewTime"]
        else:
            spec = self._record(micro_time(self._now()), count + 1)
        meta = current.get("metadata") if isinstance(current.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        updated = await self._api.replace(self.ref, {"metadata": meta, "spec": spec})
        self._observe(_spec(updated))
        return True

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        metrics.LEADER.labels(lease=self.ref.name).set(1 if leading else 0)
        if leading:
            self.transitions += 1
            log.info("became the leader", lease=str(self.ref), identity=self.identity)
        callbacks = self._started if leading else self._stopped
        for callback in list(callbacks):
            try:
                callback()
            except Exception:
                log.exception("leader election callback failed")

    async def release(self) -> bool:
        """After `run` was cancelled: give the Lease up (holder cleared, a 1 s duration, as
        client-go's ReleaseOnCancel) so another replica takes over at its next try instead of
        after a full lease duration. True when released."""
        if not self._keep_for_release:
            return False
        self._keep_for_release = False
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                current = await self._api.get(self.ref)
                spec = _spec(current)
                if spec.get("holderIdentity") != self.identity:
                    return False
                now = micro_time(self._now())
                released = {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": spec.get("leaseTransitions", 0),
                }
                await self._api.replace(
                    self.ref, {"metadata": current.get("metadata", {}), "spec": released}
                )
        except (TimeoutError, KubeApiError, OSError, ValueError) as err:
            log.warning("could not release the lease", lease=str(self.ref), error=str(err)[:300])
            return False
        log.info("lease released", lease=str(self.ref))
        return True


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return dict(spec) if isinstance(spec, dict) else {}


async def stop_elector(elector: LeaderElector, task: asyncio.Task[None]) -> None:
    """Cancel the election task, wait for it, release the Lease."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await elector.release()
