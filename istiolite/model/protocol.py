"""Application protocol of a service port, decided the way Istio does."""

from __future__ import annotations

from enum import StrEnum


class Protocol(StrEnum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "Mongo"
    MYSQL = "MySQL"
    REDIS = "Redis"
    UDP = "UDP"
    # Unnamed port: Envoy sniffs HTTP vs. TCP on the connection (Istio's "auto").
    AUTO = "Auto"

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC)


_BY_NAME = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "h2c": Protocol.HTTP2,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC_WEB,
    "https": Protocol.HTTPS,
    "tls": Protocol.TLS,
    "tcp": Protocol.TCP,
    "mongo": Protocol.MONGO,
    "mysql": Protocol.MYSQL,
    "redis": Protocol.REDIS,
    "udp": Protocol.UDP,
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
}


def protocol_for_port(name: str, app_protocol: str, l4_protocol: str) -> Protocol:
    """appProtocol wins, then the port-name prefix (`http-web`), then the L4 protocol."""
    if l4_protocol.upper() == "UDP":
        return Protocol.UDP
    if app_protocol:
        found = _BY_NAME.get(app_protocol.lower())
        if found is not None:
            return found
    prefix = name.lower().split("-", 1)[0]
    # "grpc-web" is itself hyphenated, so try the whole name first.
    found = _BY_NAME.get(name.lower()) if name.lower() == "grpc-web" else _BY_NAME.get(prefix)
    if found is not None:
        return found
    return Protocol.AUTO
