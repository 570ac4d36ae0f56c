"""Which ADS peers may receive private keys over the plaintext xDS port: only local ones (loopback
in any spelling gRPC reports it, or a Unix socket). Anything else, or anything unparseable, gets
every resource but the Secrets."""

from __future__ import annotations

import pytest

from istiolite import type_urls
from istiolite.networking import generator
from istiolite.xds.stream_secrets import may_receive_keys, without_secrets
from tests.support.certs import CertificateAuthority, tls_secret
from tests.support.objects import context, service
from tests.unit.networking.helpers import router
from tests.unit.networking.test_credentials import https_gateway


@pytest.mark.parametrize(
    "peer",
    [
        "ipv4:127.0.0.1:51234",
        "ipv4:127.10.20.30:51234",  # all of 127/8 is loopback
        "ipv6:[::1]:51234",
        "ipv6:%5B::1%5D:51234",  # gRPC url-encodes the brackets
        "ipv6:%5b::1%5d:51234",
        "ipv6:[::ffff:127.0.0.1]:51234",  # v4-mapped loopback (dual-stack socket)
        "ipv6:%5B::ffff:127.0.0.1%5D:51234",
        "unix:/run/istiolite/xds.sock",
        "unix:",  # the unnamed client end of a Unix socket
    ],
)
def test_local_peers_may_receive_keys(peer: str) -> None:
    assert may_receive_keys(peer)


@pytest.mark.parametrize(
    "peer",
    [
        "ipv4:10.1.0.200:51234",
        "ipv4:0.0.0.0:51234",
        "ipv4:192.168.1.10:51234",
        "ipv6:[2001:db8::1]:51234",
        "ipv6:%5B2001:db8::1%5D:51234",
        "ipv6:[::ffff:10.0.0.1]:51234",  # v4-mapped, not loopback
        "ipv6:[fe80::1%25eth0]:51234",  # link-local with a zone
        "ipv6:[::]:51234",
    ],
)
def test_remote_peers_may_not(peer: str) -> None:
    assert not may_receive_keys(peer)


@pytest.mark.parametrize(
    "peer",
    [
        "",
        "garbage",
        "ipv4:",
        "ipv4:127.0.0.1",  # no port: not what gRPC reports, so not trusted
        "ipv4:localhost:51234",  # names are not addresses
        "dns:localhost:51234",
        "ipv4:127.0.0.1.example.com:51234",
        "ipv6:[::1]x:51234",
        "ipv6:%255B::1%255D:51234",  # double-encoded
        "127.0.0.1:51234",  # no scheme
        "ipv4:127.0.0.1:80:extra",
    ],
)
def test_unparseable_peers_may_not(peer: str) -> None:
    assert not may_receive_keys(peer)


def test_a_peer_without_keys_gets_everything_but_secrets() -> None:
    pair = CertificateAuthority("peer test CA").issue("hello.example.com")
    ctx = context(
        service("hello", "web", cluster_ip="10.96.1.10"),
        tls_secret("cert", "istio-system", pair),
        https_gateway("cert"),  # a Secret reaches a proxy only when its config names it
    )
    proxy = router("istio-system")
    public = without_secrets(generator.generate)
    assert set(generator.generate(ctx, proxy, type_urls.SECRET)) == {"kubernetes://cert"}
    assert public(ctx, proxy, type_urls.SECRET) == {}  # (file-cert: secrets would pass)
    for type_url in (type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.ROUTE):
        assert public(ctx, proxy, type_url) == generator.generate(ctx, proxy, type_url)
