"""Secrets naming certificate files travel one per response, SotW and Delta alike: Envoy
refuses a whole response when one secret names a file it lacks, and the other secrets in that
response would be lost with it. Every stream gets them: they hold no key material."""

from __future__ import annotations

from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)

from istiolite import type_urls
from istiolite.networking.resource import Resource, to_resource
from istiolite.networking.tls_context import file_secret
from istiolite.xds.protocol import DeltaStream, SotwStream
from istiolite.xds.stream_secrets import without_secrets
from tests.protocol.harness import make_node

SDS = type_urls.SECRET
GOOD = "file-cert:/etc/good/cert.pem~/etc/good/key.pem"
BAD = "file-cert:/missing/cert.pem~/missing/key.pem"
ROOT = "file-root:/etc/good/ca.pem"


def _secrets(*names: str) -> dict[str, Resource]:
    out = {}
    for name in names:
        secret = file_secret(name)
        assert secret is not None
        out[name] = to_resource(name, SDS, secret)
    return out


def _generate(resources: dict[str, Resource]) -> Any:
    return lambda ctx, proxy, type_url: resources if type_url == SDS else {}


def test_sotw_sends_each_file_secret_in_its_own_response() -> None:
    stream: SotwStream = SotwStream(_generate(_secrets(GOOD, BAD, ROOT)))
    out = stream.on_request(
        DiscoveryRequest(node=make_node(), type_url=SDS, resource_names=[GOOD, BAD, ROOT]), None
    )
    assert sorted(w.names for w in out) == [(GOOD,), (BAD,), (ROOT,)]
    decoded = [DiscoveryResponse.FromString(w.data) for w in out]
    assert [len(r.resources) for r in decoded] == [1, 1, 1]
    assert len({r.nonce for r in decoded}) == 3
    # The last nonce is the one an ACK answers; a NACK of an earlier one is stale.
    last = decoded[-1]
    assert stream.types[SDS].nonce_sent == last.nonce
    ack = DiscoveryRequest(
        node=make_node(),
        type_url=SDS,
        resource_names=[GOOD, BAD, ROOT],
        response_nonce=last.nonce,
        version_info=last.version_info,
    )
    assert stream.on_request(ack, None) == []
    assert stream.types[SDS].version_acked == last.version_info


def test_delta_sends_each_file_secret_in_its_own_response() -> None:
    stream: DeltaStream = DeltaStream(_generate(_secrets(GOOD, BAD)))
    out = stream.on_request(
        DeltaDiscoveryRequest(
            node=make_node(), type_url=SDS, resource_names_subscribe=[GOOD, BAD, "missing"]
        ),
        None,
    )
    decoded = [DeltaDiscoveryResponse.FromString(w.data) for w in out]
    assert sorted([r.name for r in d.resources] for d in decoded) == [[], [GOOD], [BAD]]
    assert list(decoded[-1].removed_resources) == ["missing"]
    assert len({d.nonce for d in decoded}) == 3


def test_other_secrets_still_share_one_response() -> None:
    ca = to_resource("kubernetes://a-cacert", SDS, secret_pb2.Secret(name="kubernetes://a-cacert"))
    other = to_resource("kubernetes://b", SDS, secret_pb2.Secret(name="kubernetes://b"))
    stream: SotwStream = SotwStream(_generate({ca.name: ca, other.name: other}))
    out = stream.on_request(
        DiscoveryRequest(node=make_node(), type_url=SDS, resource_names=[ca.name, other.name]),
        None,
    )
    assert [w.names for w in out] == [(ca.name, other.name)]


def test_streams_without_key_rights_still_get_file_secrets() -> None:
    key = to_resource("kubernetes://cert", SDS, secret_pb2.Secret(name="kubernetes://cert"))
    public = without_secrets(_generate({**_secrets(GOOD, ROOT), key.name: key}))
    assert set(public(None, None, SDS)) == {GOOD, ROOT}
