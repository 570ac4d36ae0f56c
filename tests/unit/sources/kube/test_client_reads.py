"""The adapter's read primitives against the test API server: errors as the server's Status,
bounds on what a response may make istiolite hold, an unreachable server told apart."""

from __future__ import annotations

import pytest

from istiolite.sources.kube.client import ApiError, KubeClient, KubeUnavailable
from tests.support.kube_apiserver import KubeApiServer
from tests.support.objects import service


async def test_error_status_carries_the_servers_reason(kube: KubeClient) -> None:
    with pytest.raises(ApiError) as caught:
        await kube.get_json("/apis/example.com/v1/widgets")
    assert caught.value.status == 404 and caught.value.reason == "NotFound"


async def test_response_over_the_bound_is_refused(server: KubeApiServer, kube: KubeClient) -> None:
    for i in range(50):
        server.put(service(f"s{i}"))
    listed = await kube.get_json("/api/v1/services")
    assert len(listed["items"]) == 50
    with pytest.raises(ValueError, match="larger than 4096 bytes"):
        await kube.get_json("/api/v1/services", max_bytes=4096)


async def test_server_down_is_unavailable_not_an_api_error(
    server: KubeApiServer, kube: KubeClient
) -> None:
    server.go_down()
    try:
        with pytest.raises(KubeUnavailable):
            await kube.get_json("/api/v1/services", request_timeout=5)
        with pytest.raises(KubeUnavailable):
            await kube.stream("/api/v1/services", {"watch": "true"}, read_timeout=1)
    finally:
        server.come_up()
