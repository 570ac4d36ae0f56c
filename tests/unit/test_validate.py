"""`istiolite validate`: errors name file, line, object and field and fail; warnings do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from istiolite.cli import main

ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"""

BROKEN = """\
apiVersion: v1
kind: Service
metadata: {name: ok, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: bad, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -1
"""


def test_missing_subset_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:1: warning: VirtualService shop/reviews:" in out
    assert "spec.http[0].route[0].destination.subset" in out


def test_defined_subset_gives_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "rule.yaml").write_text(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\n"
        "metadata: {name: reviews, namespace: shop}\n"
        "spec: {host: reviews, subsets: [{name: v3, labels: {version: v3}}]}\n"
    )
    assert main(["validate", str(tmp_path / "routes.yaml"), str(tmp_path / "rule.yaml")]) == 0
    assert "warning" not in capsys.readouterr().out


def test_invalid_object_fails_with_its_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(BROKEN)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:15: error: VirtualService shop/bad: spec.http[0].route[0].weight:" in err
    assert "1 error(s) in 1 file(s)" in err


def test_unparsable_file_fails_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: [unclosed\n")
    assert main(["validate", str(path)]) == 1
    assert f"{path}:" in capsys.readouterr().err


UNAPPLIED = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries: {attempts: 3, retryRemoteLocalities: true}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mesh-gw, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
"""


def test_unapplied_fields_are_warnings_naming_object_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "unapplied.yaml"
    path.write_text(UNAPPLIED)
    assert main(["validate", str(path)]) == 0  # valid Istio: warnings only
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines() == [
        f"{path}:1: warning: VirtualService shop/reviews: "
        "spec.http[0].retries.retryRemoteLocalities: accepted but not applied yet",
        # (The Gateway's AUTO_PASSTHROUGH server is translated: no warning.)
    ]


def test_demo_examples_set_nothing_unapplied(capsys: pytest.CaptureFixture[str]) -> None:
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"
    assert main(["validate", *map(str, sorted(demo.glob("*.yaml")))]) == 0
    out = capsys.readouterr().out
    # (The gateway's Secret is made when the demo starts: that warning is expected here.)
    assert "not applied" not in out
    assert "ignored by istiolite" not in out


MIXED = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: shop}
spec: {configPatches: []}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
"""


def test_json_output_has_one_entry_per_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed, broken = tmp_path / "a-mixed.yaml", tmp_path / "b-broken.yaml"
    mixed.write_text(MIXED)
    broken.write_text(BROKEN)
    assert main(["validate", "-o", "json", str(mixed), str(broken)]) == 1
    entries = json.loads(capsys.readouterr().out)
    assert [(e["file"], e["line"], e["kind"], e["name"], e["status"]) for e in entries] == [
        (str(mixed), 1, "VirtualService", "reviews", "ok"),
        (str(mixed), 10, "EnvoyFilter", "lua", "unsupported"),
        (str(mixed), 15, "Deployment", "web", "ok"),  # not istiolite's to judge
        (str(broken), 1, "Service", "ok", "ok"),
        (str(broken), 7, "VirtualService", "bad", "invalid"),
    ]
    vs, envoy_filter, _, service, bad = entries
    assert vs["apiVersion"] == "networking.istio.io/v1" and vs["namespace"] == "shop"
    # A warning is a message of an `ok` object.
    (warning,) = vs["messages"]
    assert warning.startswith("spec.http[0].route[0].destination.subset: ")
    assert envoy_filter["messages"][0].startswith("not supported by istiolite: EnvoyFilter")
    assert service["messages"] == [] and service["namespace"] == "shop"
    assert bad["messages"][0].startswith("spec.http[0].route[0].weight: ")


def test_json_output_exits_0_without_invalid_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mixed.yaml").write_text(MIXED)
    assert main(["validate", "-o", "json", str(tmp_path)]) == 0
    assert [e["status"] for e in json.loads(capsys.readouterr().out)] == [
        "ok",
        "unsupported",
        "ok",
    ]


def test_unparsable_file_is_one_invalid_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: [unclosed\n")
    assert main(["validate", "-o", "json", str(path)]) == 1
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["file"] == str(path) and entry["status"] == "invalid"
    assert entry["line"] == 3 and entry["messages"]


def test_unsupported_kinds_are_printed_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{path}:10: unsupported: EnvoyFilter shop/lua: not supported by istiolite: EnvoyFilter"
        in out
    )


def test_duplicates_follow_serve_rule_and_name_both_places(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: reviews, namespace: shop}\n"
        "spec: {host: reviews, subsets: [{name: %s, labels: {version: %s}}]}\n"
    )
    (tmp_path / "routes.yaml").write_text(ROUTES)
    # b.yaml sorts last: its rule (with subset v3) is the one used, so no subset warning.
    (tmp_path / "a.yaml").write_text(rule % ("v1", "v1"))
    (tmp_path / "b.yaml").write_text(rule % ("v3", "v3"))
    # Named twice (alone and in its directory): still one definition.
    assert main(["validate", str(tmp_path / "b.yaml"), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "subset" not in out
    assert out.count("is also defined") == 1
    assert (
        f"{tmp_path / 'a.yaml'}:1: warning: DestinationRule shop/reviews: DestinationRule "
        f"shop/reviews is also defined at {tmp_path / 'b.yaml'}:1, which is used" in out
    )


def test_validate_of_a_directory_reads_its_config_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yml").write_text(BROKEN)
    (tmp_path / ".hidden.yaml").write_text(BROKEN)
    (tmp_path / "notes.txt").write_text("not config")
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'sub' / 'bad.yml'}:15: error:" in err
    assert ".hidden" not in err


def test_a_mesh_config_serve_would_refuse_fails_validate_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes, mesh = tmp_path / "routes.yaml", tmp_path / "mesh"
    routes.write_text(ROUTES)
    mesh.write_text("outboundTrafficPolicy:\n  mode: DENY\n")
    assert main(["validate", "--mesh-config", str(mesh), str(routes)]) == 1
    err = capsys.readouterr().err
    assert f"{mesh}: error: mesh config {mesh}: outboundTrafficPolicy.mode" in err


def test_a_good_mesh_config_is_an_ok_entry_with_its_unapplied_fields_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh = tmp_path / "mesh"
    mesh.write_text("trustDomain: example.org\nenableTracing: true\n")
    (tmp_path / "routes.yaml").write_text(ROUTES)
    assert main(["validate", "-o", "json", "--mesh-config", str(mesh), str(tmp_path)]) == 0
    first, routes = json.loads(capsys.readouterr().out)
    assert (first["file"], first["kind"], first["status"]) == (str(mesh), "MeshConfig", "ok")
    assert first["messages"] == ["mesh config: enableTracing: accepted, not applied by istiolite"]
    assert routes["kind"] == "VirtualService"
