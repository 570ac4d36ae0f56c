"""`serve --token-issuer-key`: the secure port accepts service-account tokens of a local issuer
with no Kubernetes API at all (the real process, real TLS, the Istio CA API as pilot-agent calls
it); a token the issuer did not sign, or not for `istio-ca`, is Unauthenticated; an unusable key
file stops `serve` with a message naming it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from istiolite._generated.istio.v1.auth import ca_pb2
from istiolite.demo.mesh.tokens import TokenIssuer
from tests.support.processes import IstioliteProcess

CREATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
ISSUER = "https://issuer.local.test"
ISSUING = TokenIssuer(ISSUER)
Served = tuple[IstioliteProcess, Path]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("local-issuer")
    (work / "config").mkdir()
    key_file = ISSUING.write_public_key(work / "issuer.pem")
    istiolite = IstioliteProcess(
        [work / "config"], work,
        "--ca-dir", str(work / "ca"),
        "--token-issuer-key", str(key_file),
        "--token-issuer", ISSUER,
    )  # fmt: skip
    try:
        yield istiolite, work / "ca" / "root-cert.pem"
    finally:
        istiolite.stop()


def _create(served: Served, token: str) -> list[x509.Certificate]:
    istiolite, root = served
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    creds = grpc.ssl_channel_credentials(root_certificates=root.read_bytes())
    with grpc.secure_channel(
        f"127.0.0.1:{istiolite.secure_grpc_port}",
        creds,
        options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")],
    ) as channel:
        call = channel.unary_unary(
            CREATE,
            request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
            response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
        )
        reply = call(
            ca_pb2.IstioCertificateRequest(csr=csr.decode(), validity_duration=3600),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=20,
        )
    return [x509.load_pem_x509_certificate(pem.encode()) for pem in reply.cert_chain]


def test_a_local_token_gets_a_certificate_of_its_service_account(served: Served) -> None:
    chain = _create(served, ISSUING.mint("shop", "reviews", "reviews-v1-0"))
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/shop/sa/reviews"
    ]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (TokenIssuer(ISSUER).mint("shop", "reviews", "p"), "does not verify"),
        (ISSUING.mint("shop", "reviews", "p", audiences=("api",)), "audience 'istio-ca'"),
        (ISSUING.mint("shop", "reviews", "p", now=1_000_000_000), "expired"),
        (TokenIssuer("https://elsewhere").mint("shop", "reviews", "p"), "TokenReview"),
    ],
    ids=["other-key", "wrong-audience", "expired", "other-issuer-needs-tokenreview"],
)
def test_a_bad_token_is_unauthenticated_with_the_reason(
    served: Served, token: str, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _create(served, token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in (caught.value.details() or "")


def test_an_unusable_key_file_stops_serve_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    bad = tmp_path / "issuer.pem"
    bad.write_text("not a key")
    result = subprocess.run(
        [sys.executable, "-m", "istiolite.cli", "serve", "--config-dir", str(tmp_path / "config"),
         "--token-issuer-key", str(bad), "--grpc-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0",
         "--secure-grpc-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"--token-issuer-key {bad}: not a PEM public key or JWK Set" in result.stderr
    assert "Traceback" not in result.stderr
