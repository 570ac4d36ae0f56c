"""Workload certificates per identity: shared by the streams of one identity, rotated at about
half their lifetime to those streams only, re-issued when the roots change, dropped with the
identity's last stream."""

from __future__ import annotations

import asyncio
import datetime
import re

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from istiolite.networking.workload_secrets import DEFAULT, ROOTCA
from istiolite.security.identity import Identity
from istiolite.xds.workload_certs import CertificateUnavailable, WorkloadCerts
from tests.support.workload_ca import SimpleCA, certificate, spiffe_uris

ALICE = Identity("cluster.local", "shop", "alice")
BOB = Identity("cluster.local", "shop", "bob")


def _secret(resources: object, name: str) -> secret_pb2.Secret:
    return secret_pb2.Secret.FromString(resources[name].payload)  # type: ignore[index]


async def test_streams_of_one_identity_share_one_certificate() -> None:
    ca = SimpleCA()
    certs = WorkloadCerts(ca)
    await asyncio.gather(
        certs.attach(ALICE, "s1", lambda: None), certs.attach(ALICE, "s2", lambda: None)
    )
    assert len(ca.issued) == 1, "one signature for both streams"
    resources = certs.resources(ALICE)
    assert list(resources) == [ROOTCA, DEFAULT]
    default = _secret(resources, DEFAULT)
    leaf = certificate(default.tls_certificate.certificate_chain.inline_bytes)
    assert spiffe_uris(leaf) == ["spiffe://cluster.local/ns/shop/sa/alice"]
    assert b"PRIVATE KEY" in default.tls_certificate.private_key.inline_bytes
    rootca = _secret(resources, ROOTCA)
    assert rootca.validation_context.trusted_ca.inline_bytes == ca.trust_bundle()
    await certs.close()


async def test_the_last_stream_takes_the_certificate_with_it() -> None:
    certs = WorkloadCerts(SimpleCA(), linger=0)
    await certs.attach(ALICE, "s1", lambda: None)
    await certs.attach(ALICE, "s2", lambda: None)
    await certs.attach(BOB, "s3", lambda: None)
    certs.detach(ALICE, "s1")
    assert certs.identities() == [ALICE, BOB]
    certs.detach(ALICE, "s2")
    assert certs.identities() == [BOB]
    assert certs.resources(ALICE) == {}
    certs.detach(BOB, "s3")
    assert certs.identities() == []
    await certs.close()


async def test_rotation_at_half_life_tells_only_that_identitys_streams() -> None:
    ca = SimpleCA()
    short = WorkloadCerts(ca, ttl=datetime.timedelta(seconds=4))
    told: list[str] = []
    await short.attach(ALICE, "a", lambda: told.append("alice"))
    first = short.certificate(ALICE)
    assert first is not None
    before = short.resources(ALICE)
    issued_at = asyncio.get_running_loop().time()
    for _ in range(200):
        if told:
            break
        await asyncio.sleep(0.05)
    waited = asyncio.get_running_loop().time() - issued_at
    assert told == ["alice"]
    # About half of the 3-4 s left at issue (X.509 times are whole seconds), ±2 %, plus
    # scheduling and signing time: wide bounds, this is not a benchmark.
    assert 1.3 <= waited <= 3.0, waited
    second = short.certificate(ALICE)
    assert second is not None and second.serial != first.serial
    after = short.resources(ALICE)
    assert after is not before and after[ROOTCA] is before[ROOTCA]
    assert after[DEFAULT].version != before[DEFAULT].version
    await short.close()


async def test_a_long_lived_identity_is_not_rotated_with_a_short_one() -> None:
    ca = SimpleCA()
    certs = WorkloadCerts(ca, ttl=datetime.timedelta(hours=1))
    told: list[str] = []
    await certs.attach(BOB, "b", lambda: told.append("bob"))
    await asyncio.sleep(0.3)
    assert told == [] and len(ca.issued) == 1
    await certs.close()


@pytest.mark.parametrize(("draw", "fraction"), [(0.0, 0.49), (0.5, 0.5), (1.0, 0.51)])
async def test_the_jitter_is_two_percent_of_the_half_life(draw: float, fraction: float) -> None:
    ca = SimpleCA()
    certs = WorkloadCerts(ca, rng=lambda: draw)
    issued = await ca.issue(ALICE, datetime.timedelta(seconds=1000))
    delay = certs._rotation_delay(issued)
    assert delay == pytest.approx(1000 * fraction, abs=1.0)


async def test_new_roots_go_to_everyone_with_certificates_from_the_new_signer() -> None:
    ca = SimpleCA()
    certs = WorkloadCerts(ca)
    told: list[str] = []
    await certs.attach(ALICE, "a", lambda: told.append("alice"))
    await certs.attach(BOB, "b", lambda: told.append("bob"))
    old_root = ca.root
    ca.rotate_root()
    for _ in range(100):
        if len(ca.issued) == 4:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    for identity in (ALICE, BOB):
        resources = certs.resources(identity)
        bundle = _secret(resources, ROOTCA).validation_context.trusted_ca.inline_bytes
        assert bundle == ca.trust_bundle() and bundle.count(b"BEGIN CERTIFICATE") == 2
        chain = _secret(resources, DEFAULT).tls_certificate.certificate_chain.inline_bytes
        leaf = certificate(chain)
        assert leaf.issuer == ca.root.subject != old_root.subject
    assert sorted(set(told)) == ["alice", "bob"]
    await certs.close()


async def test_a_ca_failure_is_reported_and_not_kept() -> None:
    ca = SimpleCA(fail=True)
    certs = WorkloadCerts(ca)
    with pytest.raises(CertificateUnavailable, match=re.escape(ALICE.spiffe_uri)):
        await certs.attach(ALICE, "a", lambda: None)
    assert certs.identities() == []
    ca.fail = False
    await certs.attach(ALICE, "a", lambda: None)  # the next stream tries again
    assert certs.certificate(ALICE) is not None
    await certs.close()


async def test_a_proxy_back_within_the_linger_finds_its_certificate() -> None:
    ca = SimpleCA()
    certs = WorkloadCerts(ca, linger=0.3)
    await certs.attach(ALICE, "first-stream", lambda: None)
    before = certs.resources(ALICE)
    certs.detach(ALICE, "first-stream")  # e.g. its connection reached its maximum age
    await certs.attach(ALICE, "reconnected", lambda: None)
    assert certs.resources(ALICE) is before and len(ca.issued) == 1
    certs.detach(ALICE, "reconnected")
    assert certs.identities() == [ALICE]
    await asyncio.sleep(0.5)
    assert certs.identities() == [], "gone once the linger is over"
    await certs.close()


async def test_a_stream_leaving_while_its_certificate_is_signed_leaves_nothing_behind() -> None:
    certs = WorkloadCerts(SimpleCA())
    waiting = asyncio.ensure_future(certs.attach(ALICE, "a", lambda: None))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert certs.identities() == []
    await certs.close()


def test_the_key_never_shows_in_a_repr() -> None:
    ca = SimpleCA()
    issued = asyncio.run(ca.issue(ALICE))
    from istiolite.networking.workload_secrets import default_resource

    text = repr(default_resource(issued)) + repr(issued)
    assert "PRIVATE" not in text and issued.key_pem.decode() not in text
