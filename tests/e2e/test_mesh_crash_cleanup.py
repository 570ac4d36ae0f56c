"""A mesh run killed outright (SIGKILL: no clean-up code runs) leaves nothing running, and the
next run removes what it left on disk: its network namespaces (with their veths and iptables
rules), /etc/netns entries and work directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from istiolite.demo.mesh.netns import ETC_NETNS_DIR, NETNS_DIR, PREFIX, reap_stale
from tests.e2e.conftest import require_e2e
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.e2e]

CRASHING_RUN = textwrap.dedent(
    """
    import json, sys, time
    from istiolite.demo.mesh.cluster import Mesh, PodSpec, ServiceSpec
    mesh = Mesh([ServiceSpec("web")], network="10.214").start()
    pod = mesh.add_pod(PodSpec("web-v1", "web", "web"))
    print(json.dumps({"pids": [mesh.istiolite.proc.pid, pod.envoy.proc.pid, pod.app.proc.pid],
                      "workdir": str(mesh.workdir)}), flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_a_killed_run_leaves_no_process_and_the_next_run_cleans_up() -> None:
    require_e2e()
    run = subprocess.Popen([sys.executable, "-c", CRASHING_RUN], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
        assert line, "the crashing run printed nothing (it failed to build its mesh)"
        made = json.loads(line)
        names = [f"{PREFIX}-{run.pid}-net", f"{PREFIX}-{run.pid}-web-v1"]
        assert all((NETNS_DIR / n).exists() for n in names)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    # Every child had a parent-death signal: istiolite, the sidecar (as the proxy user) and
    # the app are gone with the run.
    wait_for(lambda: not any(_alive(p) for p in made["pids"]), timeout=10, what="children gone")
    # What stays on disk until the next run: the namespaces, /etc/netns, the work directory.
    assert (NETNS_DIR / names[1]).exists() and Path(made["workdir"]).exists()
    removed = reap_stale()
    for name in names:
        assert str(NETNS_DIR / name) in removed
        assert not (NETNS_DIR / name).exists()
    assert not (ETC_NETNS_DIR / names[1]).exists()
    assert not Path(made["workdir"]).exists()
    # A live run's namespaces are never touched.
    assert not any(str(NETNS_DIR / f"{PREFIX}-{os.getpid()}-") in r for r in removed)
