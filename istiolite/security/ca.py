"""The mesh CA: a self-signed root or Istio's plugged-in intermediate, signing SPIFFE workload
certificates as istiod does (pkg/security/pki/ca + util/generate_cert.go).

On disk (`--ca-dir`), as istiod's `cacerts`:
- plug-in: `ca-cert.pem` (the signing CA), `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`
  (ca-cert up to the root); certificates are signed with ca-cert and served with the full chain;
- self-signed: `root-cert.pem` + `ca-key.pem`, created on first start and reused afterwards;
- either way an optional `root-cert-bundle.pem`: extra roots the workloads also trust, so a root
  can be rotated without breaking traffic (README, "Certificate authority").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.security.authority import IssuedCertificate
from istiolite.security.identity import Identity

log = get_logger("ca")

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KeyType = Literal["ecdsa", "rsa"]

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
ROOT_BUNDLE = "root-cert-bundle.pem"

ROOT_TTL = timedelta(days=3650)  # istiod's self-signed root: 10 years
CLOCK_SKEW = timedelta(minutes=2)  # NotBefore this far back, as istiod
MAX_CSR_BYTES = 64 * 1024
MAX_FILE_BYTES = 1024 * 1024  # a cacerts file larger than this is a mistake, not a chain
MAX_CERTS_PER_FILE = 64
_RSA_BITS = 2048
_SIGN_WORKERS = 2  # signing threads: a burst queues here instead of stalling the event loop


class CAError(ValueError):
    """The CA directory cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class _Signer:
    """What signs: a key, its certificate, the chain above it and the roots to trust."""

    key: PrivateKey
    cert: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]  # cert first, not the root; () when self-signed
    root: x509.Certificate  # the root the chain ends in
    bundle: tuple[x509.Certificate, ...]  # every trusted root, `root` first
    expiry: datetime  # the earliest NotAfter of the chain: nothing is signed past it

    @property
    def chain_above_leaf(self) -> list[bytes]:
        return [_pem(c) for c in self.intermediates]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise CAError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CAError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def _read_certs(path: Path) -> list[x509.Certificate]:
    return _parse_certs(_read(path), str(path))


def _parse_certs(data: bytes, label: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CAError(f"{label}: not PEM certificates") from None
    if len(certs) > MAX_CERTS_PER_FILE:
        raise CAError(f"{label}: more than {MAX_CERTS_PER_FILE} certificates")
    return certs


def _read_key(path: Path) -> PrivateKey:
    return _parse_key(_read(path), str(path))


def _parse_key(data: bytes, label: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CAError(f"{label}: the private key is encrypted (give it unencrypted)") from None
    except ValueError:
        raise CAError(f"{label}: not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"{label}: only ECDSA and RSA CA keys are supported")
    return key


def _check_ca(cert: x509.Certificate, path: Path | str) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CAError(f"{path}: not a CA certificate (no basicConstraints)") from None
    if not constraints.ca:
        raise CAError(f"{path}: not a CA certificate (basicConstraints CA:FALSE)")
    now = datetime.now(UTC)
    if cert.not_valid_after_utc <= now:
        raise CAError(f"{path}: expired on {cert.not_valid_after_utc.isoformat()}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _self_signed_root(key: PrivateKey, trust_domain: str) -> x509.Certificate:
    # As istiod's self-signed root: O=<trust domain>, CA, 10 years.
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _dedupe(certs: list[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: set[bytes] = set()
    out = []
    for cert in certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return tuple(out)


def _load_plugged(ca_dir: Path, extra_roots: list[x509.Certificate]) -> _Signer:
    for name in (CA_CERT, CA_KEY, ROOT_CERT):
        if not (ca_dir / name).exists():
            raise CAError(f"{ca_dir / name}: missing ({CA_CERT} is there, so the plug-in CA "
                          f"needs {CA_CERT}, {CA_KEY}, {ROOT_CERT} and {CERT_CHAIN})")  # fmt: skip
    files = {n: _read(ca_dir / n) for n in (CA_CERT, CA_KEY, ROOT_CERT)}
    if (ca_dir / CERT_CHAIN).exists():
        files[CERT_CHAIN] = _read(ca_dir / CERT_CHAIN)
    return _plugged_signer(files, lambda name: str(ca_dir / name), extra_roots)


def _plugged_signer(
    files: Mapping[str, bytes], label: Callable[[str], str], extra_roots: list[x509.Certificate]
) -> _Signer:
    """The signer of plug-in material (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, optional
    `cert-chain.pem`); errors name `label(file)`."""
    cert_path, key_path, root_path = label(CA_CERT), label(CA_KEY), label(ROOT_CERT)
    certs = _parse_certs(files[CA_CERT], cert_path)
    if len(certs) != 1:
        raise CAError(f"{cert_path}: expected one certificate, found {len(certs)}")
    cert = certs[0]
    _check_ca(cert, cert_path)
    key = _parse_key(files[CA_KEY], key_path)
    if _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        raise CAError(f"{key_path}: does not match the certificate in {cert_path}")
    roots = _parse_certs(files[ROOT_CERT], root_path)
    if not roots:
        raise CAError(f"{root_path}: no certificate")
    chain_path = label(CERT_CHAIN)
    chain = _parse_certs(files[CERT_CHAIN], chain_path) if files.get(CERT_CHAIN) else [cert]
    if not chain:
        raise CAError(f"{chain_path}: no certificate")
    if chain[0] != cert:
        chain.insert(0, cert)  # some tools write only the certificates above ca-cert
    # The chain as served: ca-cert and the intermediates, each issued by the next; the root is
    # added last by whoever sends the chain (a root at the end of cert-chain.pem is dropped).
    root_set = {r.public_bytes(serialization.Encoding.DER) for r in roots}
    intermediates = [c for c in chain if c.public_bytes(serialization.Encoding.DER) not in root_set]
    for child, parent in itertools.pairwise(intermediates):
        if not _issued_by(child, parent):
            raise CAError(
                f"{chain_path}: {child.subject.rfc4514_string() or 'a certificate'} is not "
                f"issued by the next one ({parent.subject.rfc4514_string()})"
            )
    top = intermediates[-1]
    anchor = next((r for r in roots if _issued_by(top, r)), None)
    if anchor is None:
        raise CAError(f"{root_path}: no root here issued {top.subject.rfc4514_string()}")
    _check_ca(anchor, root_path)
    bundle = _dedupe([anchor, *roots, *extra_roots])
    expiry = min(c.not_valid_after_utc for c in [*intermediates, anchor])
    return _Signer(key, cert, tuple(intermediates), anchor, bundle, expiry)


def signer_from_secret(data: Mapping[str, bytes], where: str) -> _Signer:
    """The signer kept in a Kubernetes Secret's data (decoded), as istiod keeps it:
    `istio-ca-secret` holds a self-signed root in `ca-cert.pem` + `ca-key.pem` (its
    `root-cert.pem` empty); `cacerts` holds the plug-in files. Errors name `where` and the key."""

    def label(name: str) -> str:
        return f"{where} key {name}"

    for name in (CA_CERT, CA_KEY):
        if not data.get(name):
            raise CAError(f"{label(name)}: missing or empty")
    if data.get(ROOT_CERT):
        return _plugged_signer(data, label, [])
    certs = _parse_certs(data[CA_CERT], label(CA_CERT))
    if len(certs) != 1:
        raise CAError(f"{label(CA_CERT)}: expected one certificate, found {len(certs)}")
    root = certs[0]
    _check_ca(root, label(CA_CERT))
    if not _issued_by(root, root):
        raise CAError(f"{label(CA_CERT)}: not self-signed, and {label(ROOT_CERT)} is empty")
    key = _parse_key(data[CA_KEY], label(CA_KEY))
    if _public_bytes(key.public_key()) != _public_bytes(root.public_key()):
        raise CAError(f"{label(CA_KEY)}: does not match the certificate in {label(CA_CERT)}")
    return _Signer(key, root, (), root, (root,), root.not_valid_after_utc)


def new_root_material(trust_domain: str, key_type: str = "ecdsa") -> tuple[bytes, bytes]:
    """A new self-signed root: (certificate PEM, private key PEM)."""
    key = _new_key("rsa" if key_type == "rsa" else "ecdsa")
    return _pem(_self_signed_root(key, trust_domain)), _key_pem(key)


def _load_self_signed(
    ca_dir: Path | None,
    trust_domain: str,
    key_type: KeyType,
    extra: list[x509.Certificate],
    *,
    placeholder: bool = False,
) -> _Signer:
    if ca_dir is None:
        key = _new_key(key_type)
        root = _self_signed_root(key, trust_domain)
        if placeholder:
            return _Signer(key, root, (), root, (root,), root.not_valid_after_utc)
        log.warning(
            "CA root kept in memory only: give --ca-dir so it survives a restart "
            "(every workload certificate becomes untrusted when istiolite restarts)",
            root_serial=f"{root.serial_number:x}",
        )
    else:
        root_path, key_path = ca_dir / ROOT_CERT, ca_dir / CA_KEY
        if root_path.exists() != key_path.exists():
            present, missing = (
                (root_path, key_path) if root_path.exists() else (key_path, root_path)
            )
            raise CAError(
                f"{missing}: missing while {present} is there (restore it, or remove both to "
                "create a new root)"
            )
        if root_path.exists():
            roots = _read_certs(root_path)
            if len(roots) != 1:
                raise CAError(f"{root_path}: expected one certificate, found {len(roots)} (add "
                              f"extra roots to {ROOT_BUNDLE})")  # fmt: skip
            root = roots[0]
            _check_ca(root, root_path)
            key = _read_key(key_path)
            if _public_bytes(key.public_key()) != _public_bytes(root.public_key()):
                raise CAError(f"{key_path}: does not match the certificate in {root_path}")
            log.info("CA root loaded", ca_dir=str(ca_dir), root_serial=f"{root.serial_number:x}")
        else:
            try:
                ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                key = _new_key(key_type)
                root = _self_signed_root(key, trust_domain)
                # The key first: a root certificate without its key would be unusable.
                _write_private(key_path, _key_pem(key))
                _write_public(root_path, _pem(root))
            except OSError as err:
                raise CAError(f"{ca_dir}: cannot write the new root: {err}") from None
            log.info("CA root created", ca_dir=str(ca_dir), root_serial=f"{root.serial_number:x}")
    bundle = _dedupe([root, *extra])
    return _Signer(key, root, (), root, bundle, root.not_valid_after_utc)


def _load_signer(
    ca_dir: Path | None, trust_domain: str, key_type: KeyType, *, placeholder: bool = False
) -> _Signer:
    extra: list[x509.Certificate] = []
    if ca_dir is not None:
        if ca_dir.exists() and not ca_dir.is_dir():
            raise CAError(f"{ca_dir}: not a directory")
        bundle_path = ca_dir / ROOT_BUNDLE
        if bundle_path.exists():
            extra = _read_certs(bundle_path)
            for cert in extra:
                _check_ca(cert, bundle_path)
        if (ca_dir / CA_CERT).exists():
            return _load_plugged(ca_dir, extra)
    return _load_self_signed(ca_dir, trust_domain, key_type, extra, placeholder=placeholder)


class MeshCA:
    """Implements `security.authority.CertificateAuthority`; also the serving certificate of the
    secure port. Thread-safe: the signer is replaced as a whole on reload."""

    def __init__(
        self,
        signer: _Signer,
        *,
        ca_dir: Path | None,
        trust_domain: str,
        key_type: KeyType,
        workload_ttl: timedelta,
        max_ttl: timedelta,
    ) -> None:
        self.trust_domain = trust_domain
        self.ca_dir = ca_dir
        self.key_type: KeyType = key_type
        self.workload_ttl = workload_ttl
        self.max_ttl = max_ttl
        self._signer = signer
        # Where the signer came from: the directory, a Secret, or memory (for logs and /debug).
        self.source = f"--ca-dir {ca_dir}" if ca_dir is not None else "memory"
        self._callbacks: list[Callable[[], None]] = []
        self._executor = ThreadPoolExecutor(_SIGN_WORKERS, thread_name_prefix="ca-sign")
        self._lock = threading.Lock()
        self._publish_metrics()

    @classmethod
    def load(
        cls,
        ca_dir: Path | None,
        trust_domain: str,
        *,
        key_type: str = "ecdsa",
        workload_ttl: timedelta = timedelta(hours=24),
        max_ttl: timedelta = timedelta(days=90),
        placeholder: bool = False,
    ) -> MeshCA:
        """The CA of `ca_dir` (created there if empty), or an in-memory one without it.
        CAError naming the file when the directory cannot be used. `placeholder` (no
        `ca_dir`): an in-memory root meant to be replaced by `install` before serving (the
        root kept in a cluster's Secret)."""
        if key_type not in ("ecdsa", "rsa"):
            raise CAError(f"key type {key_type!r}: not ecdsa or rsa")
        if workload_ttl <= timedelta(0) or max_ttl <= timedelta(0):
            raise CAError("workload certificate TTLs must be positive")
        if workload_ttl > max_ttl:
            raise CAError(f"workload TTL {workload_ttl} is above the maximum {max_ttl}")
        kt: KeyType = "rsa" if key_type == "rsa" else "ecdsa"
        signer = _load_signer(ca_dir, trust_domain, kt, placeholder=placeholder)
        return cls(
            signer,
            ca_dir=ca_dir,
            trust_domain=trust_domain,
            key_type=kt,
            workload_ttl=workload_ttl,
            max_ttl=max_ttl,
        )

    # --- what the rest of istiolite reads -------------------------------------------------

    def trust_bundle(self) -> bytes:
        return b"".join(_pem(c) for c in self._signer.bundle)

    def root_pem(self) -> bytes:
        """The root the signing chain ends in (the last element of every chain)."""
        return _pem(self._signer.root)

    def trust_roots(self) -> list[x509.Certificate]:
        return list(self._signer.bundle)

    def expiry(self) -> datetime:
        """When this CA stops being able to sign: the earliest NotAfter of its chain."""
        return self._signer.expiry

    def on_change(self, callback: Callable[[], None]) -> None:
        """`callback()` after the roots or the signing certificate changed (a reload)."""
        self._callbacks.append(callback)

    def reload(self) -> bool:
        """Re-read the CA directory; True (and the on_change callbacks run) when the roots or
        the signing certificate changed. CAError leaves the current signer in place."""
        if self.ca_dir is None:
            return False
        signer = _load_signer(self.ca_dir, self.trust_domain, self.key_type)
        with self._lock:
            old = self._signer
            if signer.cert == old.cert and signer.bundle == old.bundle:
                return False
            self._signer = signer
        self._publish_metrics()
        log.info("CA reloaded", root_serial=f"{signer.root.serial_number:x}")
        self._changed()
        return True

    def install(self, signer: _Signer, source: str) -> bool:
        """Sign with `signer` from now on (the CA kept in a Kubernetes Secret, say); True (and
        the on_change callbacks run) when it differs from the current one."""
        with self._lock:
            old = self._signer
            same_key = _public_bytes(signer.key.public_key()) == _public_bytes(old.key.public_key())
            if signer.cert == old.cert and signer.bundle == old.bundle and same_key:
                return False
            self._signer = signer
            self.source = source
        self._publish_metrics()
        log.info("CA installed", source=source, root_serial=f"{signer.root.serial_number:x}")
        self._changed()
        return True

    def _changed(self) -> None:
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("CA on_change callback failed")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def watch(self, interval: float = 10.0) -> None:
        """Reload whenever a file of the CA directory changes (checked every `interval` s; the
        stat calls off the loop). A broken directory is logged and the current signer kept."""
        if self.ca_dir is None:
            return
        ca_dir = self.ca_dir
        last = await asyncio.to_thread(_dir_signature, ca_dir)
        while True:
            await asyncio.sleep(interval)
            current = await asyncio.to_thread(_dir_signature, ca_dir)
            if current == last:
                continue
            last = current
            try:
                self.reload()
            except CAError as err:
                log.error("CA directory changed but cannot be used; still signing as before",
                          error=str(err))  # fmt: skip

    # --- signing ----------------------------------------------------------------------------

    def capped_ttl(self, ttl: timedelta | None) -> timedelta:
        """The TTL a request gets: the default for none/zero, at most the maximum."""
        if ttl is None or ttl == timedelta(0):
            return self.workload_ttl
        if ttl < timedelta(0):
            raise ValueError(f"requested TTL {ttl} is negative")
        return min(ttl, self.max_ttl)

    async def issue(self, identity: Identity, ttl: timedelta | None = None) -> IssuedCertificate:
        lifetime = self.capped_ttl(ttl)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._issue_sync, identity, lifetime)

    def _issue_sync(self, identity: Identity, ttl: timedelta) -> IssuedCertificate:
        key = _new_key(self.key_type)
        signer = self._signer
        cert = _workload_cert(signer, key.public_key(), identity, ttl)
        chain = b"".join([_pem(cert), *signer.chain_above_leaf])
        return IssuedCertificate(
            chain_pem=chain,
            key_pem=_key_pem(key),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    async def sign_csr(
        self, csr_pem: bytes, identity: Identity, ttl: timedelta | None = None
    ) -> list[bytes]:
        lifetime = self.capped_ttl(ttl)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._sign_csr_sync, csr_pem, identity, lifetime
        )

    def _sign_csr_sync(self, csr_pem: bytes, identity: Identity, ttl: timedelta) -> list[bytes]:
        public_key = csr_public_key(csr_pem)
        signer = self._signer
        cert = _workload_cert(signer, public_key, identity, ttl)
        return [_pem(cert), *signer.chain_above_leaf, _pem(signer.root)]

    def issue_serving(
        self, dns_names: list[str], ttl: timedelta | None = None
    ) -> tuple[bytes, bytes]:
        """A serving certificate for these DNS names (the secure port's): (chain PEM leaf
        first without the root, key PEM)."""
        if not dns_names:
            raise ValueError("a serving certificate needs at least one DNS name")
        key = _new_key(self.key_type)
        signer = self._signer
        cert = _leaf(
            signer,
            key.public_key(),
            [x509.DNSName(n) for n in dns_names],
            self.capped_ttl(ttl),
        )
        return b"".join([_pem(cert), *signer.chain_above_leaf]), _key_pem(key)

    def _publish_metrics(self) -> None:
        metrics.CA_ROOT_EXPIRY.set(self._signer.root.not_valid_after_utc.timestamp())


def _dir_signature(ca_dir: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for name in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN, ROOT_BUNDLE):
        try:
            st = os.stat(ca_dir / name)
        except OSError:
            continue
        entries.append((name, st.st_mtime_ns, st.st_size))
    return tuple(entries)


def csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a PEM CSR whose signature verifies; ValueError saying why not."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise ValueError(f"CSR larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ValueError("CSR is not a PEM certificate request") from None
    try:
        valid = csr.is_signature_valid
    except Exception:
        valid = False
    if not valid:
        raise ValueError("CSR signature does not verify")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if not 2048 <= key.key_size <= 8192:
            raise ValueError(f"CSR RSA key of {key.key_size} bits (2048 to 8192 accepted)")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise ValueError(f"CSR EC key on curve {key.curve.name} (P-256 or P-384 accepted)")
        return key
    raise ValueError("CSR key is neither RSA nor EC")


def _workload_cert(
    signer: _Signer,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    identity: Identity,
    ttl: timedelta,
) -> x509.Certificate:
    return _leaf(signer, public_key, [x509.UniformResourceIdentifier(identity.spiffe_uri)], ttl)


def _leaf(
    signer: _Signer,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    names: list[x509.GeneralName],
    ttl: timedelta,
) -> x509.Certificate:
    """A leaf as istiod's GenCertFromCSR makes it: empty subject, SAN only (critical),
    DigitalSignature + KeyEncipherment, ServerAuth + ClientAuth, NotBefore 2 minutes back,
    never valid past the signer's chain."""
    now = datetime.now(UTC)
    not_after = min(now + ttl, signer.expiry)
    if not_after <= now:
        raise ValueError(f"the CA certificate expired on {signer.expiry.isoformat()}")
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_authority_key_id(signer.cert), critical=False)
        .sign(signer.key, hashes.SHA256())
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
