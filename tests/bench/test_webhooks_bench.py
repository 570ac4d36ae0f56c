"""The webhook benchmark at a small size, so it cannot rot: it runs and reports both paths.
Never a timing threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_webhook_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.webhooks", "--requests", "50", "--concurrency", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["path"] for r in rows] == ["/validate", "/inject"]
    assert all(r["requests"] == 50 and r["req_per_s"] > 0 for r in rows)
