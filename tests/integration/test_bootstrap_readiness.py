"""`istiolite bootstrap --readiness-address`: a real Envoy answers GET /healthz/ready there with
its own /ready (the admin listener stays on loopback): failing while it has no config from
the control plane, 200 once it has. This is the readiness probe of the `envoy` flavour's gateway
Deployment (port 15021, as pilot-agent's)."""

from __future__ import annotations

from pathlib import Path

from tests.support.net import free_ports
from tests.support.processes import EnvoyProcess, IstioliteProcess, http_get, stop_all
from tests.support.wait import wait_for

NODE = "router~127.0.0.1~gw-1.shop~shop.svc.cluster.local"


def _envoy(workdir: Path, xds: str) -> tuple[EnvoyProcess, str]:
    admin, ready = free_ports(2)
    envoy = EnvoyProcess(
        workdir,
        xds,
        NODE,
        delta=True,
        meta={"NAMESPACE": "shop"},
        bootstrap_args=[
            "--admin-address",
            f"127.0.0.1:{admin}",
            "--readiness-address",
            f"127.0.0.1:{ready}",
        ],
        wait_ready=False,
    )
    return envoy, f"http://127.0.0.1:{ready}/healthz/ready"


def test_readiness_follows_envoys_ready(tmp_path: Path) -> None:
    (nowhere,) = free_ports(1)
    lonely, url = _envoy(tmp_path, f"127.0.0.1:{nowhere}")
    try:
        # No control plane: Envoy is still initializing, and the probe fails (its listeners
        # open only once Envoy has its first config, so a kubelet sees a refused connection).
        assert http_get(lonely.admin("/ready"), timeout=1)[0] == 503
        try:
            status = http_get(url, timeout=1)[0]
        except OSError:
            status = 0
        assert status != 200
    finally:
        stop_all(lonely)

    config = tmp_path / "config"
    config.mkdir()
    istiolite = IstioliteProcess([config], tmp_path)
    envoy = None
    try:
        envoy, url = _envoy(tmp_path, istiolite.xds_address)
        wait_for(lambda: http_get(url, timeout=1)[0] == 200, timeout=30, what="ready")
        assert "LIVE" in http_get(url, timeout=1)[1]
    finally:
        stop_all(envoy, istiolite)
