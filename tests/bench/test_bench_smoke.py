"""The scale benchmark at a small size, so it cannot rot: it runs, every simulated proxy converges
in every scenario, and the table has every row. Never a timing threshold (timings are the
benchmark's output, read by people on a quiet machine, not asserted on a shared CI runner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scale import Config, row_labels

ROOT = Path(__file__).resolve().parents[2]
PROXIES = 20

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    report = out / "report.json"
    argv = [
        sys.executable, "-m", "bench.scale", "--small", "--mode", "both",
        "--json", str(report), "--results-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=110)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the benchmark then stops istiolite and its workers by PID.
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate(timeout=10)
        pytest.fail(f"bench.scale --small did not finish in 110 s:\n{stdout}\n{stderr}")
    assert proc.returncode == 0, f"bench.scale failed:\n{stdout}\n{stderr}"
    return stdout, json.loads(report.read_text())


def _mode(report: dict[str, Any], mode: str) -> dict[str, Any]:
    found = [r for r in report["results"] if r["mode"] == mode]
    assert found, f"no {mode} results"
    return found[0]


def test_small_run_reports_both_modes(run: tuple[str, dict[str, Any]]) -> None:
    _stdout, report = run
    assert report["config"]["proxies"] == PROXIES
    assert [r["mode"] for r in report["results"]] == ["sotw", "delta"]
    for result in report["results"]:
        assert result["istiolite_alive"], f"{result['mode']}: istiolite died under load"


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_connect_storm_converges(run: tuple[str, dict[str, Any]], mode: str) -> None:
    storm = _mode(run[1], mode)["storm"]
    assert storm["errors"] == [], storm["errors"]
    assert storm["converged"] == PROXIES
    for kind in ("CDS", "EDS", "LDS", "RDS", "done"):
        assert storm["latency_s"][kind]["n"] == PROXIES, kind
    assert storm["eds_per_proxy"] > 0 and storm["routes_per_proxy"] > 0


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_endpoint_churn_reaches_every_subscribed_proxy(
    run: tuple[str, dict[str, Any]], mode: str
) -> None:
    churn = _mode(run[1], mode)["churn"]
    for r in churn["rounds"]:
        assert r["subscribed"] == PROXIES, r
        assert r["got_eds"] == r["subscribed"], r
        assert r["types"]["EDS"]["proxies"] == PROXIES, r["types"]
    assert "EDS" in churn["responses_by_type"]


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_service_add_reaches_every_proxy(run: tuple[str, dict[str, Any]], mode: str) -> None:
    add = _mode(run[1], mode)["add"]
    for r in add["rounds"]:
        assert r["got_cds"] == PROXIES, r
        assert r["got_eds"] == PROXIES, r
    assert add["captured_messages"] > 0


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_raw_send_and_resources_measured(run: tuple[str, dict[str, Any]], mode: str) -> None:
    result = _mode(run[1], mode)
    raw = result["raw"]
    assert raw["received_all"] == PROXIES, raw
    assert raw["push_max_s"] > 0
    assert result["ratio_max"] > 0
    assert result["memory_mb"]["VmHWM"] > 0
    assert result["churn"]["istiolite_cpu_per_push_s"] >= 0
    assert result["add"]["istiolite_cpu_per_push_s"] >= 0


def test_table_has_every_row(run: tuple[str, dict[str, Any]]) -> None:
    stdout, report = run
    labels = row_labels(Config())
    assert len(labels) >= 15
    for label in labels:
        assert f"| {label} |" in stdout, f"row missing from the printed table: {label}"
        assert f"| {label} |" in report["table"], label
    header = next(line for line in stdout.splitlines() if line.startswith("|  |"))
    assert "SotW" in header and "Delta" in header and "target" in header
