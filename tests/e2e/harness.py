"""Whole-mesh scenarios on network namespaces: a "cluster network" with istiolite and plain
upstreams, and "pods" whose Envoy sidecar intercepts their traffic with istio-init's iptables.

    namespace iltest-<pid>-net  (the network outside the pods)
        br0 10.200.0.2/24  istiolite (xDS 15010, HTTP 8080) = the pods' default gateway
            + any upstream address a test adds (10.200.0.50, ...)
        veth-<pod> ─┐ (bridge port)
                    │
    namespace iltest-<pid>-<pod>
        eth0 10.200.0.N/24, default route via 10.200.0.2
        nat: istio-init's rules (outbound TCP → 15001, inbound TCP → 15006, uid/gid 1337 exempt)
        Envoy as uid/gid 1337: bootstrap from `istiolite bootstrap`, INTERCEPTION_MODE=REDIRECT
        the app = the test process itself, as root, entering the namespace per call

All addresses live in namespaces the test created; the host's network is never touched.
"""

from __future__ import annotations

import json
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from istiolite.demo.echo import EchoServer
from istiolite.demo.mesh.cluster import HttpResult, http_request, proxy_identity_argv
from istiolite.demo.mesh.netns import (
    Netns,
    istio_iptables_rules,
    veth,
    which,
)
from tests.support.processes import Process, envoy_binary
from tests.support.wait import wait_for

NETWORK = "10.200.0"
GATEWAY_IP = f"{NETWORK}.2"  # the network namespace's bridge: istiolite listens here
PREFIX_LEN = 24
XDS_PORT = 15010
DEBUG_PORT = 8080
MONITORING_PORT = 15014
ENVOY_ADMIN_PORT = 15000


# --- plain clients, run inside a namespace with Netns.call ---------------------------------------


@dataclass
class TcpResult:
    """What a client saw of a greeter/echo upstream: the bytes, and how the exchange ended —
    "ok" (greeting and echo), "eof" (closed by the peer), "reset" or "timeout"."""

    data: bytes
    outcome: str


def tcp_exchange(ip: str, port: int, line: bytes = b"ping\n", timeout: float = 5.0) -> TcpResult:
    """Connect, read the server's greeting line, send `line`, read its echo."""
    data = b""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            for expected_lines, send in ((1, None), (2, line)):
                if send is not None:
                    sock.sendall(send)
                while data.count(b"\n") < expected_lines:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return TcpResult(data, "eof")
                    data += chunk
    except ConnectionResetError:
        return TcpResult(data, "reset")
    except TimeoutError:
        return TcpResult(data, "timeout")
    return TcpResult(data, "ok")


class GreeterEcho:
    """A TCP upstream that speaks first ("hello from NAME") and then echoes lines prefixed by
    its name; counts connections. Bind it inside a namespace with Netns.call."""

    def __init__(self, host: str, port: int, name: str) -> None:
        self.name = name
        self.connections = 0
        self.peers: list[str] = []  # client address of each connection
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 10

            def handle(self) -> None:
                with owner._lock:
                    owner.connections += 1
                    owner.peers.append(str(self.client_address[0]))
                self.wfile.write(f"hello from {owner.name}\n".encode())
                for _ in range(100):
                    line = self.rfile.readline(1024)
                    if not line:
                        return
                    self.wfile.write(owner.name.encode() + b": " + line)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> GreeterEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- processes inside namespaces -------------------------------------------------------------


class NetnsIstiolite(Process):
    """`istiolite serve` on the network namespace's gateway address."""

    def __init__(self, ns: Netns, config_dirs: list[Path], workdir: Path) -> None:
        self.ns = ns
        # Killed with the test process even if that dies without cleaning up (SIGKILL).
        argv = [which("setpriv") or "setpriv", "--pdeathsig=KILL"]
        argv += [sys.executable, "-m", "istiolite.cli", "serve"]
        for d in config_dirs:
            argv += ["--config-dir", str(d)]
        argv += [
            "--grpc-addr", f"{GATEWAY_IP}:{XDS_PORT}",
            "--http-addr", f"{GATEWAY_IP}:{DEBUG_PORT}",
            "--monitoring-addr", f"{GATEWAY_IP}:{MONITORING_PORT}",
            "--secure-grpc-addr", f"{GATEWAY_IP}:0",
            "--webhook-addr", f"{GATEWAY_IP}:0",
            "--debounce-after", "0.05",
        ]  # fmt: skip
        super().__init__(ns.argv(*argv), workdir / "istiolite.log")
        try:
            wait_for(self._ready, timeout=30, what="istiolite /ready")
        except BaseException:
            self.stop()
            raise

    @property
    def xds_address(self) -> str:
        return f"{GATEWAY_IP}:{XDS_PORT}"

    def get(self, path: str) -> HttpResult:
        return self.ns.call(http_request, GATEWAY_IP, DEBUG_PORT, None, path)

    def _ready(self) -> bool:
        if not self.alive():
            raise AssertionError(f"istiolite exited:\n{self.log()}")
        return self.get("/ready").status == 200


class SidecarEnvoy(Process):
    """Envoy in a pod namespace as the proxy user, with a REDIRECT-mode sidecar bootstrap."""

    def __init__(
        self,
        ns: Netns,
        bootstrap_dir: Path,
        log_path: Path,
        xds_address: str,
        node_id: str,
        *,
        namespace: str,
        pod_ip: str,
        labels: dict[str, str],
        identity: list[str],
    ) -> None:
        self.ns = ns
        self.node_id = node_id
        bootstrap = bootstrap_dir / "envoy.json"
        argv = [
            sys.executable, "-m", "istiolite.cli", "bootstrap",
            "--node-id", node_id,
            "--xds-address", xds_address,
            "--delta",
            "--admin-address", f"127.0.0.1:{ENVOY_ADMIN_PORT}",
            "--meta", f"NAMESPACE={namespace}",
            "--meta", "INTERCEPTION_MODE=REDIRECT",
            "--meta", f"INSTANCE_IPS={pod_ip}",
            "--meta", "SERVICE_ACCOUNT=default",
            "-o", str(bootstrap),
        ]  # fmt: skip
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        bootstrap.chmod(0o644)  # readable by the proxy user
        envoy_argv = [
            *identity, "--pdeathsig=KILL", envoy_binary(), "-c", str(bootstrap),
            "--disable-hot-restart", "--concurrency", "2",
            "-l", "warning", "--drain-time-s", "1",
        ]  # fmt: skip
        super().__init__(ns.argv(*envoy_argv), log_path)
        try:
            wait_for(self._live, timeout=30, what="envoy admin")
        except BaseException:
            self.stop()
            raise

    def admin(self, path: str) -> HttpResult:
        return self.ns.call(http_request, "127.0.0.1", ENVOY_ADMIN_PORT, None, path)

    def ids(self) -> tuple[int, int]:
        """The running Envoy's effective (uid, gid), as iptables' owner match sees them."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        fields = {line.split(":", 1)[0]: line.split()[1:] for line in status}
        return int(fields["Uid"][1]), int(fields["Gid"][1])

    def _live(self) -> bool:
        if not self.alive():
            raise AssertionError(f"envoy exited:\n{self.log()}")
        return self.admin("/ready").status == 200

    def stats(self) -> Counter[str]:
        """Counters and gauges by name (a missing stat reads as 0)."""
        out: Counter[str] = Counter()
        for stat in json.loads(self.admin("/stats?format=json").body)["stats"]:
            if isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    def config_dump(self, resource: str) -> list[dict[str, Any]]:
        return json.loads(self.admin(f"/config_dump?resource={resource}").body).get("configs", [])

    def synced(self) -> bool:
        s = self.stats()
        return (
            s["cluster_manager.cds.update_success"] > 0
            and s["listener_manager.lds.update_success"] > 0
            and s["cluster_manager.warming_clusters"] == 0
            and s["listener_manager.total_listeners_warming"] == 0
        )


# --- the scenario --------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    namespace: str
    ip: str
    ns: Netns
    envoy: SidecarEnvoy

    def http(self, ip: str, port: int, host: str | None = None, path: str = "/") -> HttpResult:
        """An HTTP request made by the app (root, inside the pod): iptables sends it to Envoy."""
        return self.ns.call(http_request, ip, port, host, path)

    def tcp(self, ip: str, port: int) -> TcpResult:
        return self.ns.call(tcp_exchange, ip, port)


@dataclass
class MeshNetwork:
    """The network namespace with istiolite, the upstreams, and the pods wired to it."""

    ns: Netns
    workdir: Path
    config_dir: Path
    stack: ExitStack
    istiolite: NetnsIstiolite | None = None
    pods: dict[str, Pod] = field(default_factory=dict)
    _identity: list[str] | None = None

    @classmethod
    def create(cls, stack: ExitStack, workdir: Path) -> MeshNetwork:
        """Set everything up on `stack`, which undoes it all (in reverse) when closed."""
        ns = Netns.unique("net")
        stack.callback(ns.delete)
        ns.create()
        ns.ip("link", "add", "br0", "type", "bridge")
        ns.ip("addr", "add", f"{GATEWAY_IP}/{PREFIX_LEN}", "dev", "br0")
        ns.ip("link", "set", "br0", "up")
        config_dir = workdir / "config"
        config_dir.mkdir()
        return cls(ns, workdir, config_dir, stack)

    def start_istiolite(self) -> NetnsIstiolite:
        self.istiolite = NetnsIstiolite(self.ns, [self.config_dir], self.workdir)
        self.stack.callback(self.istiolite.stop)
        return self.istiolite

    def add_address(self, ip: str) -> None:
        """Another address of the network (an upstream outside the pods)."""
        self.ns.ip("addr", "add", f"{ip}/32", "dev", "br0")

    def http_upstream(self, ip: str, port: int, name: str) -> EchoServer:
        server = self.ns.call(EchoServer, ip, port, name).start()
        self.stack.callback(server.stop)
        return server

    def tcp_upstream(self, ip: str, port: int, name: str) -> GreeterEcho:
        server = self.ns.call(GreeterEcho, ip, port, name).start()
        self.stack.callback(server.stop)
        return server

    def add_pod(
        self,
        name: str,
        ip: str,
        *,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
    ) -> Pod:
        """A pod namespace wired to the bridge, with istio-init's iptables and a synced Envoy.
        Call it from the thread that runs the tests: the Envoy gets SIGKILL when the thread that
        started it ends (so a test process killed outright leaves no proxy behind)."""
        assert self.istiolite is not None, "start istiolite first"
        ns = Netns.unique(name)
        self.stack.callback(ns.delete)
        ns.create()
        veth(ns, "eth0", self.ns, f"veth-{name}"[:15])
        self.ns.ip("link", "set", f"veth-{name}"[:15], "master", "br0")
        ns.ip("addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0")
        ns.ip("route", "add", "default", "via", GATEWAY_IP)
        ns.iptables_restore(istio_iptables_rules())
        # Envoy's bootstrap: in a directory the proxy user can read, removed with the rest.
        envoy_dir = Path(tempfile.mkdtemp(prefix=f"{Netns.unique(name).name}-"))
        self.stack.callback(shutil.rmtree, envoy_dir, True)
        envoy_dir.chmod(0o755)
        if self._identity is None:
            self._identity = proxy_identity_argv(envoy_binary())
        envoy = SidecarEnvoy(
            ns,
            envoy_dir,
            self.workdir / f"envoy-{name}.log",
            self.istiolite.xds_address,
            f"sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local",
            namespace=namespace,
            pod_ip=ip,
            labels=labels or {"app": name},
            identity=self._identity,
        )
        self.stack.callback(envoy.stop)
        wait_for(envoy.synced, timeout=30, what=f"envoy of {name} synced")
        pod = Pod(name, namespace, ip, ns, envoy)
        self.pods[name] = pod
        return pod
