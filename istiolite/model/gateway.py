"""networking.istio.io Gateway: the servers (port, hosts, TLS) a gateway proxy listens with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.protocol import Protocol, protocol_for_port
from istiolite.model.server_tls import ServerTLS, parse_server_tls
from istiolite.model.validation import (
    ValidationError,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)

_SERVER_PROTOCOLS = (
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS",
)  # fmt: skip
# Server TLS modes that use the mesh CA: ISTIO_MUTUAL terminates with the gateway's own mesh
# certificate; AUTO_PASSTHROUGH routes mesh mTLS by its `outbound_.` SNI (east-west gateways).
MESH_CA_MODES = ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH")
_NAMESPACE = re.compile(r"^(\*|\.|~|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
_HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")


@dataclass(frozen=True, slots=True)
class Server:
    index: int  # position in spec.servers, for messages
    port: int
    port_name: str
    protocol: str  # as written, upper-cased: HTTP, HTTPS, TCP, TLS, ...
    # (namespace part, host) pairs; a bare host is ("*", host): any namespace may bind it.
    hosts: tuple[tuple[str, str], ...]
    bind: str = ""
    tls: ServerTLS | None = None
    name: str = ""

    @property
    def is_http(self) -> bool:
        return protocol_of(self).is_http

    @property
    def terminates_https(self) -> bool:
        return self.protocol == "HTTPS" and self.terminates_tls

    @property
    def terminates_tls(self) -> bool:
        """TLS ends here: with the server's credentials, or (ISTIO_MUTUAL) the mesh's."""
        return self.tls is not None and (self.tls.terminates or self.tls.mode == "ISTIO_MUTUAL")

    @property
    def needs_mesh_ca(self) -> bool:
        return self.tls is not None and self.tls.mode in MESH_CA_MODES


@dataclass(frozen=True, slots=True)
class Gateway:
    meta: ObjectMeta
    selector: dict[str, str]
    servers: tuple[Server, ...]
    # Only proxies of this namespace ("": any namespace, as istiod for Istio Gateways); set for
    # the Gateways the Gateway API's are converted into.
    proxy_namespace: str = ""

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"

    def selects(self, labels: dict[str, str], namespace: str | None = None) -> bool:
        if self.proxy_namespace and namespace is not None and namespace != self.proxy_namespace:
            return False
        return all(labels.get(k) == v for k, v in self.selector.items())

    def unapplied(self) -> list[tuple[str, str]]:
        """Valid settings this Gateway asks for that are not translated: none (fields unapplied
        whatever their value are listed by the schema, `ObjectMeta.unapplied`)."""
        return []


def _host(raw: Any, where: str, gateway_ns: str) -> tuple[str, str]:
    text = require_str(raw, where, required=True)
    ns, sep, host = text.rpartition("/")
    if not sep:
        ns = "*"
    if ns == ".":
        ns = gateway_ns
    if not _NAMESPACE.match(ns):
        raise ValidationError(where, f"namespace {ns!r} in {text!r} is not a namespace, '.' or '*'")
    host = host.lower()
    if not _HOST.match(host):
        raise ValidationError(where, f"host {host!r} is not a DNS name or a '*.' wildcard")
    return ns, host


def _server(raw: Any, i: int, gateway_ns: str) -> Server:
    where = f"spec.servers[{i}]"
    s = require_mapping(raw, where)
    port_raw = require_mapping(s.get("port"), f"{where}.port")
    if not port_raw:
        raise ValidationError(f"{where}.port", "is required")
    number = require_port(port_raw.get("number"), f"{where}.port.number")
    port_name = require_str(port_raw.get("name"), f"{where}.port.name", required=True)
    protocol = require_str(
        port_raw.get("protocol"), f"{where}.port.protocol", required=True
    ).upper()
    if protocol not in _SERVER_PROTOCOLS:
        raise ValidationError(
            f"{where}.port.protocol", f"{protocol!r} is not one of {', '.join(_SERVER_PROTOCOLS)}"
        )
    hosts_raw = require_list(s.get("hosts"), f"{where}.hosts")
    if not hosts_raw:
        raise ValidationError(f"{where}.hosts", "needs at least one host")
    hosts = tuple(_host(h, f"{where}.hosts[{j}]", gateway_ns) for j, h in enumerate(hosts_raw))
    tls = parse_server_tls(s.get("tls"), f"{where}.tls")
    if protocol in ("HTTPS", "TLS") and tls is None:
        raise ValidationError(f"{where}.tls", f"is required for protocol {protocol}")
    plain_http = protocol_for_port(protocol, "", "TCP").is_http
    if tls is not None and tls.mode != "PASSTHROUGH" and plain_http:
        raise ValidationError(
            f"{where}.tls.mode", f"TLS on a plain-text {protocol} server: use protocol HTTPS"
        )
    bind = require_str(s.get("bind"), f"{where}.bind")
    return Server(
        index=i,
        port=number,
        port_name=port_name,
        protocol=protocol,
        hosts=hosts,
        bind=bind,
        tls=tls,
        name=require_str(s.get("name"), f"{where}.name"),
    )


def parse_gateway(raw: dict[str, Any]) -> Gateway:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    servers_raw = require_list(spec.get("servers"), "spec.servers")
    if not servers_raw:
        raise ValidationError("spec.servers", "needs at least one server")
    servers = tuple(_server(s, i, meta.namespace) for i, s in enumerate(servers_raw))
    names: dict[str, int] = {}
    plain_ports: dict[int, int] = {}
    for server in servers:
        where = f"spec.servers[{server.index}].port"
        if server.port_name in names:
            raise ValidationError(
                f"{where}.name",
                f"{server.port_name!r} is already used by spec.servers[{names[server.port_name]}]",
            )
        names[server.port_name] = server.index
        # HTTP servers on one port share it (told apart by Host), TLS servers too (by SNI);
        # two plain TCP servers cannot.
        if server.tls is None and not server.is_http:
            if server.port in plain_ports:
                raise ValidationError(
                    f"{where}.number",
                    f"port {server.port} is already served by "
                    f"spec.servers[{plain_ports[server.port]}]",
                )
            plain_ports[server.port] = server.index
    return Gateway(
        meta=meta,
        selector=require_string_map(spec.get("selector"), "spec.selector"),
        servers=servers,
    )


def protocol_of(server: Server) -> Protocol:
    return protocol_for_port(server.protocol, "", "TCP")
