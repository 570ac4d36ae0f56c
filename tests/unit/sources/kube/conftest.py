"""An informer's world: the test API server, a client connected to it, and a recorder of what
the informer hands on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import Batch, Key
from tests.support.kube_apiserver import KubeApiServer


@dataclass
class Recorder:
    """Every batch an informer handed on, and the objects they add up to."""

    batches: list[Batch] = field(default_factory=list)
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        for key in batch.deletes:
            self.objects.pop(key, None)
        self.objects.update(batch.upserts)

    def names(self) -> set[str]:
        return {name for _, name in self.objects}


@pytest.fixture
def server_options() -> dict[str, Any]:
    """Overridden by a test module (or parametrised) to shape the server."""
    return {"watch_timeout": 30.0, "bookmark_interval": 0.2}


@pytest.fixture
def server(server_options: dict[str, Any]) -> Iterator[KubeApiServer]:
    with KubeApiServer(**server_options) as srv:
        yield srv


@pytest.fixture
async def kube(server: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(server.write_kubeconfig(tmp_path / "kubeconfig"))
    assert client is not None
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def running(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    """Run `coro` as a task for the block; cancelled and awaited after it, even on failure."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
