"""A Kubernetes Service whose selector also picks a WorkloadEntry, through a real Envoy: the Pod
(EndpointSlice) and the VM (WorkloadEntry) both take traffic, and removing the WorkloadEntry file
takes the VM out of Envoy's endpoints with an EDS-only push and no failed request."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
import yaml

from istiolite.demo.echo import EchoServer
from tests.support.net import free_port, loopback_ip
from tests.support.processes import http_get, start_sidecar_mesh, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

HOST = "web.default.svc.cluster.local"


def _get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    return resp.status, json.loads(body)["server"] if resp.status == 200 else body


def _mesh(port: int, target: int, pod_ip: str) -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "clusterIP": "10.96.0.50",
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": port, "targetPort": target}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": target, "protocol": "TCP"}],
            "endpoints": [{"addresses": [pod_ip], "conditions": {"ready": True}}],
        },
    ]


def _workload_entry(ip: str, port: int) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "vm-1", "namespace": "default"},
        "spec": {"address": ip, "ports": {"http": port}, "labels": {"app": "web"}},
    }


class _Load:
    """Requests in a loop on a thread until stopped; counts answers by server and failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, server = _get(self.port)
            except OSError as err:
                self.failures.append(repr(err))
                continue
            if status == 200:
                self.seen[server] += 1
            else:
                self.failures.append(f"{status}: {server}")

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_service_selects_workload_entry_and_drops_it_without_failures(tmp_path: Path) -> None:
    port, target, vm_target = free_port(), free_port(), free_port()
    pod_ip, vm_ip = loopback_ip(), loopback_ip()
    servers = [
        EchoServer(pod_ip, target, "pod").start(),
        # The VM listens on another port: the entry's `ports` maps the service port there.
        EchoServer(vm_ip, vm_target, "vm").start(),
    ]
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(yaml.safe_dump_all(_mesh(port, target, pod_ip)))
    vm_file = config / "vm.yaml"
    vm_file.write_text(yaml.safe_dump(_workload_entry(vm_ip, vm_target)))
    cluster = f"outbound|{port}||{HOST}"
    cp = envoy = None
    try:
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace="default", delta=True)
        wait_for(
            lambda: (
                envoy.cluster_endpoints(cluster)
                == sorted([f"{pod_ip}:{target}", f"{vm_ip}:{vm_target}"])
            ),
            what="pod and VM endpoints in Envoy",
        )
        wait_for(lambda: _get(port)[0] == 200, what="service routable")
        assert {_get(port)[1] for _ in range(30)} == {"pod", "vm"}

        with _Load(port) as load:
            wait_for(lambda: load.seen["vm"] > 0 and load.seen["pod"] > 0, what="load on both")
            vm_file.unlink()
            wait_for(
                lambda: envoy.cluster_endpoints(cluster) == [f"{pod_ip}:{target}"],
                what="VM endpoint removed",
            )
            before = load.seen["pod"]
            wait_for(lambda: load.seen["pod"] > before + 20, what="traffic after removal")
        assert load.failures == []
        assert {_get(port)[1] for _ in range(20)} == {"pod"}

        # An EDS-only push: no cluster or listener was re-sent for it.
        _, body = http_get(f"http://127.0.0.1:{cp.http_port}/debug/push_status")
        status = json.loads(body)
        assert status["full"] is False and status["reason"] == ["WorkloadEntry"]
        assert status["eds_clusters"] == [cluster]
        dump = envoy.config_dump()
        assert "error_state" not in json.dumps(dump)
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()
