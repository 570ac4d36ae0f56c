"""GAMMA through a real sidecar Envoy: an HTTPRoute whose parent is the Service `reviews` shifts
the sidecar's calls to it 90/10 between two Services, as a VirtualService bound to `mesh` would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_traffic_management import NS, Mesh, _service
from tests.support.net import free_port
from tests.support.processes import start_sidecar_mesh, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


@pytest.fixture
def gamma(tmp_path: Path) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(config, port=free_port(), target=free_port())
    try:
        m.write("reviews.yaml", *_service(m, "reviews", []))
        m.write("reviews-v1.yaml", *_service(m, "reviews-v1", ["v1"]))
        m.write("reviews-v2.yaml", *_service(m, "reviews-v2", ["v2"]))
        m.write(
            "route.yaml",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "reviews-split", "namespace": NS},
                "spec": {
                    "parentRefs": [
                        {"group": "", "kind": "Service", "name": "reviews", "port": m.port}
                    ],
                    "rules": [
                        {
                            "backendRefs": [
                                {"name": "reviews-v1", "port": m.port, "weight": 90},
                                {"name": "reviews-v2", "port": m.port, "weight": 10},
                            ]
                        }
                    ],
                },
            },
        )
        m.istiolite, m.envoy = start_sidecar_mesh([config], tmp_path, namespace=NS)
        wait_for(lambda: m.get("reviews").status == 200, what="reviews routable")
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for server in m.upstreams:
            server.stop()


def test_http_route_on_a_service_shifts_sidecar_traffic_90_10(gamma: Mesh) -> None:
    seen = Counter(gamma.get("reviews").server for _ in range(1000))
    assert set(seen) == {"reviews-v1-v1", "reviews-v2-v2"}, seen
    assert 50 <= seen["reviews-v2-v2"] <= 150, seen
