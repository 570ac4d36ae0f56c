"""bench.kube_informer at a small size, so it cannot rot: it runs end to end (the test API
server, `istiolite serve --kubeconfig`, a real Envoy) and reports every number. Never a timing
threshold: timings are the benchmark's output, read by people on a quiet machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.envoy]


def test_small_run_reports_every_number(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    argv = [
        sys.executable, "-m", "bench.kube_informer",
        "--services", "20", "--events", "500", "--writes", "2", "--json", str(report),
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"bench.kube_informer failed:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(report.read_text())
    for kind in ("Pod", "EndpointSlice"):
        events = result["events"][kind]
        assert events["store_changes"] == 500  # every event was a real change, applied
        assert events["push_full"] is False  # endpoints and pod labels stay EDS-only
    full = result["initial_sync"]["full"]
    assert full["objects"] == 20 * 14 and full["informer_sync_s"] is not None
    assert full["rss_ready_mib"] > 0
    assert result["slice_to_envoy"]["writes"] == 2
