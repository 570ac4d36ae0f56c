"""Status of Istio objects read from the test API server: written once per change through the
/status subresource, not again for its own MODIFIED event, the field named for an invalid
object; nothing written to the store by a status-only change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from istiolite.model.meta import ObjectKey
from istiolite.model.store import ConfigStore
from istiolite.operator.status import MAX_MESSAGE_CHARS, MAX_MESSAGES, desired_status
from istiolite.operator.writers import LeaderWriters
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from istiolite.sources.kube.results import ObjectResult
from istiolite.sources.kube.source import KubeSource
from tests.support.kube_apiserver import KubeApiServer

V1 = "networking.istio.io/v1"


async def _until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def _vs(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": V1,
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }


def _status(apiserver: KubeApiServer, name: str) -> dict[str, Any]:
    obj = apiserver.get(V1, "VirtualService", "shop", name)
    assert obj is not None
    return obj.get("status") or {}


def _status_writes(apiserver: KubeApiServer, name: str) -> int:
    return sum(
        1
        for r in apiserver.requests
        if r.method in ("PATCH", "PUT") and r.path.endswith(f"/virtualservices/{name}/status")
    )


GOOD = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
BAD = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": ""}}]}]}


@pytest.fixture
async def running(
    apiserver: KubeApiServer, kube: KubeClient
) -> AsyncIterator[tuple[KubeSource, ConfigStore]]:
    store = ConfigStore()
    options = InformerOptions(streaming_list=False)
    source = KubeSource(kube, store, options=options)
    writers = LeaderWriters(kube, lambda: b"", results=source.object_results, options=options)
    source.subscribe_results(writers.results_changed)
    task = asyncio.create_task(source.run())
    writers.start()
    try:
        yield source, store
    finally:
        await writers.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_valid_and_invalid_objects_get_their_condition_once(
    apiserver: KubeApiServer, running: tuple[KubeSource, ConfigStore]
) -> None:
    apiserver.put(_vs("good", GOOD))
    apiserver.put(_vs("bad", BAD))
    await _until(lambda: "conditions" in _status(apiserver, "good"), "good has a status")
    await _until(lambda: "conditions" in _status(apiserver, "bad"), "bad has a status")

    good = _status(apiserver, "good")
    (condition,) = good["conditions"]
    assert condition["type"] == "Reconciled" and condition["status"] == "True"
    assert condition["observedGeneration"] == 1 and good["observedGeneration"] == 1
    assert condition["lastTransitionTime"].endswith("Z")
    assert "validationMessages" not in good

    bad = _status(apiserver, "bad")
    (condition,) = bad["conditions"]
    assert condition["status"] == "False" and condition["reason"] == "Invalid"
    assert "spec.http[0].route[0].destination.host" in condition["message"]
    (message,) = bad["validationMessages"]
    assert message["level"] == "ERROR"
    assert message["type"] == {"code": "IST0106", "name": "SchemaValidationError"}
    assert message["message"].startswith("VirtualService shop/bad: spec.http[0].route[0]")

    # Our own status writes came back as MODIFIED events: nothing is written again.
    await asyncio.sleep(0.5)
    assert _status_writes(apiserver, "good") == 1
    assert _status_writes(apiserver, "bad") == 1


async def test_a_spec_change_updates_the_status_with_the_new_generation(
    apiserver: KubeApiServer, running: tuple[KubeSource, ConfigStore]
) -> None:
    apiserver.put(_vs("flip", GOOD))
    await _until(lambda: "conditions" in _status(apiserver, "flip"), "it has a status")
    first = _status(apiserver, "flip")["conditions"][0]
    stored = apiserver.get(V1, "VirtualService", "shop", "flip")
    assert stored is not None
    apiserver.put({**stored, "spec": BAD})
    await _until(
        lambda: _status(apiserver, "flip")["conditions"][0]["status"] == "False",
        "the status says invalid",
    )
    now = _status(apiserver, "flip")
    assert now["conditions"][0]["observedGeneration"] == 2 == now["observedGeneration"]
    assert now["conditions"][0]["lastTransitionTime"] >= first["lastTransitionTime"]
    assert _status_writes(apiserver, "flip") == 2


async def test_a_status_only_change_is_not_a_config_change(
    apiserver: KubeApiServer, running: tuple[KubeSource, ConfigStore]
) -> None:
    _source, store = running
    changes: list[Any] = []
    store.subscribe(changes.append)
    apiserver.put(_vs("quiet", GOOD))
    await _until(lambda: "conditions" in _status(apiserver, "quiet"), "it has a status")
    await _until(lambda: bool(changes), "the store saw the object")
    seen = len(changes)
    stored = apiserver.get(V1, "VirtualService", "shop", "quiet")
    assert stored is not None
    # Another controller's status field: a MODIFIED event with a new resourceVersion.
    apiserver.put({**stored, "status": {**stored["status"], "note": "seen by another"}})
    await _until(
        lambda: _status(apiserver, "quiet").get("note") == "seen by another", "it is stored"
    )
    await asyncio.sleep(0.5)
    assert len(changes) == seen
    assert _status_writes(apiserver, "quiet") == 1


def test_warnings_become_warning_messages_and_counts_are_bounded() -> None:
    key = ObjectKey("DestinationRule", "shop", "reviews")
    result = ObjectResult(
        generation=3,
        api_version="networking.istio.io/v1",
        warnings=[f"spec.trafficPolicy.field{i}: not applied by istiolite" for i in range(50)],
    )
    status = desired_status(key, result)
    assert status["conditions"][0]["status"] == "True"
    assert status["conditions"][0]["observedGeneration"] == 3
    messages = status["validationMessages"]
    assert len(messages) == MAX_MESSAGES
    assert messages[0] == {
        "type": {"name": "ConfigWarning"},
        "level": "WARNING",
        "message": "spec.trafficPolicy.field0: not applied by istiolite",
    }
    long = ObjectResult(1, "networking.istio.io/v1", errors=[("spec.hosts[0]", "x" * 5000)])
    bad = desired_status(key, long)
    assert len(bad["validationMessages"][0]["message"]) <= MAX_MESSAGE_CHARS
    assert bad["conditions"][0]["message"].startswith("spec.hosts[0]: xxx")
