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
    """As Istio: UDP is UDP; else appProtocol when set, otherwise the port name, by prefix
    (`http-web` is HTTP). Anything unrecognised is sniffed (AUTO)."""
    if l4_protocol.upper() == "UDP":
        return Protocol.UDP
    label = (app_protocol or name).lower()
    if label in _BY_NAME:
        return _BY_NAME[label]  # the kubernetes.io/* names and exact matches
    # "grpc-web" is itself hyphenated, so check it as a prefix before cutting at the first
    # hyphen: "grpc-web-ui" is gRPC-Web, not gRPC.
    if label.startswith("grpc-web"):
        return Protocol.GRPC_WEB
    return _BY_NAME.get(label.split("-", 1)[0], Protocol.AUTO)
