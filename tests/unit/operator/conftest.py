"""The test API server and a KubeClient connected to it through kubernetes_asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from istiolite.sources.kube.client import KubeClient
from tests.support.kube_apiserver import KubeApiServer


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


@pytest.fixture
async def kube(apiserver: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(apiserver.write_kubeconfig(tmp_path / "kubeconfig"))
    assert client is not None
    try:
        yield client
    finally:
        await client.close()
