"""`python -m istiolite.demo --check` as root (CI runs it here): builds the bookinfo mesh on
network namespaces, verifies it, prints what it saw, tears it down and exits 0."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from istiolite.demo.mesh.netns import ETC_NETNS_DIR, NETNS_DIR
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


def _processes_with(text: str) -> list[str]:
    """Command lines of live processes that mention `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


def _left_by(pid: int) -> list[str]:
    prefix = f"ilmesh-{pid}-"
    left = [str(p) for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)]
    left += [str(p) for p in ETC_NETNS_DIR.glob(prefix + "*")]
    left += [str(p) for p in Path(tempfile.gettempdir()).glob(prefix + "*")]
    return left + _processes_with(prefix)


def test_ctrl_c_stops_the_running_demo_and_leaves_nothing() -> None:
    require_e2e()
    demo = subprocess.Popen(
        [sys.executable, "-m", "istiolite.demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "per service (from the sidecars' stats)" in line:
                break
        summary = [demo.stdout.readline() for _ in range(5)]
        assert any(line.startswith("  reviews ") and "rq/s" in line for line in summary), "".join(
            lines + summary
        )
        assert "cp " in "".join(lines) and "reviews-canary.yaml" in "".join(lines)
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, err
    assert "torn down: nothing left" in out
    assert _left_by(demo.pid) == []


def test_a_demo_failing_during_set_up_cleans_up() -> None:
    require_e2e()
    run = subprocess.run(
        [sys.executable, "-m", "istiolite.demo", "--check", "--config-dir", "/nonexistent-dir"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "istiolite exited with code 2" in run.stderr
    assert "--config-dir /nonexistent-dir: not a directory" in run.stderr
    assert not [p for p in NETNS_DIR.iterdir() if p.name.startswith("ilmesh-") and
                not Path(f"/proc/{p.name.split('-')[1]}").exists()]  # fmt: skip
