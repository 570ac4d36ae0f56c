"""The local token authority (`serve --token-issuer-key`): service-account JWTs verified against
an issuer's public key, every refusal with its reason, and its place in the Authenticator
(beside TokenReview, which still gets every other issuer's tokens)."""

from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from istiolite.demo.mesh.tokens import TokenIssuer
from istiolite.security.authn import AuthenticationFailed, Authenticator, TokenReviewResult
from istiolite.security.identity import Identity
from istiolite.security.local_tokens import (
    LocalTokenVerifier,
    TokenIssuerError,
    load_keys,
)
from tests.support.jwt import SigningKey, b64url, jwks

ISSUER = "https://issuer.test"
NOW = 1_800_000_000.0


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "system:serviceaccount:shop:reviews",
        "aud": ["istio-ca"],
        "iat": int(NOW) - 10,
        "nbf": int(NOW) - 10,
        "exp": int(NOW) + 600,
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "reviews"}},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _verifier(*keys: SigningKey, path: Path) -> LocalTokenVerifier:
    path.write_text(jwks(*keys))
    return LocalTokenVerifier(ISSUER, load_keys(path), "cluster.local", clock=lambda: NOW)


@pytest.fixture
def es256() -> SigningKey:
    return SigningKey("ES256")


@pytest.fixture
def verifier(es256: SigningKey, tmp_path: Path) -> LocalTokenVerifier:
    return _verifier(es256, path=tmp_path / "jwks.json")


def _refused(verifier: LocalTokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        verifier.verify(token)
    assert token not in str(caught.value)
    return str(caught.value)


def test_valid_es256_and_rs256_tokens_prove_the_service_account(tmp_path: Path) -> None:
    es, rs = SigningKey("ES256"), SigningKey("RS256")
    verifier = _verifier(es, rs, path=tmp_path / "jwks.json")
    for key in (es, rs):
        token = key.sign(_claims())
        assert verifier.issued_here(token)
        assert verifier.verify(token) == Identity("cluster.local", "shop", "reviews")


def test_audience_as_a_single_string_is_accepted(verifier: LocalTokenVerifier, es256: SigningKey):
    identity = verifier.verify(es256.sign(_claims(aud="istio-ca")))
    assert identity.spiffe_uri == "spiffe://cluster.local/ns/shop/sa/reviews"


def test_alg_none_is_refused(verifier: LocalTokenVerifier, es256: SigningKey) -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{b64url(json.dumps(_claims()).encode())}."
    assert "algorithm 'none' refused" in _refused(verifier, token)


def test_hmac_is_refused_even_with_the_public_key_as_secret(
    verifier: LocalTokenVerifier, es256: SigningKey
) -> None:
    """The classic confusion: HS256 'signed' with the public key must never verify."""
    token = es256.sign(_claims())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    forged = header + token[token.index(".") :]
    assert "algorithm 'HS256' refused" in _refused(verifier, forged)


def test_a_token_signed_by_another_key_is_refused(verifier: LocalTokenVerifier) -> None:
    other = SigningKey("ES256")
    token = other.sign(_claims(), kid="unknown-kid")
    assert "no such key" in _refused(verifier, token)
    # Same kid as the trusted key, but another key's signature.
    trusted_kid = verifier.keys[0].kid
    assert "does not verify" in _refused(verifier, other.sign(_claims(), kid=trusted_kid))


def test_a_tampered_claim_breaks_the_signature(
    verifier: LocalTokenVerifier, es256: SigningKey
) -> None:
    header, _, signature = es256.sign(_claims()).split(".")
    forged = _claims(sub="system:serviceaccount:shop:admin")
    token = f"{header}.{b64url(json.dumps(forged).encode())}.{signature}"
    assert "does not verify" in _refused(verifier, token)


def test_algorithm_of_the_header_must_match_the_key(
    verifier: LocalTokenVerifier, es256: SigningKey
) -> None:
    """An RS256 header over an EC-only key set finds no key to try."""
    _, claims, signature = es256.sign(_claims()).split(".")
    header = b64url(json.dumps({"alg": "RS256", "kid": verifier.keys[0].kid}).encode())
    assert "no such key" in _refused(verifier, f"{header}.{claims}.{signature}")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "https://other"}, "issuer is not"),
        ({"aud": ["kubernetes"]}, "audience 'istio-ca'"),
        ({"aud": None}, "audience 'istio-ca'"),
        ({"exp": None}, "no numeric 'exp'"),
        ({"exp": "tomorrow"}, "no numeric 'exp'"),
        ({"exp": int(NOW) - 61}, "expired"),
        ({"nbf": int(NOW) + 61}, "'nbf' is in the future"),
        ({"iat": int(NOW) + 3600}, "'iat' is in the future"),
        ({"sub": None}, "no 'sub'"),
        ({"sub": "alice"}, "not a service account token"),
        ({"sub": "system:serviceaccount:shop"}, "invalid service account"),
        (
            {"kubernetes.io": {"namespace": "other", "serviceaccount": {"name": "reviews"}}},
            "do not match its 'sub'",
        ),
        ({"kubernetes.io": "shop"}, "do not match its 'sub'"),
    ],
)
def test_claims_refused_with_the_reason(
    verifier: LocalTokenVerifier, es256: SigningKey, overrides: dict[str, Any], reason: str
) -> None:
    assert reason in _refused(verifier, es256.sign(_claims(**overrides)))


def test_small_clock_skew_is_tolerated(verifier: LocalTokenVerifier, es256: SigningKey) -> None:
    token = es256.sign(_claims(exp=int(NOW) - 30, nbf=int(NOW) + 30))
    assert verifier.verify(token).service_account == "reviews"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("a.b", "not a JWT"),
        ("a.b.c.d", "not a JWT"),
        ("!!!.e30.", "header is not base64url"),
        (b64url(b"[1]") + ".e30.", "header is not a JSON object"),
        (b64url(b"{nope") + ".e30.", "header is not JSON"),
        ("x" * 9000, "longer than 8192 bytes"),
    ],
)
def test_malformed_tokens_are_refused(
    verifier: LocalTokenVerifier, token: str, reason: str
) -> None:
    assert reason in _refused(verifier, token)
    assert not verifier.issued_here(token)


def test_crit_header_is_refused(verifier: LocalTokenVerifier, es256: SigningKey) -> None:
    _, claims, signature = es256.sign(_claims()).split(".")
    header = b64url(json.dumps({"alg": "ES256", "crit": ["exp"], "exp": 1}).encode())
    assert "'crit'" in _refused(verifier, f"{header}.{claims}.{signature}")


def test_a_short_es256_signature_is_refused(
    verifier: LocalTokenVerifier, es256: SigningKey
) -> None:
    header, claims, signature = es256.sign(_claims()).split(".")
    short = b64url(base64.urlsafe_b64decode(signature + "==")[:40])
    assert "does not verify" in _refused(verifier, f"{header}.{claims}.{short}")


# --- key files ---------------------------------------------------------------------------------


def test_pem_public_key_and_certificate_are_accepted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert [k.algorithm for k in load_keys(pem)] == ["ES256"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert [k.algorithm for k in load_keys(cert_file)] == ["ES256"]


def _pem(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_unusable_key_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cases = {
        "missing.pem": (None, "No such file"),
        "p384.pem": (
            ec_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "ES256 needs P-256",
        ),
        "rsa1024.pem": (
            small_rsa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "1024 bits",
        ),
        "private.pem": (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "holds a private key",
        ),
        "garbage.pem": (b"hello", "not a PEM public key or JWK Set"),
        "nokeys.json": (b'{"keys": 1}', '"keys" list'),
        "oct.json": (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no ES256 or RS256"),
        "badjson.json": (b"{nope", "not valid JSON"),
        "big.json": (b"{" + b" " * 300_000 + b"}", "larger than"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(TokenIssuerError) as caught:
            load_keys(path)
        assert str(path) in str(caught.value) and reason in str(caught.value), caught.value


def test_empty_issuer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenIssuerError, match="empty issuer"):
        LocalTokenVerifier("", [], "cluster.local")


# --- in the Authenticator, beside TokenReview ----------------------------------------------


class CountingReviewer:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def review_token(self, token: str, audiences: list[str]) -> TokenReviewResult:
        self.tokens.append(token)
        return TokenReviewResult(
            True,
            "system:serviceaccount:kube:from-review",
            ("system:serviceaccounts",),
            ("istio-ca",),
        )


async def test_authenticator_checks_local_tokens_locally_and_others_with_tokenreview(
    tmp_path: Path,
) -> None:
    issuer = TokenIssuer(ISSUER)
    key_file = issuer.write_public_key(tmp_path / "issuer.pem")
    reviewer = CountingReviewer()
    authenticator = Authenticator(
        "cluster.local",
        reviewer=reviewer,
        local=LocalTokenVerifier.load(key_file, ISSUER, "cluster.local"),
    )
    local = issuer.mint("shop", "ratings", "ratings-v1-0")
    assert await authenticator.authenticate_token(local) == Identity(
        "cluster.local", "shop", "ratings"
    )
    assert reviewer.tokens == []
    # Another issuer's token goes to TokenReview.
    other = SigningKey("ES256").sign({**_claims(), "iss": "https://kubernetes.default.svc"})
    identity = await authenticator.authenticate_token(other)
    assert identity.service_account == "from-review" and reviewer.tokens == [other]
    # A token naming the local issuer but failing its checks is refused, not sent elsewhere.
    expired = issuer.mint("shop", "ratings", "ratings-v1-0", now=time.time() - 2 * 86400)
    with pytest.raises(AuthenticationFailed, match="expired"):
        await authenticator.authenticate_token(expired)
    assert reviewer.tokens == [other]


def test_minted_tokens_look_like_projected_tokens() -> None:
    token = TokenIssuer(ISSUER).mint("shop", "details", "details-v1-0")
    parts = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    assert header["alg"] == "ES256" and header["kid"]
    assert claims["sub"] == "system:serviceaccount:shop:details"
    assert claims["aud"] == ["istio-ca"] and claims["iss"] == ISSUER
    assert claims["kubernetes.io"]["pod"]["name"] == "details-v1-0"
    assert claims["exp"] > claims["iat"] == claims["nbf"]
