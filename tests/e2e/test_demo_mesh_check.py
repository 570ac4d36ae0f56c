"""`python -m istiolite.demo --check` as root (CI runs it here): builds the bookinfo mesh on
network namespaces, verifies it, prints what it saw, tears it down and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from istiolite.demo.mesh.netns import NETNS_DIR
from tests.e2e.conftest import require_e2e

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.e2e]


def test_demo_check_builds_verifies_and_tears_down_the_mesh() -> None:
    require_e2e()
    run = subprocess.Popen(
        [sys.executable, "-m", "istiolite.demo", "--check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, out + err
    assert "PROBLEM" not in out
    # Every pod is a namespace of its own, the legacy pod without a sidecar.
    pods = re.findall(
        r"^  (\S+)\s+(10\.213\.0\.\d+)\s+netns (\S+) \(inode (\d+)\), (.*)$", out, re.M
    )
    assert {p[0] for p in pods} == {
        "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3",
        "productpage-v1", "sleep", "legacy",
    }  # fmt: skip
    assert len({p[3] for p in pods}) == len(pods)  # distinct namespaces
    assert dict((p[0], p[4]) for p in pods)["legacy"] == "no sidecar"
    for service, caller in (("productpage", "sleep"), ("ratings", "bookinfo-reviews")):
        assert re.search(
            rf"^  {service}\s+← spiffe://cluster.local/ns/bookinfo/sa/{caller}$", out, re.M
        ), out
    assert "STRICT mTLS: the pod without a sidecar is refused" in out
    assert "torn down: nothing left" in out
    assert not [p for p in NETNS_DIR.iterdir() if p.name.startswith(f"ilmesh-{run.pid}-")]
