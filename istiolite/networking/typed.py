"""Packing typed extension configs into Any, the way every Envoy filter config travels."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf import any_pb2, duration_pb2, message, wrappers_pb2

TYPE_PREFIX = "type.googleapis.com/"


def pack(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    # Deterministic: a map inside (RBAC policies, metadata) must serialize the same way every
    # time, or the resource's version hash changes with no change in content.
    packed.Pack(msg, type_url_prefix="type.googleapis.com/", deterministic=True)
    return packed


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def uint32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def bool_value(value: bool) -> wrappers_pb2.BoolValue:
    return wrappers_pb2.BoolValue(value=value)


def socket_address(ip: str, port: int) -> address_pb2.Address:
    """An IP and port; a `unix://<path>` endpoint (ServiceEntry, WorkloadEntry) is a socket
    file, or with `@` an abstract socket, and has no port."""
    if ip.startswith("unix://"):
        return address_pb2.Address(pipe=address_pb2.Pipe(path=ip[len("unix://") :]))
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def ads_config_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )
