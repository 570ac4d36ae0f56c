"""A generated resource: its name, serialized bytes, and a version that is a hash of those bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, message


@dataclass(frozen=True)
class Resource:
    name: str
    type_url: str
    # Never in a repr: a Secret's payload holds a private key (and others are just large).
    payload: bytes = field(repr=False)
    version: str

    # Serialized once, shared by every proxy's response: a response is these bytes joined
    # (concatenated protobuf messages merge, so N one-resource messages make one N-resource one).
    @cached_property
    def sotw_entry(self) -> bytes:
        """This resource as one `resources` entry of a DiscoveryResponse."""
        response: message.Message = discovery_pb2.DiscoveryResponse(
            resources=[any_pb2.Any(type_url=self.type_url, value=self.payload)]
        )
        return response.SerializeToString()

    @cached_property
    def delta_entry(self) -> bytes:
        """This resource as one `resources` entry of a DeltaDiscoveryResponse."""
        response: message.Message = discovery_pb2.DeltaDiscoveryResponse(
            resources=[
                discovery_pb2.Resource(
                    name=self.name,
                    version=self.version,
                    resource=any_pb2.Any(type_url=self.type_url, value=self.payload),
                )
            ]
        )
        return response.SerializeToString()


def to_resource(name: str, type_url: str, msg: message.Message) -> Resource:
    # Deterministic serialization: the same config always hashes to the same version.
    payload = msg.SerializeToString(deterministic=True)
    version = hashlib.blake2b(payload, digest_size=8).hexdigest()
    return Resource(name=name, type_url=type_url, payload=payload, version=version)
