"""gRPC server reflection (v1alpha and v1) and health on a running `istiolite serve`.

The client does what grpcurl does: list the services, fetch the file that declares each one (with
its dependencies), build a descriptor pool from those FileDescriptorProtos alone, resolve every
method's request type — and call a method with a message built only from reflection.

The v1 client is built from the upstream grpc/reflection/v1/reflection.proto (transcribed below),
not from anything istiolite derives, so it checks the v1 wire format independently.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, text_format
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from istiolite.xds import reflection
from tests.support import mesh
from tests.support.processes import IstioliteProcess

ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"
CSDS = "envoy.service.status.v3.ClientStatusDiscoveryService"
HEALTH = "grpc.health.v1.Health"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
EXPECTED_SERVICES = {ADS, CSDS, HEALTH, V1ALPHA, V1}

# (service, method) -> request type, as the methods that must resolve.
EXPECTED_INPUTS = {
    (ADS, "StreamAggregatedResources"): "envoy.service.discovery.v3.DiscoveryRequest",
    (ADS, "DeltaAggregatedResources"): "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    (CSDS, "StreamClientStatus"): "envoy.service.status.v3.ClientStatusRequest",
    (CSDS, "FetchClientStatus"): "envoy.service.status.v3.ClientStatusRequest",
    (HEALTH, "Check"): "grpc.health.v1.HealthCheckRequest",
    (HEALTH, "Watch"): "grpc.health.v1.HealthCheckRequest",
    (V1ALPHA, "ServerReflectionInfo"): "grpc.reflection.v1alpha.ServerReflectionRequest",
    (V1, "ServerReflectionInfo"): "grpc.reflection.v1.ServerReflectionRequest",
}

# grpc/reflection/v1/reflection.proto from grpc/grpc-proto, field for field (comments dropped).
UPSTREAM_V1 = """
name: "grpc/reflection/v1/reflection.proto"
package: "grpc.reflection.v1"
syntax: "proto3"
options {
  go_package: "google.golang.org/grpc/reflection/grpc_reflection_v1"
  java_multiple_files: true
  java_package: "io.grpc.reflection.v1"
  java_outer_classname: "ServerReflectionProto"
}
service {
  name: "ServerReflection"
  method {
    name: "ServerReflectionInfo"
    input_type: ".grpc.reflection.v1.ServerReflectionRequest"
    output_type: ".grpc.reflection.v1.ServerReflectionResponse"
    client_streaming: true
    server_streaming: true
  }
}
message_type {
  name: "ServerReflectionRequest"
  field { name: "host" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "file_by_filename" number: 3 label: LABEL_OPTIONAL type: TYPE_STRING
          oneof_index: 0 }
  field { name: "file_containing_symbol" number: 4 label: LABEL_OPTIONAL type: TYPE_STRING
          oneof_index: 0 }
  field { name: "file_containing_extension" number: 5 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.ExtensionRequest" oneof_index: 0 }
  field { name: "all_extension_numbers_of_type" number: 6 label: LABEL_OPTIONAL
          type: TYPE_STRING oneof_index: 0 }
  field { name: "list_services" number: 7 label: LABEL_OPTIONAL type: TYPE_STRING
          oneof_index: 0 }
  oneof_decl { name: "message_request" }
}
message_type {
  name: "ExtensionRequest"
  field { name: "containing_type" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "extension_number" number: 2 label: LABEL_OPTIONAL type: TYPE_INT32 }
}
message_type {
  name: "ServerReflectionResponse"
  field { name: "valid_host" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "original_request" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.ServerReflectionRequest" }
  field { name: "file_descriptor_response" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.FileDescriptorResponse" oneof_index: 0 }
  field { name: "all_extension_numbers_response" number: 5 label: LABEL_OPTIONAL
          type: TYPE_MESSAGE type_name: ".grpc.reflection.v1.ExtensionNumberResponse"
          oneof_index: 0 }
  field { name: "list_services_response" number: 6 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.ListServiceResponse" oneof_index: 0 }
  field { name: "error_response" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.ErrorResponse" oneof_index: 0 }
  oneof_decl { name: "message_response" }
}
message_type {
  name: "FileDescriptorResponse"
  field { name: "file_descriptor_proto" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "ExtensionNumberResponse"
  field { name: "base_type_name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "extension_number" number: 2 label: LABEL_REPEATED type: TYPE_INT32 }
}
message_type {
  name: "ListServiceResponse"
  field { name: "service" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".grpc.reflection.v1.ServiceResponse" }
}
message_type {
  name: "ServiceResponse"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type {
  name: "ErrorResponse"
  field { name: "error_code" number: 1 label: LABEL_OPTIONAL type: TYPE_INT32 }
  field { name: "error_message" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
}
"""


def upstream_v1() -> descriptor_pb2.FileDescriptorProto:
    return text_format.Parse(UPSTREAM_V1, descriptor_pb2.FileDescriptorProto())


def wire_shape(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    """Everything that decides the bytes on the wire and the method paths, package-relative."""
    pkg = f".{proto.package}."

    def rel(type_name: str) -> str:
        return type_name.removeprefix(pkg)

    messages = {
        m.name: sorted(
            (
                f.number,
                f.name,
                f.label,
                f.type,
                rel(f.type_name),
                m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
            )
            for f in m.field
        )
        for m in proto.message_type
    }
    services = {
        s.name: sorted(
            (m.name, rel(m.input_type), rel(m.output_type), m.client_streaming, m.server_streaming)
            for m in s.method
        )
        for s in proto.service
    }
    return {"messages": messages, "services": services, "enums": len(proto.enum_type)}


def v1alpha_proto() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    return proto


# -- the v1 definition, without a server ---------------------------------------------------------


def test_v1alpha_and_upstream_v1_are_the_same_wire_format() -> None:
    assert wire_shape(v1alpha_proto()) == wire_shape(upstream_v1())


def test_istiolite_v1_descriptor_is_upstream_v1() -> None:
    ours = reflection.v1_file_proto()
    theirs = upstream_v1()
    assert (ours.name, ours.package) == (theirs.name, theirs.package)
    assert wire_shape(ours) == wire_shape(theirs)
    assert not ours.options.deprecated
    assert ours.options.go_package == theirs.options.go_package
    assert ours.options.java_package == theirs.options.java_package


def test_v1_messages_decode_as_v1alpha_and_back() -> None:
    v1 = UpstreamV1()
    requests = [
        v1.Request(host="h", list_services=""),
        v1.Request(file_by_filename="a/b.proto"),
        v1.Request(file_containing_symbol="x.y.Z"),
        v1.Request(file_containing_extension={"containing_type": "x.Y", "extension_number": 7}),
        v1.Request(all_extension_numbers_of_type="x.Y"),
    ]
    for request in requests:
        data = request.SerializeToString()
        alpha = v1alpha_pb2.ServerReflectionRequest.FromString(data)
        assert alpha.WhichOneof("message_request") == request.WhichOneof("message_request")
        assert alpha.SerializeToString() == data
    response = v1alpha_pb2.ServerReflectionResponse(
        valid_host="h",
        original_request=v1alpha_pb2.ServerReflectionRequest(list_services="*"),
        list_services_response={"service": [{"name": ADS}, {"name": CSDS}]},
    )
    data = response.SerializeToString()
    decoded = v1.Response.FromString(data)
    assert [s.name for s in decoded.list_services_response.service] == [ADS, CSDS]
    assert decoded.SerializeToString() == data
    error = v1alpha_pb2.ServerReflectionResponse(
        error_response={"error_code": 5, "error_message": "not found"}
    )
    assert v1.Response.FromString(error.SerializeToString()).error_response.error_code == 5


# -- a grpcurl-like client -----------------------------------------------------------------------


class UpstreamV1:
    """Message classes generated from the upstream v1 definition in a private pool."""

    def __init__(self) -> None:
        pool = descriptor_pool.DescriptorPool()
        pool.Add(upstream_v1())
        self.Request = GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
        )
        self.Response = GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
        )


class ReflectionClient:
    """One reflection stream (as grpcurl keeps one), and the descriptor pool it builds."""

    def __init__(self, channel: grpc.Channel, version: str) -> None:
        if version == "v1":
            v1 = UpstreamV1()
            self._request_cls, response_cls = v1.Request, v1.Response
            service = V1
        else:
            self._request_cls = v1alpha_pb2.ServerReflectionRequest
            response_cls = v1alpha_pb2.ServerReflectionResponse
            service = V1ALPHA
        method = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        self._requests: queue.Queue[Any] = queue.Queue()
        self._call = method(self._iterate(), timeout=30)
        self.pool = descriptor_pool.DescriptorPool()
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self._added: set[str] = set()

    def _iterate(self) -> Iterator[Any]:
        while (item := self._requests.get()) is not None:
            yield item

    def ask(self, **fields: Any) -> Any:
        self._requests.put(self._request_cls(**fields))
        return next(self._call)

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()

    def list_services(self) -> list[str]:
        response = self.ask(list_services="")
        assert response.WhichOneof("message_response") == "list_services_response", response
        return [s.name for s in response.list_services_response.service]

    def _remember(self, response: Any) -> list[str]:
        kind = response.WhichOneof("message_response")
        assert kind == "file_descriptor_response", response
        names = []
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            self._files.setdefault(proto.name, proto)
            names.append(proto.name)
        return names

    def _add(self, name: str) -> None:
        """Add a file to the pool, its dependencies first, fetching any the server left out."""
        if name in self._added:
            return
        if name not in self._files:
            self._remember(self.ask(file_by_filename=name))
        proto = self._files[name]
        for dependency in proto.dependency:
            self._add(dependency)
        self.pool.Add(proto)
        self._added.add(name)

    def service(self, name: str) -> descriptor.ServiceDescriptor:
        files = self._remember(self.ask(file_containing_symbol=name))
        self._add(files[0])  # the file declaring the symbol comes first
        return self.pool.FindServiceByName(name)


@pytest.fixture(scope="module")
def istiolite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IstioliteProcess]:
    workdir = tmp_path_factory.mktemp("reflection")
    config = workdir / "config"
    config.mkdir()
    mesh.write(
        config / "web.yaml",
        mesh.service("web", "shop", 8080),
        mesh.endpoint_slice("web", "shop", 8080, ["127.0.0.9"]),
    )
    proc = IstioliteProcess([config], Path(workdir))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def channel(istiolite: IstioliteProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(istiolite.xds_address) as ch:
        yield ch


@pytest.fixture(params=["v1alpha", "v1"])
def client(request: pytest.FixtureRequest, channel: grpc.Channel) -> Iterator[ReflectionClient]:
    c = ReflectionClient(channel, request.param)
    try:
        yield c
    finally:
        c.close()


def test_lists_every_service(client: ReflectionClient) -> None:
    assert set(client.list_services()) == EXPECTED_SERVICES


def test_resolves_every_service_and_its_request_types(client: ReflectionClient) -> None:
    resolved: dict[tuple[str, str], str] = {}
    for name in client.list_services():
        service = client.service(name)
        assert service.full_name == name
        assert service.methods, name
        for method in service.methods:
            resolved[(name, method.name)] = method.input_type.full_name
            # Every request and response type is complete enough to build a message class.
            GetMessageClass(method.input_type)
            GetMessageClass(method.output_type)
    for key, input_type in EXPECTED_INPUTS.items():
        assert resolved.get(key) == input_type, key


def test_reflected_types_encode_like_the_real_ones(client: ReflectionClient) -> None:
    client.service(ADS)
    client.service(CSDS)
    dynamic = GetMessageClass(
        client.pool.FindMessageTypeByName("envoy.service.discovery.v3.DiscoveryRequest")
    )
    as_json = {
        "versionInfo": "1",
        "node": {"id": "sidecar~10.0.0.1~a.b~b.svc.cluster.local", "metadata": {"X": "y"}},
        "resourceNames": ["a", "b"],
        "typeUrl": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "errorDetail": {"code": 3, "message": "bad"},
    }
    built = json_format.ParseDict(as_json, dynamic())
    real = discovery_pb2.DiscoveryRequest.FromString(built.SerializeToString())
    assert json_format.MessageToDict(real) == as_json


def test_calls_a_method_from_reflection_alone(
    client: ReflectionClient, channel: grpc.Channel
) -> None:
    """What `grpcurl -d '{}' HOST envoy.service.status.v3.ClientStatusDiscoveryService/
    FetchClientStatus` does."""
    method = client.service(CSDS).methods_by_name["FetchClientStatus"]
    request_cls = GetMessageClass(method.input_type)
    response_cls = GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{CSDS}/FetchClientStatus",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )
    response = call(
        json_format.Parse('{"nodeMatchers": [{"nodeId": {"exact": "x"}}]}', request_cls()),
        timeout=10,
    )
    assert json_format.MessageToDict(response) == {}
    assert isinstance(
        csds_pb2.ClientStatusResponse.FromString(response.SerializeToString()),
        csds_pb2.ClientStatusResponse,
    )


def test_reflection_describes_itself_as_upstream_defines_it(client: ReflectionClient) -> None:
    for name in (V1ALPHA, V1):
        service = client.service(name)
        proto = descriptor_pb2.FileDescriptorProto()
        service.file.CopyToProto(proto)
        assert wire_shape(proto) == wire_shape(upstream_v1()), name
    assert client.service(V1).file.name == "grpc/reflection/v1/reflection.proto"


def test_unknown_symbol_is_not_found(client: ReflectionClient) -> None:
    response = client.ask(file_containing_symbol="no.such.Service")
    assert response.WhichOneof("message_response") == "error_response"
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert response.original_request.file_containing_symbol == "no.such.Service"


def test_file_by_filename_serves_dependencies(client: ReflectionClient) -> None:
    response = client.ask(file_by_filename="envoy/config/core/v3/base.proto")
    files = client._remember(response)
    assert files[0] == "envoy/config/core/v3/base.proto"
    assert "google/protobuf/struct.proto" in files


# -- health --------------------------------------------------------------------------------------


def test_health_check_is_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
