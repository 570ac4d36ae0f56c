"""Workload certificates kept in the CA directory across a restart: the first issue after a
start reuses a kept certificate that is still good, everything else signs anew; files are
private; a kept file that is wrong in any way is not used."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from istiolite.security import kept_certs
from istiolite.security.ca import MeshCA
from istiolite.security.identity import Identity
from istiolite.security.kept_certs import KeptCertificates

ALICE = Identity("cluster.local", "shop", "alice")
BOB = Identity("cluster.local", "shop", "bob")


@pytest.fixture
def ca(tmp_path: Path) -> MeshCA:
    return MeshCA.load(tmp_path / "ca", "cluster.local")


async def test_a_restart_reuses_the_kept_certificate_once(ca: MeshCA, tmp_path: Path) -> None:
    directory = tmp_path / "ca" / "workload-certs"
    first = await KeptCertificates(ca, directory).issue(ALICE)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (kept_file,) = directory.iterdir()
    assert stat.S_IMODE(kept_file.stat().st_mode) == 0o600

    restarted = KeptCertificates(MeshCA.load(tmp_path / "ca", "cluster.local"), directory)
    again = await restarted.issue(ALICE)
    assert (again.serial, again.key_pem, again.chain_pem) == (
        first.serial,
        first.key_pem,
        first.chain_pem,
    )
    # A rotation in the same process signs anew (and keeps that one).
    rotated = await restarted.issue(ALICE)
    assert rotated.serial != first.serial and rotated.key_pem != first.key_pem
    later = await KeptCertificates(ca, directory).issue(ALICE)
    assert later.serial == rotated.serial


async def test_a_certificate_of_another_root_is_not_reused(ca: MeshCA, tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    first = await KeptCertificates(ca, directory).issue(ALICE)
    other_root = MeshCA.load(tmp_path / "other-ca", "cluster.local")
    fresh = await KeptCertificates(other_root, directory).issue(ALICE)
    assert fresh.serial != first.serial


async def test_a_file_naming_another_identity_is_not_reused(ca: MeshCA, tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    keeper = KeptCertificates(ca, directory)
    await keeper.issue(ALICE)
    alice_file = keeper._path(ALICE)
    alice_file.rename(keeper._path(BOB))
    bob = await KeptCertificates(ca, directory).issue(BOB)
    leaf = x509.load_pem_x509_certificates(bob.chain_pem)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [BOB.spiffe_uri]


async def test_a_key_that_does_not_match_is_not_reused(ca: MeshCA, tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    keeper = KeptCertificates(ca, directory)
    alice = await keeper.issue(ALICE)
    bob = await keeper.issue(BOB)
    keeper._path(ALICE).write_bytes(bob.key_pem + alice.chain_pem)
    assert (await KeptCertificates(ca, directory).issue(ALICE)).serial != alice.serial


async def test_a_certificate_near_its_expiry_is_not_reused(
    ca: MeshCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "kept"
    first = await KeptCertificates(ca, directory).issue(ALICE)
    monkeypatch.setattr(kept_certs, "MIN_REMAINING", 1.0)  # every certificate is "too old"
    assert (await KeptCertificates(ca, directory).issue(ALICE)).serial != first.serial


async def test_garbage_in_the_directory_is_ignored(ca: MeshCA, tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    keeper = KeptCertificates(ca, directory)
    directory.mkdir()
    keeper._path(ALICE).write_bytes(b"not a certificate")
    issued = await keeper.issue(ALICE)
    assert issued.key_pem in keeper._path(ALICE).read_bytes()
