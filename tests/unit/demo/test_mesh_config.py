"""The config the demo mesh writes for its pods (no root needed: no namespace is made): it is
what a user would write, it validates, and it follows the pods; the example files the demo tells
users to try validate against it without a finding."""

from __future__ import annotations

from pathlib import Path

import yaml

from istiolite.demo.mesh import bookinfo
from istiolite.demo.mesh.cluster import Mesh, Pod
from istiolite.demo.mesh.netns import Netns
from istiolite.validate import check_files


def _mesh(tmp_path: Path, names: list[str]) -> Mesh:
    mesh = Mesh(bookinfo.SERVICES, workdir=tmp_path)
    mesh.config_dir.mkdir()
    for i, spec in enumerate(s for s in bookinfo.PODS if s.name in names):
        ip = f"10.213.0.{10 + i}"
        mesh.pods[spec.name] = Pod(spec, ip, Netns(f"unused-{spec.name}"), tmp_path)
    return mesh


def _objects(path: Path) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(path.read_text())}


def test_services_pods_and_endpoint_slices_follow_the_pods(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, ["reviews-v1", "reviews-v2", "ratings-v1", "legacy"])
    objects = _objects(mesh.write_config())
    assert objects[("Service", "reviews")]["spec"]["clusterIP"] == mesh.cluster_ip("reviews")
    slice_ = objects[("EndpointSlice", "reviews-mesh")]
    assert [e["targetRef"]["name"] for e in slice_["endpoints"]] == ["reviews-v1", "reviews-v2"]
    assert objects[("EndpointSlice", "details-mesh")]["endpoints"] == []
    v2 = objects[("Pod", "reviews-v2")]
    assert v2["metadata"]["labels"] == {
        "app": "reviews", "version": "v2", "security.istio.io/tlsMode": "istio",
    }  # fmt: skip
    assert v2["spec"]["serviceAccountName"] == "bookinfo-reviews"
    # A pod without a sidecar is not marked for mutual TLS.
    assert "security.istio.io/tlsMode" not in objects[("Pod", "legacy")]["metadata"]["labels"]
    del mesh.pods["reviews-v1"]
    slice_ = _objects(mesh.write_config())[("EndpointSlice", "reviews-mesh")]
    assert [e["targetRef"]["name"] for e in slice_["endpoints"]] == ["reviews-v2"]


def test_the_mesh_config_and_the_examples_validate_cleanly(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, [s.name for s in bookinfo.PODS])
    files = [mesh.write_config(), *sorted(bookinfo.EXAMPLES.glob("*.yaml"))]
    assert len(files) == 5
    assert [str(f) for f in check_files(files)] == []


def test_every_pod_resolves_every_service_name_to_its_cluster_ip(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, ["sleep"])
    entries = dict((ip, names) for ip, names in mesh._hosts("10.213.0.10", "sleep"))
    assert entries["10.213.0.10"] == ["sleep"]
    assert entries[mesh.cluster_ip("ratings")] == [
        "ratings", "ratings.bookinfo", "ratings.bookinfo.svc",
        "ratings.bookinfo.svc.cluster.local",
    ]  # fmt: skip
    assert len({mesh.cluster_ip(s.name) for s in bookinfo.SERVICES}) == len(bookinfo.SERVICES)
