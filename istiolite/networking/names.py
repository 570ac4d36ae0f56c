"""Envoy resource names, as istiod spells them."""

from __future__ import annotations

from enum import StrEnum

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND_PORT = 15001
VIRTUAL_INBOUND_PORT = 15006
# Istio's inbound traffic leaves Envoy from this address so iptables can tell it apart.
INBOUND_PASSTHROUGH_BIND_IP = "127.0.0.6"


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


def cluster_name(direction: Direction, port: int, subset: str = "", host: str = "") -> str:
    return f"{direction}|{port}|{subset}|{host}"


def listener_name(address: str, port: int) -> str:
    return f"{address}_{port}"


def route_name(port: int) -> str:
    return str(port)
