"""`make demo` works: the bundled example mesh through a real Envoy, as the README promises; on
ports and addresses of the test's own (so a `make demo` may run beside it), and it leaves nothing
behind however it stops."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from istiolite.demo.__main__ import READY
from istiolite.demo.layout import OPTIONS
from tests.support.net import free_port, free_ports, loopback_block


def demo_argv(workdir: Path, *extra: str) -> list[str]:
    """The demo on free ports, its upstreams on loopback addresses of this test process."""
    base = loopback_block(3)[0]
    argv = [sys.executable, "-m", "istiolite.demo", "--workdir", str(workdir), *extra]
    argv += ["--upstream-base", base, "--upstream-port", str(free_port(base))]
    flags = [o.flag for n, o in OPTIONS.items() if n not in ("upstream_base", "upstream_port")]
    flags = [flag for flag in flags if flag not in extra]
    for flag, port in zip(flags, free_ports(len(flags)), strict=True):
        argv += [flag, str(port)]
    return argv


@pytest.mark.parametrize("variant", [[], ["--delta"]], ids=["sotw", "delta"])
@pytest.mark.envoy
@pytest.mark.slow
def test_demo_check_reaches_every_example_upstream(variant: list[str], tmp_path: Path) -> None:
    argv = demo_argv(tmp_path / "work", "--check", *variant)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello.demo served by: ['hello-1', 'hello-2']" in result.stdout
    assert "world.demo served by: world-1" in result.stdout
    both = "['hello-1', 'hello-2']"
    assert f"gateway HTTP: {both}; gateway HTTPS: {both}" in result.stdout
    assert not (tmp_path / "work").exists()


@pytest.mark.envoy
@pytest.mark.slow
def test_demo_without_root_says_so_and_checks_the_loopback_demo() -> None:
    """Without the privileges (not root, or, as in CI, root stripped of every capability) the
    network-namespace mesh is out of reach: the demo says why and runs (here: checks) the
    loopback demo."""
    unprivileged: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        unprivileged = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
    with tempfile.TemporaryDirectory() as parent:
        argv = demo_argv(Path(parent) / "work", "--check")
        result = subprocess.run([*unprivileged, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the network-namespace mesh cannot run here (" in result.stderr
    assert "running the loopback demo" in result.stderr
    assert "hello.demo served by: ['hello-1', 'hello-2']" in result.stdout


def children_of(pid: int | None) -> dict[int, str]:
    """pid -> command line of each process whose parent is pid (of every process: None)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pid is None or int(stat.rpartition(")")[2].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def using(workdir: Path) -> list[str]:
    """Command lines of the processes still running with a file of workdir."""
    return [cmd for pid, cmd in children_of(None).items() if str(workdir) in cmd and alive(pid)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class RunningDemo:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        assert self.proc.stdout is not None
        out = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in out], daemon=True).start()

    def wait_ready(self, timeout: float = 60) -> dict[int, str]:
        """Waits for the banner; returns the demo's child processes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.stdout.append(line)
            if line.strip() == READY:
                return children_of(self.proc.pid)
        self.proc.kill()
        pytest.fail(f"the demo did not start:\n{''.join(self.stdout)}\n{self.stderr()}")

    def finish(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.envoy
@pytest.mark.slow
def test_demo_stopped_by_a_signal_leaves_nothing_behind(signum: int, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    demo = RunningDemo(demo_argv(workdir))
    children = demo.wait_ready()
    assert len(children) == 3, children  # istiolite and two Envoys
    assert f"CA certificate: {workdir}/demo-ca.crt" in "".join(demo.stdout)
    secret = workdir / "secrets" / "demo-cert.yaml"
    assert secret.stat().st_mode & 0o777 == 0o600  # holds the gateway's private key
    assert workdir.stat().st_mode & 0o777 == 0o700

    demo.proc.send_signal(signum)
    assert demo.finish() == 0, demo.stderr()
    assert not workdir.exists()
    assert not [pid for pid in children if alive(pid)], children
    assert not using(workdir)


@pytest.mark.envoy
@pytest.mark.slow
def test_demo_whose_child_crashes_says_so_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    demo = RunningDemo(demo_argv(workdir))
    children = demo.wait_ready()
    gateway = next(pid for pid, cmd in children.items() if "gateway.json" in cmd)
    os.kill(gateway, signal.SIGKILL)

    assert demo.finish() == 1
    err = demo.stderr()
    assert f"gateway exited with code {-signal.SIGKILL} while the demo was running" in err
    assert not workdir.exists()
    assert not [pid for pid in children if alive(pid)], children
    assert not using(workdir)


def test_demo_failing_during_start_up_cleans_up(tmp_path: Path) -> None:
    """An Envoy that dies at start (here a stand-in that exits 3): the demo says which, shows its
    log, and stops istiolite and removes the work directory."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "envoy").write_text("#!/bin/sh\necho 'fake envoy: cannot start'\nexit 3\n")
    (fake / "envoy").chmod(0o755)
    workdir = tmp_path / "work"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    demo = RunningDemo(demo_argv(workdir), env=env)

    assert demo.finish(timeout=60) == 1
    err = demo.stderr()
    assert "exited with code 3 while waiting for envoy" in err
    assert "fake envoy: cannot start" in err
    assert not workdir.exists()
    assert not using(workdir)


def test_demo_names_the_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = demo_argv(tmp_path / "work", "--grpc-port", str(port))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "already in use" in result.stderr
    assert f"127.0.0.1:{port}   istiolite's xDS (gRPC) port (--grpc-port)" in result.stderr
    assert "make demo DEMO_ARGS='--grpc-port " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work").exists()
