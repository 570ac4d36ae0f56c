"""Lease election against the test API server (which, as kube-apiserver, refuses Lease times
that are not 6-digit MicroTime and stale resourceVersions). The election's clock is injected:
"the lease expired" is a clock moved forward, not a sleep."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from istiolite.operator.leader import (
    LeaderElector,
    LeaseTimings,
    micro_time,
    parse_micro_time,
    stop_elector,
)
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.refs import ObjectRef
from tests.support.kube_apiserver import KubeApiServer

NS = "istio-system"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _leader_gauge() -> float | None:
    return REGISTRY.get_sample_value("istiolite_leader", {"lease": "istiolite-leader"})


def _lease(apiserver: KubeApiServer) -> dict[str, Any]:
    lease = apiserver.get("coordination.k8s.io/v1", "Lease", NS, "istiolite-leader")
    assert lease is not None
    return lease


def _elector(
    kube: Any, identity: str, clock: Callable[[], float] | None = None, **kw: Any
) -> LeaderElector:
    return LeaderElector(kube, namespace=NS, identity=identity, clock=clock or Clock(), **kw)


def test_micro_time_has_exactly_six_fractional_digits() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    assert micro_time(datetime(2026, 12, 5, 8, 30, tzinfo=UTC)) == "2026-12-05T08:30:00.000000Z"
    east = timezone(timedelta(hours=2))
    when = datetime(2026, 12, 5, 10, 30, 0, 123456, tzinfo=east)
    assert micro_time(when) == "2026-12-05T08:30:00.123456Z"
    assert parse_micro_time(micro_time(when)) == when


def test_timings_must_leave_room_to_renew() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseTimings(lease_duration=10, renew_deadline=10, retry_period=1)
    assert LeaseTimings() == LeaseTimings.from_lease_duration(30)  # istiod's 30/15/7.5


async def test_first_candidate_creates_the_lease(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    a = _elector(kube, "istiolite-a")
    assert await a._try(5)
    spec = _lease(apiserver)["spec"]
    assert spec["holderIdentity"] == "istiolite-a"
    assert spec["leaseDurationSeconds"] == 30
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])


async def test_renewal_moves_renew_time_and_keeps_acquire_time(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    a = _elector(kube, "istiolite-a")
    assert await a._try(5)
    first = _lease(apiserver)["spec"]
    await asyncio.sleep(0.01)  # a later renewTime at microsecond resolution
    assert await a._try(5)
    second = _lease(apiserver)["spec"]
    assert second["acquireTime"] == first["acquireTime"]
    assert parse_micro_time(second["renewTime"]) > parse_micro_time(first["renewTime"])
    assert second["leaseTransitions"] == 0


async def test_a_held_lease_is_taken_over_only_after_a_lease_duration_without_renewal(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    clock_b = Clock()
    a, b = _elector(kube, "istiolite-a"), _elector(kube, "istiolite-b", clock_b)
    assert await a._try(5)
    assert not await b._try(5)  # b sees the record for the first time: held
    assert b.holder == "istiolite-a"
    clock_b.now += 29
    assert not await b._try(5)  # unchanged for 29 s of b's clock: still held
    assert await a._try(5)  # a renews: the record changes, b's wait starts over
    clock_b.now += 29
    assert not await b._try(5)
    clock_b.now += 31
    assert await b._try(5)  # 31 s without a change: expired, b takes it
    spec = _lease(apiserver)["spec"]
    assert spec["holderIdentity"] == "istiolite-b"
    assert spec["leaseTransitions"] == 1
    # a's next renewal finds b holding it (renewed just now as a sees it): a is not leader.
    assert not await a._try(5)
    assert a.holder == "istiolite-b"


async def test_a_stale_write_loses_the_round_to_the_other_candidate(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    """Both read a free Lease; the other writes first; our PUT carries the resourceVersion we
    read, so the server refuses it (409) and we are not leader."""

    class ReadThenOtherWrites:
        def __init__(self, inner: KubeClient) -> None:
            self.inner = inner

        async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]:
            current = await self.inner.get(ref)
            taken = {**current, "spec": {**current["spec"], "holderIdentity": "istiolite-b"}}
            apiserver.put(taken)  # the other candidate's write lands between our read and ours
            return current

        async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
            return await self.inner.create(ref, obj)

        async def replace(
            self, ref: ObjectRef, obj: dict[str, Any], *, subresource: str = ""
        ) -> dict[str, Any]:
            return await self.inner.replace(ref, obj, subresource=subresource)

    first = _elector(kube, "istiolite-c")
    assert await first._try(5)
    assert await first.release() is False  # never ran: nothing to release
    apiserver.put(
        {**_lease(apiserver), "spec": {**_lease(apiserver)["spec"], "holderIdentity": ""}}
    )
    a = _elector(ReadThenOtherWrites(kube), "istiolite-a")
    assert not await a._try(5)
    assert _lease(apiserver)["spec"]["holderIdentity"] == "istiolite-b"
    assert not a.leading


async def test_run_leads_calls_back_and_releases_on_shutdown(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    timings = LeaseTimings(lease_duration=3, renew_deadline=2, retry_period=0.2)
    a = _elector(kube, "istiolite-a", timings=timings)
    events: list[str] = []
    became = asyncio.Event()
    a.on_started_leading(lambda: (events.append("started"), became.set()))
    a.on_stopped_leading(lambda: events.append("stopped"))
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(became.wait(), 10)
    assert a.leading and a.status()["leader"] is True
    assert _leader_gauge() == 1
    await stop_elector(a, task)
    assert events == ["started", "stopped"]
    assert _leader_gauge() == 0
    spec = _lease(apiserver)["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    # Released: another candidate takes it at its first try, without waiting out 30 s.
    b = _elector(kube, "istiolite-b")
    assert await b._try(5)
    assert _lease(apiserver)["spec"]["leaseTransitions"] == 1


async def test_leadership_is_given_up_when_renewal_fails_past_the_deadline(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    timings = LeaseTimings(lease_duration=3, renew_deadline=1, retry_period=0.2)
    a = _elector(kube, "istiolite-a", time.monotonic, timings=timings)
    started, stopped = asyncio.Event(), asyncio.Event()
    a.on_started_leading(started.set)
    a.on_stopped_leading(stopped.set)
    task = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        apiserver.go_down()
        await asyncio.wait_for(stopped.wait(), 20)
        assert not a.leading
    finally:
        apiserver.come_up()
        await stop_elector(a, task)


async def test_leadership_is_given_up_at_once_when_another_holds_the_lease(
    apiserver: KubeApiServer, kube: KubeClient
) -> None:
    timings = LeaseTimings(lease_duration=3, renew_deadline=2, retry_period=0.2)
    a = _elector(kube, "istiolite-a", timings=timings)
    started, stopped = asyncio.Event(), asyncio.Event()
    a.on_started_leading(started.set)
    a.on_stopped_leading(stopped.set)
    task = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        lease = _lease(apiserver)
        apiserver.put({**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}})
        await asyncio.wait_for(stopped.wait(), 10)
        assert a.holder == "intruder"
    finally:
        await stop_elector(a, task)
    # Not the holder at shutdown: the intruder's Lease is left alone.
    assert _lease(apiserver)["spec"]["holderIdentity"] == "intruder"
