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
