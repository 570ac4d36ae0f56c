"""gRPC server reflection under both `grpc.reflection.v1alpha` and `grpc.reflection.v1`.

grpcio-reflection ships only v1alpha. The v1 protocol (grpc/reflection/v1/reflection.proto) is the
same file under another package: every message, field name, number, type, label and oneof is
identical, only the package and the file options (no `deprecated`, other go/java packages) differ.
So one servicer answers both services, with the v1alpha messages doing the (de)serialization.

For v1 clients to describe the v1 service itself (grpcurl `describe`), its file descriptor must be
in the descriptor pool that reflection answers from: it is derived from the v1alpha one and added
once, unless the pool already holds a v1 definition (a future grpcio-reflection may ship it).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES = (V1ALPHA_SERVICE, V1_SERVICE)

_V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
_METHOD = "ServerReflectionInfo"


def v1_file_proto() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, derived from the v1alpha descriptor.

    Only the package, the references to its own types and the file options change; the options
    are those of the upstream v1 file.
    """
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = V1_PACKAGE
    old_prefix, new_prefix = f".{_V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name[len(old_prefix) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type[len(old_prefix) :]
            method.output_type = new_prefix + method.output_type[len(old_prefix) :]
    proto.options.ClearField("deprecated")
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_package = "io.grpc.reflection.v1"
    return proto


def ensure_v1_descriptor(
    pool: descriptor_pool.DescriptorPool | None = None,
) -> descriptor.ServiceDescriptor:
    """The v1 ServerReflection service descriptor, adding its file to `pool` if missing."""
    if pool is None:
        pool = descriptor_pool.Default()
        # A grpcio-reflection that ships v1 registers it on import: let it come first, so its
        # definition is the one in the pool and importing it later cannot clash with ours.
        with contextlib.suppress(ImportError):
            importlib.import_module("grpc_reflection.v1.reflection_pb2")
    try:
        return pool.FindServiceByName(V1_SERVICE)
    except KeyError:
        pass
    pool.AddSerializedFile(v1_file_proto().SerializeToString())
    return pool.FindServiceByName(V1_SERVICE)


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection under v1alpha and v1, listing `service_names` plus both of its own."""
    ensure_v1_descriptor()
    names = sorted({*service_names, *SERVICE_NAMES})
    servicer = reflection.aio.ReflectionServicer(names)
    handlers = {
        _METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for service in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
