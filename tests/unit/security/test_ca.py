"""The mesh CA: certificates as istiod makes them, the CA directory, TTLs, CSRs."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from istiolite import metrics
from istiolite.security.ca import CAError, MeshCA
from istiolite.security.identity import Identity
from tests.support.cacerts import ca_cert, write_plugin_dir

ALICE = Identity("cluster.local", "shop", "alice")
BOB = Identity("cluster.local", "other", "bob")


def _certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, uri: str = BOB.spiffe_uri) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _verify_chain(chain: list[x509.Certificate]) -> None:
    for child, parent in itertools.pairwise(chain):
        child.verify_directly_issued_by(parent)


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def test_workload_certificate_is_as_istiod_makes_it(tmp_path: Path) -> None:
    ca = MeshCA.load(tmp_path / "ca", "cluster.local")
    before = datetime.now(UTC)
    issued = await ca.issue(ALICE)
    (leaf,) = _certs(issued.chain_pem)  # self-signed CA: the leaf alone, no root
    root = _certs(ca.root_pem())[0]

    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/shop/sa/alice"
    ]
    assert len(list(san.value)) == 1  # URI SAN only
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    skew = before - leaf.not_valid_before_utc
    assert timedelta(minutes=1, seconds=55) <= skew <= timedelta(minutes=2, seconds=5)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=24, minutes=2)
    leaf.verify_directly_issued_by(root)
    assert issued.serial == leaf.serial_number
    assert issued.not_after == leaf.not_valid_after_utc

    key = serialization.load_pem_private_key(issued.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert _public_der(key.public_key()) == _public_der(leaf.public_key())
    assert b"PRIVATE KEY" not in repr(issued).encode()


async def test_each_certificate_has_a_fresh_key_and_serial(tmp_path: Path) -> None:
    ca = MeshCA.load(None, "cluster.local")
    first, second = await ca.issue(ALICE), await ca.issue(ALICE)
    assert first.key_pem != second.key_pem
    assert first.serial != second.serial


async def test_self_signed_root_as_istiod(tmp_path: Path) -> None:
    ca = MeshCA.load(tmp_path / "ca", "example.org")
    root = _certs(ca.root_pem())[0]
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "example.org"
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    life = root.not_valid_after_utc - root.not_valid_before_utc
    assert timedelta(days=3649) < life < timedelta(days=3651)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert ca.expiry() == root.not_valid_after_utc
    assert metrics.CA_ROOT_EXPIRY._value.get() == root.not_valid_after_utc.timestamp()
    assert ca.trust_bundle() == ca.root_pem()


async def test_rsa_key_type(tmp_path: Path) -> None:
    ca = MeshCA.load(tmp_path / "ca", "cluster.local", key_type="rsa")
    root_key = _certs(ca.root_pem())[0].public_key()
    assert isinstance(root_key, rsa.RSAPublicKey) and root_key.key_size == 2048
    issued = await ca.issue(ALICE)
    key = serialization.load_pem_private_key(issued.key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_unknown_key_type_is_refused() -> None:
    with pytest.raises(CAError, match="ed25519"):
        MeshCA.load(None, "cluster.local", key_type="ed25519")


async def test_root_written_0600_and_reused_on_restart(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    first = MeshCA.load(ca_dir, "cluster.local")
    key_mode = stat.S_IMODE(os.stat(ca_dir / "ca-key.pem").st_mode)
    assert key_mode == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca-key.pem", "root-cert.pem"]
    second = MeshCA.load(ca_dir, "cluster.local")
    assert second.root_pem() == first.root_pem()
    # What the first signed, the second's root verifies.
    issued = await first.issue(ALICE)
    _certs(issued.chain_pem)[0].verify_directly_issued_by(_certs(second.root_pem())[0])


def test_key_file_never_briefly_world_readable(tmp_path: Path) -> None:
    """The key is created 0600 (not chmod-ed after writing): watch the directory while it is
    written and never see a wider mode."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    old_umask = os.umask(0)  # the loosest umask: only the mode given at creation protects it
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(ca_dir):
                if "key" in entry.name:
                    try:
                        seen.add(stat.S_IMODE(entry.stat().st_mode))
                    except FileNotFoundError:
                        pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        MeshCA.load(ca_dir, "cluster.local")
    finally:
        done.set()
        watcher.join()
        os.umask(old_umask)
    assert seen <= {0o600}
    assert stat.S_IMODE(os.stat(ca_dir / "ca-key.pem").st_mode) == 0o600


async def test_plugged_in_ca_signs_with_the_intermediate_and_serves_the_chain(
    tmp_path: Path,
) -> None:
    root, intermediate = write_plugin_dir(tmp_path / "cacerts")
    ca = MeshCA.load(tmp_path / "cacerts", "cluster.local")
    assert ca.root_pem() == root.pem
    assert ca.trust_bundle() == root.pem

    issued = await ca.issue(ALICE)
    leaf, inter = _certs(issued.chain_pem)
    assert inter == intermediate.cert
    _verify_chain([leaf, inter, root.cert])

    chain = [
        _certs(pem)[0]
        for pem in await ca.sign_csr(_csr(ec.generate_private_key(ec.SECP256R1())), ALICE)
    ]
    assert chain[1:] == [intermediate.cert, root.cert]
    _verify_chain(chain)
    assert not (tmp_path / "cacerts" / "root-cert-bundle.pem").exists()  # nothing written


async def test_leaf_never_outlives_the_signing_intermediate(tmp_path: Path) -> None:
    write_plugin_dir(tmp_path / "cacerts", intermediate_days=1)
    ca = MeshCA.load(tmp_path / "cacerts", "cluster.local", max_ttl=timedelta(days=90))
    issued = await ca.issue(ALICE, ttl=timedelta(days=30))
    assert issued.not_after == ca.expiry()
    assert (
        ca.expiry()
        == _certs((tmp_path / "cacerts" / "ca-cert.pem").read_bytes())[0].not_valid_after_utc
    )


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, timedelta(hours=24)),
        (timedelta(0), timedelta(hours=24)),
        (timedelta(hours=1), timedelta(hours=1)),
        (timedelta(days=90), timedelta(days=90)),
        (timedelta(days=365), timedelta(days=90)),  # capped at the maximum
    ],
)
async def test_ttl_default_and_cap(requested: timedelta | None, expected: timedelta) -> None:
    ca = MeshCA.load(None, "cluster.local")
    issued = await ca.issue(ALICE, ttl=requested)
    assert issued.not_after - issued.not_before == expected + timedelta(minutes=2)


async def test_configured_ttls() -> None:
    ca = MeshCA.load(
        None, "cluster.local", workload_ttl=timedelta(minutes=1), max_ttl=timedelta(hours=2)
    )
    issued = await ca.issue(ALICE)
    assert issued.not_after - issued.not_before == timedelta(minutes=3)
    chain = await ca.sign_csr(
        _csr(ec.generate_private_key(ec.SECP256R1())), ALICE, timedelta(days=3)
    )
    leaf = _certs(chain[0])[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=2, minutes=2)
    with pytest.raises(ValueError, match="negative"):
        await ca.issue(ALICE, ttl=timedelta(seconds=-1))
    with pytest.raises(CAError, match="above the maximum"):
        MeshCA.load(
            None, "cluster.local", workload_ttl=timedelta(days=2), max_ttl=timedelta(days=1)
        )


async def test_csr_is_signed_for_the_given_identity_not_its_own_san() -> None:
    ca = MeshCA.load(None, "cluster.local")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    chain = await ca.sign_csr(_csr(key, uri=BOB.spiffe_uri), ALICE)
    assert len(chain) == 2
    leaf, root = (_certs(pem)[0] for pem in chain)
    assert root == _certs(ca.root_pem())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ALICE.spiffe_uri]
    assert leaf.subject == x509.Name([])  # not the CSR's O=cluster.local
    assert _public_der(leaf.public_key()) == _public_der(key.public_key())
    _verify_chain([leaf, root])


async def test_csr_with_a_broken_signature_is_refused() -> None:
    ca = MeshCA.load(None, "cluster.local")
    good = _csr(ec.generate_private_key(ec.SECP256R1()))
    csr = x509.load_pem_x509_csr(good)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF  # inside the signature
    body = base64.encodebytes(bytes(der))
    broken = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(ValueError, match="signature"):
        await ca.sign_csr(broken, ALICE)
    with pytest.raises(ValueError, match="not a PEM certificate request"):
        await ca.sign_csr(b"hello", ALICE)
    with pytest.raises(ValueError, match="larger than"):
        await ca.sign_csr(b"x" * 100_000, ALICE)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits"):
        await ca.sign_csr(_csr(weak), ALICE)


def test_serving_certificate_for_dns_names() -> None:
    ca = MeshCA.load(None, "cluster.local")
    chain, key_pem = ca.issue_serving(["istiod.istio-system.svc", "istiod"])
    (leaf,) = _certs(chain)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc", "istiod"]
    key = serialization.load_pem_private_key(key_pem, None)
    assert _public_der(key.public_key()) == _public_der(leaf.public_key())
    leaf.verify_directly_issued_by(_certs(ca.root_pem())[0])


async def test_signing_runs_off_the_event_loop() -> None:
    """While a burst of RSA certificates is signed the loop keeps ticking."""
    ca = MeshCA.load(None, "cluster.local", key_type="rsa")
    gaps: list[float] = []
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.gather(*(ca.issue(ALICE) for _ in range(8)))
    ticker.cancel()
    assert len(gaps) >= 3, "the loop did not run while signing"


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


@pytest.mark.parametrize(
    ("breakage", "file", "message"),
    [
        ("key_unreadable", "ca-key.pem", "cannot read"),
        ("key_mismatch", "ca-key.pem", "does not match the certificate in"),
        ("key_garbage", "ca-key.pem", "not a PEM private key"),
        ("root_missing", "root-cert.pem", "missing"),
        ("cert_not_ca", "ca-cert.pem", "not a CA certificate"),
        ("chain_wrong_root", "root-cert.pem", "no root here issued"),
        ("cert_garbage", "ca-cert.pem", "not PEM certificates"),
    ],
)
def test_broken_plugin_dir_names_the_file(
    tmp_path: Path, breakage: str, file: str, message: str
) -> None:
    ca_dir = tmp_path / "cacerts"
    root, intermediate = write_plugin_dir(ca_dir)
    if breakage == "key_unreadable":
        (ca_dir / "ca-key.pem").chmod(0)
        if os.access(ca_dir / "ca-key.pem", os.R_OK):  # root reads anything: make it a directory
            (ca_dir / "ca-key.pem").unlink()
            (ca_dir / "ca-key.pem").mkdir()
    elif breakage == "key_mismatch":
        _write(ca_dir / "ca-key.pem", ca_cert("other").key_pem)
    elif breakage == "key_garbage":
        _write(
            ca_dir / "ca-key.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
    elif breakage == "root_missing":
        (ca_dir / "root-cert.pem").unlink()
    elif breakage == "cert_not_ca":
        leaf = ca_cert("not a ca", root, ca=False)
        _write(ca_dir / "ca-cert.pem", leaf.pem, 0o644)
        _write(ca_dir / "ca-key.pem", leaf.key_pem)
        _write(ca_dir / "cert-chain.pem", leaf.pem + root.pem, 0o644)
    elif breakage == "chain_wrong_root":
        _write(ca_dir / "root-cert.pem", ca_cert("another root").pem, 0o644)
        _write(ca_dir / "cert-chain.pem", intermediate.pem, 0o644)
    elif breakage == "cert_garbage":
        _write(ca_dir / "ca-cert.pem", b"not a certificate", 0o644)
    with pytest.raises(CAError) as err:
        MeshCA.load(ca_dir, "cluster.local")
    assert str(ca_dir / file) in str(err.value)
    assert message in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)


def test_self_signed_dir_with_key_but_no_root_is_refused_not_overwritten(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    MeshCA.load(ca_dir, "cluster.local")
    key_before = (ca_dir / "ca-key.pem").read_bytes()
    (ca_dir / "root-cert.pem").unlink()
    with pytest.raises(CAError, match=r"root-cert\.pem: missing while .*ca-key\.pem is there"):
        MeshCA.load(ca_dir, "cluster.local")
    assert (ca_dir / "ca-key.pem").read_bytes() == key_before


def test_self_signed_key_mismatch_names_the_key(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    MeshCA.load(ca_dir, "cluster.local")
    _write(ca_dir / "ca-key.pem", ca_cert("other").key_pem)
    with pytest.raises(CAError, match=str(ca_dir / "ca-key.pem") + ": does not match"):
        MeshCA.load(ca_dir, "cluster.local")


async def test_extra_roots_from_the_bundle_file_and_reload(tmp_path: Path) -> None:
    """Rotation: a second root appended to root-cert-bundle.pem is trusted (ROOTCA grows),
    signing still uses the current root, and on_change tells SDS / the secure port."""
    ca_dir = tmp_path / "ca"
    ca = MeshCA.load(ca_dir, "cluster.local")
    old_root = ca.root_pem()
    changes: list[str] = []
    ca.on_change(lambda: changes.append("changed"))
    assert not ca.reload()  # nothing changed on disk
    new_root = ca_cert("next root", days=3650)
    _write(ca_dir / "root-cert-bundle.pem", new_root.pem, 0o644)
    assert ca.reload()
    assert changes == ["changed"]
    assert ca.trust_bundle() == old_root + new_root.pem
    assert ca.root_pem() == old_root
    chain = await ca.sign_csr(_csr(ec.generate_private_key(ec.SECP256R1())), ALICE)
    assert chain[-1] == old_root
    # Step two: the new root signs, the old one stays trusted through the bundle.
    _write(ca_dir / "root-cert-bundle.pem", old_root, 0o644)
    _write(ca_dir / "root-cert.pem", new_root.pem, 0o644)
    _write(ca_dir / "ca-key.pem", new_root.key_pem)
    assert ca.reload()
    assert ca.root_pem() == new_root.pem
    assert ca.trust_bundle() == new_root.pem + old_root
    # A broken directory keeps the current signer.
    _write(ca_dir / "ca-key.pem", b"garbage")
    with pytest.raises(CAError):
        ca.reload()
    assert ca.root_pem() == new_root.pem
    assert changes == ["changed", "changed"]


async def test_watch_reloads_when_a_file_changes(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca = MeshCA.load(ca_dir, "cluster.local")
    changed = asyncio.Event()
    ca.on_change(changed.set)
    watcher = asyncio.create_task(ca.watch(interval=0.05))
    try:
        await asyncio.sleep(0.1)
        extra = ca_cert("next root", days=3650)
        _write(ca_dir / "root-cert-bundle.pem", extra.pem, 0o644)
        await asyncio.wait_for(changed.wait(), 5)
        assert extra.pem in ca.trust_bundle()
        changed.clear()
        _write(ca_dir / "root-cert-bundle.pem", b"garbage", 0o644)  # logged, signer kept
        await asyncio.sleep(0.3)
        assert not changed.is_set() and extra.pem in ca.trust_bundle()
    finally:
        watcher.cancel()
        ca.close()
