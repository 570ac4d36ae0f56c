"""`istiolite validate`: errors name file, line, object and field and fail; warnings do not."""

from __future__ import annotations

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
