"""App probes rewritten to pilot-agent's status port, as Istio's injector does.

With mutual TLS the kubelet's plain HTTP (or TCP) probe would hit the sidecar's inbound listener
and fail; so the injected pod's probes ask pilot-agent on 15020 at
`/app-health/<container>/readyz|livez|startupz`, and pilot-agent, told the original probes in the
`ISTIO_KUBE_APP_PROBERS` environment variable (JSON, path → probe), runs them against the app.
Exec probes need no rewrite; a probe whose named port no container declares is left alone (the
kubelet would fail it the same way with or without the sidecar).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

STATUS_PORT = 15020
APP_PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
# probe field → the path suffix pilot-agent serves for it
_PROBES = (("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz"))
_HANDLERS = ("httpGet", "tcpSocket", "grpc")


@dataclass(slots=True)
class RewrittenProbes:
    containers: list[dict[str, Any]]  # the app containers, probes rewritten
    probers: dict[str, dict[str, Any]] = field(default_factory=dict)  # path → original probe

    @property
    def changed(self) -> bool:
        return bool(self.probers)


def _port_number(port: Any, container: dict[str, Any]) -> int | None:
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            if isinstance(declared, dict) and declared.get("name") == port:
                number = declared.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def _original(probe: dict[str, Any], container: dict[str, Any]) -> dict[str, Any] | None:
    """What pilot-agent should run instead (named ports resolved), or None to leave it."""
    handler = next((h for h in _HANDLERS if isinstance(probe.get(h), dict)), None)
    if handler is None:
        return None
    action = copy.deepcopy(probe[handler])
    port = _port_number(action.get("port"), container)
    if port is None:
        return None
    action["port"] = port
    if handler == "httpGet":
        action.setdefault("path", "/")
        action.setdefault("scheme", "HTTP")
    out: dict[str, Any] = {handler: action}
    out["timeoutSeconds"] = probe.get("timeoutSeconds", 1)
    return out


def rewrite_probes(containers: list[dict[str, Any]]) -> RewrittenProbes:
    """The app containers with their HTTP/TCP/gRPC probes pointed at pilot-agent."""
    result = RewrittenProbes(containers=[])
    for container in containers:
        container = copy.deepcopy(container)
        name = container.get("name")
        for probe_field, suffix in _PROBES:
            probe = container.get(probe_field)
            if not isinstance(probe, dict) or not isinstance(name, str):
                continue
            original = _original(probe, container)
            if original is None:
                continue
            path = f"/app-health/{name}/{suffix}"
            result.probers[path] = original
            rewritten = {k: v for k, v in probe.items() if k not in _HANDLERS}
            rewritten["httpGet"] = {"path": path, "port": STATUS_PORT, "scheme": "HTTP"}
            container[probe_field] = rewritten
        result.containers.append(container)
    return result
