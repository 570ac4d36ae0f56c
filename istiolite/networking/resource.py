"""A generated resource: its name, serialized bytes, and a version that is a hash of those bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from google.protobuf import message


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    type_url: str
    payload: bytes
    version: str


def to_resource(name: str, type_url: str, msg: message.Message) -> Resource:
    # Deterministic serialization: the same config always hashes to the same version.
    payload = msg.SerializeToString(deterministic=True)
    version = hashlib.blake2b(payload, digest_size=8).hexdigest()
    return Resource(name=name, type_url=type_url, payload=payload, version=version)
