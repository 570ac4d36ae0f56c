"""Sidecar scoping through a real Envoy: a namespace-scoped proxy holds only its clusters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.net import free_port
from tests.support.processes import EnvoyProcess, IstioliteProcess, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def _service(name: str, namespace: str, port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


def test_scoped_proxy_holds_only_what_its_sidecar_allows(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    ports = [free_port() for _ in range(4)]
    docs = [
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "team-a"},
            "spec": {"egress": [{"hosts": ["./*"]}]},
        },
        _service("cart", "team-a", ports[0]),
        _service("search", "team-a", ports[1]),
        _service("billing", "team-b", ports[2]),
        _service("ledger", "team-b", ports[3]),
    ]
    (config / "mesh.yaml").write_text(yaml.safe_dump_all(docs))
    cp = IstioliteProcess([config], tmp_path)
    envoys: list[EnvoyProcess] = []
    try:
        for namespace in ("team-a", "team-b"):
            envoys.append(
                EnvoyProcess(
                    tmp_path,
                    cp.xds_address,
                    f"sidecar~127.0.0.1~app-1.{namespace}~{namespace}.svc.cluster.local",
                    delta=True,
                    meta={"NAMESPACE": namespace, "INTERCEPTION_MODE": "NONE"},
                )
            )
            wait_for(envoys[-1].synced, what=f"envoy in {namespace} synced")

        def outbound(envoy: EnvoyProcess) -> set[str]:
            dump = envoy.config_dump()
            section = next(c for c in dump["configs"] if "dynamic_active_clusters" in c)
            return {
                c["cluster"]["name"]
                for c in section["dynamic_active_clusters"]
                if c["cluster"]["name"].startswith("outbound|")
            }

        scoped, unscoped = (outbound(e) for e in envoys)
        assert scoped == {
            f"outbound|{ports[0]}||cart.team-a.svc.cluster.local",
            f"outbound|{ports[1]}||search.team-a.svc.cluster.local",
        }
        assert len(unscoped) == 4
        # Only listeners for what it may reach are bound in the scoped proxy.
        dump = envoys[0].config_dump()
        listeners = next(c for c in dump["configs"] if "dynamic_listeners" in c)
        names = {item["name"] for item in listeners["dynamic_listeners"]}
        assert names == {f"127.0.0.1_{ports[0]}", f"127.0.0.1_{ports[1]}"}
    finally:
        stop_all(*envoys, cp)
