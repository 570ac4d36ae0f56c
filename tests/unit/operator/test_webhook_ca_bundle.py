"""The leader keeps the mesh root in the caBundle of the two webhook configurations (as the
manifests install them), against the test API server: patched at the start of leadership,
re-patched after someone edits it and when the root changes, validation turned to Fail, nothing
written when already right, and nothing created when a configuration is not installed."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite.operator.writers import LeaderWriters
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from tests.support.kube_apiserver import KubeApiServer

ROOT = Path(__file__).resolve().parents[3]
API = "admissionregistration.k8s.io/v1"
VALIDATOR = ("ValidatingWebhookConfiguration", "istio-validator-istio-system")
INJECTOR = ("MutatingWebhookConfiguration", "istio-sidecar-injector")


class Bundle:
    def __init__(self) -> None:
        self.pem = b"-----BEGIN CERTIFICATE-----\nroot one\n-----END CERTIFICATE-----\n"

    def __call__(self) -> bytes:
        return self.pem

    @property
    def encoded(self) -> str:
        return base64.b64encode(self.pem).decode()


def _manifests() -> list[dict[str, Any]]:
    text = (ROOT / "manifests" / "base" / "webhooks.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


async def _until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def _hooks(apiserver: KubeApiServer, which: tuple[str, str]) -> list[dict[str, Any]]:
    obj = apiserver.get(API, which[0], "", which[1])
    assert obj is not None
    return obj["webhooks"]  # type: ignore[no-any-return]


def _patched(apiserver: KubeApiServer, bundle: Bundle) -> bool:
    hooks = _hooks(apiserver, VALIDATOR) + _hooks(apiserver, INJECTOR)
    return all(h["clientConfig"].get("caBundle") == bundle.encoded for h in hooks) and all(
        h["failurePolicy"] == "Fail" for h in _hooks(apiserver, VALIDATOR)
    )


@pytest.fixture
def bundle() -> Bundle:
    return Bundle()


@pytest.fixture
async def writers(kube: KubeClient, bundle: Bundle) -> AsyncIterator[LeaderWriters]:
    w = LeaderWriters(kube, bundle, options=InformerOptions(streaming_list=False))
    try:
        yield w
    finally:
        await w.close()


async def test_patched_when_leading_then_kept(
    apiserver: KubeApiServer, writers: LeaderWriters, bundle: Bundle
) -> None:
    for obj in _manifests():
        apiserver.put(obj)
    assert _hooks(apiserver, VALIDATOR)[0]["failurePolicy"] == "Ignore"
    writers.start()
    await _until(lambda: _patched(apiserver, bundle), "both configurations carry the root")
    # the rest of each webhook is as installed
    hook = _hooks(apiserver, VALIDATOR)[0]
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert [h["name"] for h in _hooks(apiserver, INJECTOR)] == [
        "namespace.sidecar-injector.istio.io",
        "object.sidecar-injector.istio.io",
    ]
    patcher = writers.webhook_ca_bundle
    assert patcher is not None
    # (the counter moves once the PATCH has been answered: just after the server has it)
    await _until(lambda: patcher.writes == 2, "two writes counted")
    writes = patcher.writes

    # Someone re-applies the manifest (caBundle gone, Ignore again): patched again.
    apiserver.put(_manifests()[0])
    await _until(lambda: _patched(apiserver, bundle), "the edit is undone")
    await _until(lambda: patcher.writes == writes + 1, "one more write counted")

    # The root changes: both follow.
    bundle.pem = b"-----BEGIN CERTIFICATE-----\nroot two\n-----END CERTIFICATE-----\n"
    writers.root_changed()
    await _until(lambda: _patched(apiserver, bundle), "the new root is in both")
    await _until(lambda: patcher.writes == writes + 3, "two more writes counted")
    await asyncio.sleep(0.3)  # our own MODIFIED events come back: they change nothing
    assert patcher.writes == writes + 3


async def test_nothing_is_written_when_already_right(
    apiserver: KubeApiServer, writers: LeaderWriters, bundle: Bundle
) -> None:
    for obj in _manifests():
        done = copy.deepcopy(obj)
        for hook in done["webhooks"]:
            hook["clientConfig"]["caBundle"] = bundle.encoded
            hook["failurePolicy"] = "Fail"
        apiserver.put(done)
    writers.start()
    patcher = writers.webhook_ca_bundle
    assert patcher is not None
    await patcher.reconcile("istio-validator-istio-system")
    await patcher.reconcile("istio-sidecar-injector")
    await asyncio.sleep(0.3)
    assert patcher.writes == 0
    assert not [r for r in apiserver.requests if r.method == "PATCH"]


async def test_a_configuration_not_installed_is_left_alone(
    apiserver: KubeApiServer, writers: LeaderWriters, bundle: Bundle
) -> None:
    apiserver.put(_manifests()[1])  # only the injector
    writers.start()
    await _until(
        lambda: all(
            h["clientConfig"].get("caBundle") == bundle.encoded for h in _hooks(apiserver, INJECTOR)
        ),
        "the injector is patched",
    )
    await asyncio.sleep(0.2)
    assert apiserver.get(API, VALIDATOR[0], "", VALIDATOR[1]) is None
