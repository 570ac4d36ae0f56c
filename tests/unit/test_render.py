"""`istiolite render --mesh-config FILE`: the offline config follows the mesh config as serve
applies it (outboundTrafficPolicy as the sidecars' default, trustDomain in the SPIFFE IDs the
clusters verify; --trust-domain wins over the file), and an unusable file is refused by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from istiolite.render import render

CASE = Path(__file__).parents[1] / "golden" / "cases" / "peer_authentication"
NODE = "sidecar~10.1.0.9~client-0.shop~shop.svc.cluster.local"
META: dict[str, object] = {"NAMESPACE": "shop", "ISTIOLITE_MESH_MTLS": "true"}


def _spiffe_ids(rendered: str) -> set[str]:
    return set(re.findall(r'"(spiffe://[^"]+)"', rendered))


def _mesh(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mesh"
    path.write_text(text)
    return path


def _render(mesh: Path | None = None, trust_domain: str = "") -> str:
    return render(
        [CASE / "config"],
        NODE,
        META,
        "cluster.local",
        mesh_config=mesh,
        trust_domain=trust_domain,
    )


def test_the_mesh_configs_trust_domain_is_in_the_identities_clusters_verify(
    tmp_path: Path,
) -> None:
    assert _spiffe_ids(_render()) == {
        "spiffe://cluster.local/ns/shop/sa/db",
        "spiffe://cluster.local/ns/shop/sa/web",
        "spiffe://cluster.local/ns/shop/sa/web-legacy",
    }
    mesh = _mesh(tmp_path, "trustDomain: example.org\n")
    assert _spiffe_ids(_render(mesh)) == {
        "spiffe://example.org/ns/shop/sa/db",
        "spiffe://example.org/ns/shop/sa/web",
        "spiffe://example.org/ns/shop/sa/web-legacy",
    }
    assert _spiffe_ids(_render(mesh, trust_domain="flag.example")) == {
        "spiffe://flag.example/ns/shop/sa/db",
        "spiffe://flag.example/ns/shop/sa/web",
        "spiffe://flag.example/ns/shop/sa/web-legacy",
    }


def test_registry_only_from_the_mesh_config_blackholes_unknown_destinations(
    tmp_path: Path,
) -> None:
    assert "BlackHoleCluster" not in _passthrough_target(_render())
    mesh = _mesh(tmp_path, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")
    assert _passthrough_target(_render(mesh)) == "BlackHoleCluster"


def _passthrough_target(rendered: str) -> str:
    """The cluster of virtualOutbound's catch-all chain (traffic to unknown hosts)."""
    dump = json.loads(rendered)
    for config in dump["configs"]:
        for listener in config.get("dynamic_listeners", []):
            active = listener["active_state"]["listener"]
            if active["name"] == "virtualOutbound":
                (chain,) = [
                    c
                    for c in active["filter_chains"]
                    if c.get("name") == "virtualOutbound-catchall-tcp"
                ]
                return str(chain["filters"][-1]["typed_config"]["cluster"])
    raise AssertionError("no virtualOutbound listener")


def test_an_unusable_mesh_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, "outboundTrafficPolicy:\n  mode: DENY\n")
    # A process of its own: render configures logging for the whole interpreter.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "istiolite.cli",
            "render",
            "--config-dir",
            str(CASE / "config"),
            "--node-id",
            NODE,
            "--mesh-config",
            str(mesh),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert f"mesh config {mesh}: outboundTrafficPolicy.mode" in run.stderr
