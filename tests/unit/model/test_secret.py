"""Kubernetes Secrets as TLS credentials: both key layouts Istio reads, base64 `data` and plain
`stringData`, the checks that catch a broken credential before Envoy does, and the promise that
private key material never shows up in an error or a repr."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from istiolite.model.kinds import parse_object
from istiolite.model.secret import Secret, parse_secret
from istiolite.model.validation import ValidationError
from tests.support.certs import CertificateAuthority, KeyPair, tls_secret

NS = "istio-system"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("secret test CA")


@pytest.fixture(scope="module")
def pair(ca: CertificateAuthority) -> KeyPair:
    return ca.issue("web.example.com", dns=("web.example.com",))


@pytest.fixture(scope="module")
def other(ca: CertificateAuthority) -> KeyPair:
    return ca.issue("other.example.com")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret(
    data: dict[str, str] | None = None,
    *,
    string_data: dict[str, str] | None = None,
    type: str | None = None,
    name: str = "web-cert",
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
    }
    if type:
        raw["type"] = type
    if data is not None:
        raw["data"] = data
    if string_data is not None:
        raw["stringData"] = string_data
    return raw


def key_lines(pair: KeyPair) -> list[str]:
    """Every line of the private key PEM that carries key bytes (not the BEGIN/END armour)."""
    lines = [ln for ln in pair.key_pem.decode().splitlines() if ln and not ln.startswith("-----")]
    assert lines
    return lines


def assert_no_key_material(text: str, pair: KeyPair) -> None:
    for line in key_lines(pair):
        assert line not in text, "private key material leaked"
    assert b64(pair.key_pem) not in text


def rejected(raw: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_secret(raw)
    return caught.value


# -- accepted ----------------------------------------------------------------------------------


def test_kubernetes_tls_secret(ca: CertificateAuthority, pair: KeyPair) -> None:
    key, s = parse_object(tls_secret("web-cert", NS, pair, ca=ca.cert_pem))
    assert (key.kind, key.namespace, key.name) == ("Secret", NS, "web-cert")
    assert isinstance(s, Secret)
    assert s.type == "kubernetes.io/tls"
    assert s.namespace == NS
    assert s.has_key_pair and s.has_ca
    assert s.credential.certificate_chain == pair.cert_pem
    assert s.credential.private_key == pair.key_pem
    assert s.credential.ca_certificates == ca.cert_pem


def test_tls_secret_without_ca(pair: KeyPair) -> None:
    s = parse_secret(tls_secret("web-cert", NS, pair))
    assert s.has_key_pair and not s.has_ca


def test_generic_secret_with_istio_keys(ca: CertificateAuthority, pair: KeyPair) -> None:
    s = parse_secret(
        secret({"cert": b64(pair.cert_pem), "key": b64(pair.key_pem), "cacert": b64(ca.cert_pem)})
    )
    assert s.type == "Opaque"
    assert s.credential.certificate_chain == pair.cert_pem
    assert s.credential.private_key == pair.key_pem
    assert s.credential.ca_certificates == ca.cert_pem


def test_ca_only_secret(ca: CertificateAuthority) -> None:
    # A `<name>-cacert` Secret carries only the trust bundle.
    s = parse_secret(secret({"ca.crt": b64(ca.cert_pem)}, name="web-cert-cacert"))
    assert s.has_ca and not s.has_key_pair
    s = parse_secret(secret({"cacert": b64(ca.cert_pem)}, name="web-cert-cacert"))
    assert s.has_ca


def test_string_data(pair: KeyPair) -> None:
    s = parse_secret(
        secret(
            string_data={"tls.crt": pair.cert_pem.decode(), "tls.key": pair.key_pem.decode()},
            type="kubernetes.io/tls",
        )
    )
    assert s.credential.certificate_chain == pair.cert_pem
    assert s.credential.private_key == pair.key_pem


def test_string_data_wins_over_data(pair: KeyPair, other: KeyPair) -> None:
    # As the API server merges them: stringData overwrites the same key in data.
    s = parse_secret(
        secret(
            {"tls.crt": b64(other.cert_pem), "tls.key": b64(other.key_pem)},
            string_data={"tls.crt": pair.cert_pem.decode(), "tls.key": pair.key_pem.decode()},
        )
    )
    assert s.credential.certificate_chain == pair.cert_pem


def test_certificate_chain_with_intermediate(ca: CertificateAuthority, pair: KeyPair) -> None:
    # The leaf comes first; the key must match the leaf, whatever follows it.
    s = parse_secret(
        secret({"tls.crt": b64(pair.cert_pem + ca.cert_pem), "tls.key": b64(pair.key_pem)})
    )
    assert s.credential.certificate_chain == pair.cert_pem + ca.cert_pem


def test_secret_without_tls_keys_loads() -> None:
    # Not every Secret is a credential: one holding something else loads with nothing to serve.
    s = parse_secret(secret({"password": b64(b"hunter2")}))
    assert not s.has_key_pair and not s.has_ca


# -- rejected, naming the field -------------------------------------------------------------------


def test_bad_base64_names_the_data_key(pair: KeyPair) -> None:
    err = rejected(secret({"tls.crt": "not base64!!", "tls.key": b64(pair.key_pem)}))
    assert err.field == "data.tls.crt"


def test_bad_base64_in_the_key_does_not_echo_it(pair: KeyPair) -> None:
    # The raw (undecoded) PEM put in `data` by mistake: not base64, and never repeated back.
    err = rejected(secret({"tls.crt": b64(pair.cert_pem), "tls.key": pair.key_pem.decode()}))
    assert err.field == "data.tls.key"
    assert_no_key_material(str(err), pair)


def test_non_string_data_value() -> None:
    raw = secret()
    raw["data"] = {"tls.crt": 5}
    assert rejected(raw).field == "data.tls.crt"
    raw = secret()
    raw["stringData"] = {"key": ["x"]}
    assert rejected(raw).field == "stringData.key"


def unusable(raw: dict[str, Any]) -> str:
    """As istiod, a broken credential is not a rejected object: the Secret loads, offers no
    key pair (or CA), and says why, for whoever references it to report."""
    parsed = parse_secret(raw)
    assert not (parsed.has_key_pair and parsed.has_ca)
    assert parsed.problem
    return parsed.problem


def test_an_unrelated_opaque_secret_loads(pair: KeyPair) -> None:
    # An API key under "key" is not a broken TLS credential; it is just not one.
    parsed = parse_secret(secret({"key": b64(b"api-key-123")}))
    assert not parsed.has_key_pair


def test_cert_without_key(pair: KeyPair) -> None:
    problem = unusable(secret({"tls.crt": b64(pair.cert_pem)}))
    assert problem.startswith("data.tls.key: ")
    problem = unusable(secret(string_data={"cert": pair.cert_pem.decode()}))
    assert problem.startswith("stringData.key: ")


def test_key_without_cert(pair: KeyPair) -> None:
    problem = unusable(secret({"key": b64(pair.key_pem)}))
    assert problem.startswith("data.cert: ")
    assert_no_key_material(problem, pair)


def test_tls_type_needs_both_keys(ca: CertificateAuthority) -> None:
    # What the API server itself refuses stays an error.
    err = rejected(secret({"ca.crt": b64(ca.cert_pem)}, type="kubernetes.io/tls"))
    assert err.field == "data"


def test_key_not_matching_the_certificate(pair: KeyPair, other: KeyPair) -> None:
    problem = unusable(secret({"tls.crt": b64(pair.cert_pem), "tls.key": b64(other.key_pem)}))
    assert problem.startswith("data.tls.key: ")
    assert "data.tls.crt" in problem
    assert_no_key_material(problem, other)
    assert_no_key_material(problem, pair)


def test_garbage_certificate(pair: KeyPair) -> None:
    problem = unusable(secret({"tls.crt": b64(b"garbage"), "tls.key": b64(pair.key_pem)}))
    assert problem.startswith("data.tls.crt: ")
    assert_no_key_material(problem, pair)


def test_key_pem_in_the_certificate_slot(pair: KeyPair) -> None:
    # Swapped keys: the error names the certificate field, and the key is not repeated.
    problem = unusable(secret({"tls.crt": b64(pair.key_pem), "tls.key": b64(pair.cert_pem)}))
    assert problem.startswith("data.tls.crt: ")
    assert_no_key_material(problem, pair)


def test_garbage_key(pair: KeyPair) -> None:
    problem = unusable(secret({"tls.crt": b64(pair.cert_pem), "tls.key": b64(b"-----BEGIN junk")}))
    assert problem.startswith("data.tls.key: ")


def test_truncated_key_is_not_echoed(pair: KeyPair) -> None:
    truncated = pair.key_pem[: len(pair.key_pem) // 2]
    problem = unusable(
        secret(string_data={"tls.crt": pair.cert_pem.decode(), "tls.key": truncated.decode()})
    )
    assert problem.startswith("stringData.tls.key: ")
    assert_no_key_material(problem, pair)


def test_garbage_ca(pair: KeyPair) -> None:
    problem = unusable(
        secret(
            {
                "tls.crt": b64(pair.cert_pem),
                "tls.key": b64(pair.key_pem),
                "ca.crt": b64(b"not a certificate"),
            }
        )
    )
    assert problem.startswith("data.ca.crt: ")


# -- key material stays inside -------------------------------------------------------------------


def test_repr_and_str_carry_no_key_material(ca: CertificateAuthority, pair: KeyPair) -> None:
    s = parse_secret(tls_secret("web-cert", NS, pair, ca=ca.cert_pem))
    for text in (repr(s), str(s), repr(s.credential), str(s.credential)):
        assert_no_key_material(text, pair)
    assert "web-cert" in repr(s)


# `kubectl apply` stores the whole applied manifest, stringData PEM included, in the
# `kubectl.kubernetes.io/last-applied-configuration` annotation (and a `kubectl get secret -o yaml`
# export dropped into a config directory carries it): it must not reach the repr either.
def test_repr_hides_key_in_last_applied_configuration(pair: KeyPair) -> None:
    import json

    raw = secret(
        string_data={"tls.crt": pair.cert_pem.decode(), "tls.key": pair.key_pem.decode()},
        type="kubernetes.io/tls",
    )
    raw["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(raw)
    }
    s = parse_secret(raw)
    assert_no_key_material(repr(s), pair)
