"""networking.istio.io Sidecar: what a workload's proxy may reach (egress listeners), which ports
it serves and where they lead (ingress listeners), and what happens to traffic for anything else
(outboundTrafficPolicy). Validated field by field as Istio's `ValidateSidecar` does.

Translated: `egress[]` (`hosts`, `port`, `bind`, `captureMode`), `ingress[]` (`port`, `bind`,
`captureMode`, `defaultEndpoint`, `connectionPool`, `tls` with certificate files), the top-level
`inboundConnectionPool`, `outboundTrafficPolicy.mode`. Accepted and validated but not applied
(listed by `Sidecar.unapplied()`): egress listeners on unix domain sockets or with protocol
HTTP_PROXY, `outboundTrafficPolicy.egressProxy`, ingress `tls.mode: PASSTHROUGH`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from istiolite.model.destinationrule import ConnectionPool
from istiolite.model.destinationrule import _connection_pool as parse_connection_pool
from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.protocol import Protocol, protocol_for_port
from istiolite.model.schema import SERVER_TLS
from istiolite.model.server_tls import ServerTLS, parse_server_tls
from istiolite.model.validation import (
    ValidationError,
    optional_bool,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)

ROOT_NAMESPACE = "istio-system"  # a Sidecar here without a selector is the mesh-wide default
UNIX_PREFIX = "unix://"
CAPTURE_MODES = ("DEFAULT", "IPTABLES", "NONE")
# Istio's protocol names (protocol.Parse), upper-cased; "" means sniffed.
PROTOCOLS = frozenset(
    {"TCP", "UDP", "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TLS"}
    | {"MONGO", "REDIS", "MYSQL"}
)
HTTP_PROXY = "HTTP_PROXY"
# Ingress `tls` is Istio's ServerTLSSettings, as a Gateway server's, with istiod's limits for
# sidecars: no ISTIO_MUTUAL or AUTO_PASSTHROUGH, certificates from files only, and these fields
# refused (istiod's words).
IngressTLS = ServerTLS
INGRESS_TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
_INGRESS_TLS_UNSUPPORTED = {
    "subjectAltNames": "is not supported in ingress tls",
    "httpsRedirect": "is not supported",
    "credentialName": "is not currently supported",
    "credentialNames": "is not currently supported",
    "tlsCertificates": "is not currently supported",
}
# defaultEndpoint hosts Istio accepts: loopback or "the pod IP", v4 or v6, or none.
_ENDPOINT_HOSTS = ("", "127.0.0.1", "0.0.0.0", "::1", "::")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?$")


@dataclass(frozen=True, slots=True)
class SidecarPort:
    number: int  # 0: a unix domain socket (egress only)
    protocol: str  # as written, upper-cased; "" = sniffed
    name: str = ""

    @property
    def app_protocol(self) -> Protocol:
        """The port's protocol in istiolite's terms (HTTP_PROXY counts as HTTP)."""
        if not self.protocol:
            return Protocol.AUTO
        if self.protocol == HTTP_PROXY:
            return Protocol.HTTP
        return protocol_for_port(self.protocol.lower(), "", "TCP")


@dataclass(frozen=True, slots=True)
class IngressListener:
    port: SidecarPort
    bind: str = ""  # "" = the proxy's own IP (else 0.0.0.0)
    capture_mode: str = "DEFAULT"
    # "127.0.0.1:<port>", "0.0.0.0:<port>" (the pod IP), "[::1]:<port>", "[::]:<port>",
    # "unix://<path>", or "" (to wherever the connection was going).
    default_endpoint: str = ""
    tls: IngressTLS | None = None
    connection_pool: ConnectionPool | None = None


@dataclass(frozen=True, slots=True)
class EgressListener:
    # (namespace part, host part) of every host, e.g. (".", "*") or ("*", "*.example.com").
    hosts: tuple[tuple[str, str], ...]
    port: SidecarPort | None = None  # None: the catch-all listener (every other port)
    bind: str = ""  # an IP, or unix://<path> with port 0
    capture_mode: str = "DEFAULT"

    def imports(self, service_namespace: str, hostname: str, config_namespace: str) -> bool:
        """As istiod: hosts naming the service's namespace decide; only when none does, the
        `*/...` hosts do. `.` is the proxy's (config) namespace, `~` matches nothing."""
        specific = [
            host
            for ns, host in self.hosts
            if (config_namespace if ns == "." else ns) == service_namespace
        ]
        candidates = specific or [host for ns, host in self.hosts if ns == "*"]
        return any(host_matches(hostname, pattern) for pattern in candidates)


@dataclass(frozen=True, slots=True)
class Sidecar:
    meta: ObjectMeta
    workload_selector: dict[str, str]
    egress: tuple[EgressListener, ...] = ()
    outbound_mode: str = ""  # ALLOW_ANY | REGISTRY_ONLY | "" (the mesh default, ALLOW_ANY)
    ingress: tuple[IngressListener, ...] = ()
    inbound_connection_pool: ConnectionPool | None = None
    egress_proxy: bool = False  # outboundTrafficPolicy.egressProxy given (not applied)

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def egress_hosts(self) -> tuple[tuple[str, str], ...]:
        return tuple(h for listener in self.egress for h in listener.hosts)

    def selects(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.workload_selector.items())

    def allows(self, service_namespace: str, hostname: str, config_namespace: str = "") -> bool:
        """Whether some egress listener imports the service (no egress: everything)."""
        if not self.egress:
            return True
        ns = config_namespace or self.namespace
        return any(e.imports(service_namespace, hostname, ns) for e in self.egress)

    def inbound_pool_for(self, port: int) -> ConnectionPool | None:
        """The connection pool for an inbound port: the ingress listener's own, else the
        top-level inboundConnectionPool (istiod's InboundConnectionPoolForPort)."""
        for listener in self.ingress:
            if listener.port.number == port and listener.connection_pool is not None:
                return listener.connection_pool
        return self.inbound_connection_pool

    def unapplied(self) -> list[tuple[str, str]]:
        """(field, message) for settings that are accepted but have no effect yet."""
        out = []
        for i, e in enumerate(self.egress):
            if e.port is not None and e.port.number == 0:
                out.append(
                    (
                        f"spec.egress[{i}].bind",
                        "unix domain socket listeners are accepted but not applied yet",
                    )
                )
            elif e.port is not None and e.port.protocol == HTTP_PROXY:
                out.append(
                    (
                        f"spec.egress[{i}].port.protocol",
                        "HTTP_PROXY listeners are accepted but not applied yet",
                    )
                )
        for i, listener in enumerate(self.ingress):
            pool = listener.connection_pool
            if pool is not None and pool.http is not None and not _http_port(listener.port):
                out.append(
                    (
                        f"spec.ingress[{i}].connectionPool.http",
                        f"port {listener.port.number} is not HTTP: only the tcp settings apply",
                    )
                )
            if listener.tls is not None and not listener.tls.terminates:
                out.append(
                    (
                        f"spec.ingress[{i}].tls.mode",
                        f"{listener.tls.mode} is accepted but not applied: the connection "
                        "reaches the workload as it came",
                    )
                )
        if self.egress_proxy:
            out.append(
                (
                    "spec.outboundTrafficPolicy.egressProxy",
                    "is accepted but not applied yet: unknown hosts go to their original "
                    "destination",
                )
            )
        return out


def _http_port(port: SidecarPort) -> bool:
    # HTTPS terminated by the sidecar is HTTP inside, but Istio warns on the written protocol.
    return port.app_protocol.is_http


def host_matches(hostname: str, pattern: str) -> bool:
    """Istio's SubsetOf: `*` matches all; `*.example.com` matches names (and wildcards) under
    it; anything else only itself."""
    if pattern == "*" or pattern == hostname:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return hostname.endswith(suffix) and (
            not hostname.startswith("*") or len(hostname) - 1 >= len(suffix)
        )
    return False


# --- validation ---------------------------------------------------------------------------------


def _known(m: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in m:
        if key not in allowed:
            raise ValidationError(f"{where}.{key}", "unknown field")


def _ip(value: str, where: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError(where, f"{value!r} is not an IP address") from None
    return value


def _unix_path(path: str, where: str) -> None:
    # Istio's ValidateUnixAddress: an absolute path, at most 103 bytes (sun_path).
    if not path.startswith("/"):
        raise ValidationError(where, f"unix domain socket {path!r} must be an absolute path")
    if len(path) > 103:
        raise ValidationError(where, "unix domain socket path is longer than 103 characters")


def _capture_mode(raw: Any, where: str) -> str:
    mode = require_str(raw, where) or "DEFAULT"
    if mode not in CAPTURE_MODES:
        raise ValidationError(where, f"{mode!r} is not one of {', '.join(CAPTURE_MODES)}")
    return mode


def _port(raw: Any, where: str, *, allow_socket: bool = False) -> SidecarPort:
    p = require_mapping(raw, where)
    _known(p, where, {"number", "protocol", "name", "targetPort"})
    if p.get("targetPort"):
        raise ValidationError(f"{where}.targetPort", "has no impact on Sidecars")
    name = require_str(p.get("name"), f"{where}.name")
    if name and not _DNS_LABEL.match(name):
        raise ValidationError(f"{where}.name", f"invalid port name {name!r}")
    protocol = require_str(p.get("protocol"), f"{where}.protocol").upper()
    if protocol and protocol not in PROTOCOLS:
        raise ValidationError(f"{where}.protocol", f"{protocol!r} is not a valid protocol")
    number = p.get("number")
    if allow_socket and not number and not isinstance(number, bool):
        return SidecarPort(0, protocol, name)  # proto3: no number is 0, a socket listener
    if number is None:
        raise ValidationError(f"{where}.number", "is required")
    return SidecarPort(require_port(number, f"{where}.number"), protocol, name)


def _default_endpoint(raw: Any, where: str) -> str:
    text = require_str(raw, where)
    if not text:
        return ""
    if text.startswith(UNIX_PREFIX):
        _unix_path(text[len(UNIX_PREFIX) :], where)
        return text
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValidationError(where, f"{text!r} is not <host>:<port> or unix://<path>")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValidationError(where, f"{text!r}: an IPv6 address needs brackets, [::1]:<port>")
    if host not in _ENDPOINT_HOSTS:
        raise ValidationError(
            where,
            "must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, "
            "unix://<path> or unset",
        )
    if not port.isdigit():
        raise ValidationError(where, f"port {port!r} is not a number")
    require_port(int(port), where)
    return text


def _ingress_tls(raw: Any, where: str, port: SidecarPort) -> IngressTLS | None:
    """The Sidecar's own rules first, then the ServerTLSSettings parser a Gateway uses."""
    if raw is None:
        return None
    t = require_mapping(raw, where)
    for key, message in _INGRESS_TLS_UNSUPPORTED.items():
        if t.get(key):
            raise ValidationError(f"{where}.{key}", message)
    optional_bool(t.get("httpsRedirect"), f"{where}.httpsRedirect")
    _known(t, where, set(SERVER_TLS.fields))
    mode = require_str(t.get("mode"), f"{where}.mode") or "PASSTHROUGH"
    if mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
        raise ValidationError(f"{where}.mode", f"cannot be {mode} in sidecar ingress tls")
    if mode not in INGRESS_TLS_MODES:
        raise ValidationError(
            f"{where}.mode", f"{mode!r} is not one of {', '.join(INGRESS_TLS_MODES)}"
        )
    if port.protocol not in ("HTTPS", "TLS"):
        raise ValidationError(where, "TLS settings need an HTTPS or TLS port")
    # Left out: the refused fields (empty if still here) and TLS_AUTO, the enum's zero value, as
    # good as unset (no version pinned, none to compare).
    settings = {
        key: value
        for key, value in t.items()
        if key not in _INGRESS_TLS_UNSUPPORTED
        and not (key.endswith("ProtocolVersion") and value == "TLS_AUTO")
    }
    return parse_server_tls(settings, where, secrets=False)


def _ingress(raw: Any, where: str) -> IngressListener:
    i = require_mapping(raw, where)
    _known(
        i,
        where,
        {"port", "bind", "captureMode", "defaultEndpoint", "tls", "connectionPool"},
    )
    if i.get("port") is None:
        raise ValidationError(f"{where}.port", "is required for ingress listeners")
    port = _port(i["port"], f"{where}.port")
    bind = require_str(i.get("bind"), f"{where}.bind")
    if bind:
        _ip(bind, f"{where}.bind")
    return IngressListener(
        port=port,
        bind=bind,
        capture_mode=_capture_mode(i.get("captureMode"), f"{where}.captureMode"),
        default_endpoint=_default_endpoint(i.get("defaultEndpoint"), f"{where}.defaultEndpoint"),
        tls=_ingress_tls(i.get("tls"), f"{where}.tls", port),
        connection_pool=parse_connection_pool(i.get("connectionPool"), f"{where}.connectionPool"),
    )


def _egress_host(raw: Any, where: str) -> tuple[str, str]:
    """Istio's ValidateNamespaceSlashWildcardHostname for sidecars."""
    text = require_str(raw, where, required=True)
    ns, sep, host = text.partition("/")
    if not sep:
        raise ValidationError(where, f"{text!r} is not <namespace>/<host>")
    if not ns or not host:
        raise ValidationError(where, f"{text!r}: namespace and host cannot be empty")
    if ns not in ("*", ".", "~") and not _DNS_LABEL.match(ns):
        raise ValidationError(where, f"invalid namespace {ns!r}")
    if host != "*":
        name = host[2:] if host.startswith("*.") else host
        labels = name.split(".")
        if (
            len(host) > 255
            or not name
            or any(len(label) > 63 or not _HOST_LABEL.match(label) for label in labels)
        ):
            raise ValidationError(where, f"{host!r} is not a valid host (DNS name, '*.' first)")
    return ns, host


def _egress(raw: Any, where: str) -> EgressListener:
    e = require_mapping(raw, where)
    _known(e, where, {"port", "bind", "captureMode", "hosts"})
    port = None
    if e.get("port") is not None:
        port = _port(e["port"], f"{where}.port", allow_socket=True)
    bind = require_str(e.get("bind"), f"{where}.bind")
    capture = _capture_mode(e.get("captureMode"), f"{where}.captureMode")
    if port is not None and port.number == 0:
        if not bind.startswith(UNIX_PREFIX):
            raise ValidationError(
                f"{where}.bind", "a port numbered 0 needs a unix domain socket (unix://<path>)"
            )
        _unix_path(bind[len(UNIX_PREFIX) :], f"{where}.bind")
        if capture not in ("DEFAULT", "NONE"):
            raise ValidationError(
                f"{where}.captureMode", "must be DEFAULT or NONE for unix domain socket listeners"
            )
    elif bind:
        _ip(bind, f"{where}.bind")
    entries = require_list(e.get("hosts"), f"{where}.hosts")
    if not entries:
        raise ValidationError(f"{where}.hosts", "at least one host is required")
    hosts = tuple(_egress_host(h, f"{where}.hosts[{j}]") for j, h in enumerate(entries))
    return EgressListener(hosts=hosts, port=port, bind=bind, capture_mode=capture)


def _claim_port(seen: set[int], number: int, where: str, kind: str) -> None:
    if number in seen:
        raise ValidationError(
            where, f"port {number} is used twice: ports of {kind} listeners must be unique"
        )
    seen.add(number)


def _selector(spec: dict[str, Any]) -> dict[str, str]:
    if spec.get("workloadSelector") is None:
        return {}
    selector = require_mapping(spec["workloadSelector"], "spec.workloadSelector")
    labels = require_string_map(selector.get("labels"), "spec.workloadSelector.labels")
    for key, value in labels.items():
        where = f"spec.workloadSelector.labels.{key}"
        if not key:
            raise ValidationError(where, "an empty key is not supported in a selector")
        if "*" in key or "*" in value:
            raise ValidationError(where, "wildcards are not supported in a selector")
    return labels


def parse_sidecar(raw: dict[str, Any]) -> Sidecar:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    _known(
        spec,
        "spec",
        {"workloadSelector", "ingress", "egress", "outboundTrafficPolicy", "inboundConnectionPool"},
    )
    labels = _selector(spec)
    raw_ingress = require_list(spec.get("ingress"), "spec.ingress")
    raw_egress = require_list(spec.get("egress"), "spec.egress")
    if not (
        raw_ingress
        or raw_egress
        or spec.get("outboundTrafficPolicy") is not None
        or spec.get("inboundConnectionPool") is not None
    ):
        raise ValidationError("spec", "empty configuration provided")

    ingress: list[IngressListener] = []
    seen_ports: set[int] = set()
    for i, item in enumerate(raw_ingress):
        listener = _ingress(item, f"spec.ingress[{i}]")
        _claim_port(seen_ports, listener.port.number, f"spec.ingress[{i}].port.number", "ingress")
        ingress.append(listener)
    inbound_pool = parse_connection_pool(
        spec.get("inboundConnectionPool"), "spec.inboundConnectionPool"
    )

    egress: list[EgressListener] = []
    seen_ports = set()
    seen_sockets: set[str] = set()
    for i, item in enumerate(raw_egress):
        where = f"spec.egress[{i}]"
        egress_listener = _egress(item, where)
        if egress_listener.port is None:
            # At most one catch-all listener, and it comes last: its hosts apply to every port
            # the listeners before it do not claim.
            if any(e.port is None for e in egress):
                raise ValidationError(
                    f"{where}.port", "egress can have only one listener without a port"
                )
            if i != len(raw_egress) - 1:
                raise ValidationError(
                    f"{where}.port", "the egress listener without a port must be the last one"
                )
        elif egress_listener.port.number == 0:
            if egress_listener.bind in seen_sockets:
                raise ValidationError(
                    f"{where}.bind", "unix domain socket values for listeners must be unique"
                )
            seen_sockets.add(egress_listener.bind)
        else:
            _claim_port(seen_ports, egress_listener.port.number, f"{where}.port.number", "egress")
        egress.append(egress_listener)

    policy = require_mapping(spec.get("outboundTrafficPolicy"), "spec.outboundTrafficPolicy")
    _known(policy, "spec.outboundTrafficPolicy", {"mode", "egressProxy"})
    mode = require_str(policy.get("mode"), "spec.outboundTrafficPolicy.mode")
    if mode not in ("", "ALLOW_ANY", "REGISTRY_ONLY"):
        raise ValidationError(
            "spec.outboundTrafficPolicy.mode", "must be ALLOW_ANY or REGISTRY_ONLY"
        )
    egress_proxy = policy.get("egressProxy") is not None
    if egress_proxy:
        where = "spec.outboundTrafficPolicy.egressProxy"
        if mode != "ALLOW_ANY":
            raise ValidationError(where, "can only be set with mode ALLOW_ANY")
        proxy = require_mapping(policy["egressProxy"], where)
        require_str(proxy.get("host"), f"{where}.host", required=True)
        port = require_mapping(proxy.get("port"), f"{where}.port")
        if not port:
            raise ValidationError(f"{where}.port", "is required")
        require_port(port.get("number"), f"{where}.port.number")
    return Sidecar(
        meta=meta,
        workload_selector=labels,
        egress=tuple(egress),
        outbound_mode=mode,
        ingress=tuple(ingress),
        inbound_connection_pool=inbound_pool,
        egress_proxy=egress_proxy,
    )
