"""The Envoy half of the fuzz test (issue 9): fuzzed objects that pass validation give config a
real Envoy accepts.

A fixed-seed sample of objects from the schema strategies (every kind), each translated for a
sidecar and a router as in tests/unit/networking/test_fuzz_generation.py, is loaded by
`envoy --mode validate`: the real binary builds every cluster, listener, filter and route
(regexes compiled with RE2, header rules, proto constraints) without serving. The bootstrap is the
one `istiolite bootstrap` writes; what istiolite would send over xDS goes in as static
resources: EDS clusters carry their ClusterLoadAssignment inline, RDS references carry their
RouteConfiguration inline (validate mode does not fetch over xDS).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings

from istiolite import type_urls
from istiolite.bootstrap import build_bootstrap
from tests.support import fuzz_pipeline
from tests.support.processes import envoy_binary
from tests.support.schema_strategies import KINDS, istio_object
from tests.unit.networking.test_fuzz_generation import REGRESSIONS

pytestmark = [pytest.mark.envoy]

PER_KIND = 5  # translated objects per kind: 30 in all, each for a sidecar and a router


def _sample(kind: str) -> list[tuple[dict[str, Any], list[fuzz_pipeline.Generated]]]:
    found: list[tuple[dict[str, Any], list[fuzz_pipeline.Generated]]] = []

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(istio_object(kind))
    def collect(raw: dict[str, Any]) -> None:
        if len(found) < PER_KIND:
            generated = fuzz_pipeline.run(raw)
            if generated is not None:
                found.append((raw, generated))

    collect()
    return found


def _static_clusters(generated: fuzz_pipeline.Generated) -> list[cluster_pb2.Cluster]:
    assignments = generated.by_type[type_urls.ENDPOINT]
    out = []
    for name, message in generated.by_type[type_urls.CLUSTER].items():
        cluster = cluster_pb2.Cluster()
        cluster.CopyFrom(message)
        if cluster.type == cluster_pb2.Cluster.EDS:
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cla = assignments.get(name) or endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
            cluster.load_assignment.CopyFrom(cla)
        out.append(cluster)
    return out


def _static_listeners(generated: fuzz_pipeline.Generated) -> list[listener_pb2.Listener]:
    routes = generated.by_type[type_urls.ROUTE]
    out = []
    for message in generated.by_type[type_urls.LISTENER].values():
        listener = listener_pb2.Listener()
        listener.CopyFrom(message)
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if not f.typed_config.Is(hcm.HttpConnectionManager.DESCRIPTOR):
                    continue
                manager = hcm.HttpConnectionManager()
                f.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    name = manager.rds.route_config_name
                    found = routes.get(name) or route_pb2.RouteConfiguration(name=name)
                    manager.route_config.CopyFrom(found)  # replaces rds (a oneof)
                    f.typed_config.Pack(manager)
        out.append(listener)
    return out


def _bootstrap(generated: fuzz_pipeline.Generated) -> dict[str, Any]:
    doc = build_bootstrap(
        node_id=generated.node_id,
        xds_address="127.0.0.1:15010",  # never dialled: validate mode does not connect
        admin_address="127.0.0.1:0",
        labels=generated.labels,
    )

    def as_json(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    static = doc.setdefault("static_resources", {})
    static.setdefault("clusters", []).extend(as_json(c) for c in _static_clusters(generated))
    static["listeners"] = [as_json(item) for item in _static_listeners(generated)]
    return doc


def envoy_validates(path: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    return done.returncode == 0 and "OK" in output, output[-2000:]


@pytest.mark.slow
# Random AuthorizationPolicy / RequestAuthentication objects almost never validate (principal,
# issuer and key formats); their Envoy config is covered by their own real-Envoy tests.
@pytest.mark.parametrize(
    "kind", [k for k in KINDS if k not in ("AuthorizationPolicy", "RequestAuthentication")]
)
def test_envoy_accepts_the_config_of_fuzzed_objects_that_validate(
    kind: str, tmp_path: Path
) -> None:
    sample = _sample(kind)
    assert len(sample) == PER_KIND, f"only {len(sample)} {kind} objects passed validation"
    for i, (raw, per_proxy) in enumerate(sample):
        for generated in per_proxy:
            path = tmp_path / f"{i}-{generated.proxy}.json"
            path.write_text(json.dumps(_bootstrap(generated)))
            ok, output = envoy_validates(path)
            assert ok, f"Envoy refused the {generated.proxy} config of {raw!r}:\n{output}"


@pytest.mark.parametrize("case", REGRESSIONS)
def test_envoy_accepts_the_regression_cases_that_validate(case: str, tmp_path: Path) -> None:
    per_proxy = fuzz_pipeline.run(REGRESSIONS[case])
    for generated in per_proxy or []:  # rejected by validation: nothing reaches Envoy
        path = tmp_path / f"{generated.proxy}.json"
        path.write_text(json.dumps(_bootstrap(generated)))
        ok, output = envoy_validates(path)
        assert ok, f"Envoy refused the {generated.proxy} config of {case}:\n{output}"


def test_envoy_validate_refuses_what_it_would_nack(tmp_path: Path) -> None:
    # The check above is only as good as validate mode: it must refuse a route config Envoy
    # would NACK (a regex RE2 rejects), when carried the same way.
    raw = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "fuzz", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    }
    generated = fuzz_pipeline.run(raw)
    assert generated is not None
    sidecar = generated[0]
    for route in sidecar.by_type[type_urls.ROUTE].values():
        for host in route.virtual_hosts:
            for r in host.routes:
                r.match.ClearField("prefix")
                r.match.safe_regex.regex = "(?=a)a"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_bootstrap(sidecar)))
    ok, output = envoy_validates(path)
    assert not ok and "perl operator" in output, output
    # … and accepts the same config untouched.
    fresh = fuzz_pipeline.run(raw)
    assert fresh is not None
    path.write_text(json.dumps(_bootstrap(fresh[0])))
    assert envoy_validates(path)[0]
