"""A real Envoy stays connected and served when config holds values that pass validation yet make
translation raise (issue 9, finding 3): the objects are left out and named (log, /debug/configz),
everything else still works, and endpoint changes still arrive."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.conftest import NAMESPACE, Mesh
from tests.support import mesh
from tests.support.processes import http_get
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

BAD_DR = yaml.safe_load(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: beta-pool, namespace: {NAMESPACE}}}
spec:
  host: beta
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 100000000000000000000h}}}}}}
""")
BAD_VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "alpha-retries", "namespace": NAMESPACE},
    "spec": {
        "hosts": ["alpha"],
        "http": [
            {"route": [{"destination": {"host": "alpha"}}], "retries": {"attempts": 4294967296}}
        ],
    },
}
LEFT_OUT = {f"DestinationRule {NAMESPACE}/beta-pool", f"VirtualService {NAMESPACE}/alpha-retries"}


def test_objects_that_fail_to_translate_leave_envoy_connected_and_served(
    running_mesh: Mesh,
) -> None:
    m = running_mesh
    assert m.istiolite is not None and m.envoy is not None
    envoy, istiolite = m.envoy, m.istiolite
    mesh.write(m.config_dir / "bad.yaml", BAD_DR, BAD_VS)
    rejected = lambda: [  # noqa: E731
        e
        for e in istiolite.log_events()
        if "bad.yaml" in json.dumps(e) and "reject" in json.dumps(e)
    ]

    def left_out() -> bool:
        status, body = http_get(f"http://127.0.0.1:{istiolite.http_port}/debug/configz")
        named = {e["object"] for e in json.loads(body).get("generation_errors", [])}
        return status == 200 and named == LEFT_OUT

    wait_for(lambda: left_out() or bool(rejected()), what="the bad objects named in configz")
    if rejected():
        # Validation refuses them first (logged naming bad.yaml); Envoy still runs the rest.
        assert envoy.synced()
        return
    # beta's cluster is left out (not sent without its policy); alpha is served by its default
    # route (the VirtualService is left out).
    wait_for(lambda: m.cluster("beta") not in envoy.cluster_names(), what="beta left out")
    assert m.cluster("alpha") in envoy.cluster_names()
    assert m.request("alpha")[0] == 200

    # An endpoint change still reaches Envoy: the stream was never aborted.
    alpha_ips = [ip for ip, s in m.upstreams.items() if s.name.startswith("alpha")]
    alpha_ips.append(m.start_upstream("alpha-new"))
    mesh.write(
        m.config_dir / "alpha.yaml",
        mesh.service("alpha", NAMESPACE, m.service_port, target_port=m.target_port),
        mesh.endpoint_slice("alpha", NAMESPACE, m.target_port, alpha_ips),
    )
    wait_for(
        lambda: len(envoy.cluster_endpoints(m.cluster("alpha"))) == len(alpha_ips),
        what="the new alpha endpoint in envoy",
    )
    events = istiolite.log_events()
    named = [
        e.get("object")
        for e in events
        if e.get("event") == "config object left out of generated config"
    ]
    assert sorted(named) == sorted(LEFT_OUT)  # once each, though regenerated since
    assert len([e for e in events if e.get("event") == "proxy connected"]) == 1
