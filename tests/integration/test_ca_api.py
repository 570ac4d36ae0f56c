"""The Istio CA API on a real `istiolite serve`'s secure port, called as pilot-agent calls it:
TLS verified against the mesh root, `authorization: Bearer <token>` checked with TokenReview
against the test Kubernetes API server, `ClusterID` metadata, an RSA 2048 CSR."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from istiolite._generated.istio.v1.auth import ca_pb2
from tests.support.kube_apiserver import KubeApiServer
from tests.support.processes import IstioliteProcess

CREATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
CA_SERVICE = "istio.v1.auth.IstioCertificateService"


@dataclass
class Running:
    istiolite: IstioliteProcess
    apiserver: KubeApiServer
    ca_dir: Path

    def channel(self, cert: tuple[bytes, bytes] | None = None) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=(self.ca_dir / "root-cert.pem").read_bytes(),
            private_key=cert[1] if cert else None,
            certificate_chain=cert[0] if cert else None,
        )
        # pilot-agent dials istiod.istio-system.svc:15012 and checks that name.
        return grpc.secure_channel(
            f"127.0.0.1:{self.istiolite.secure_grpc_port}",
            creds,
            options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")],
        )

    def create(
        self,
        csr: bytes,
        *,
        token: str | None = None,
        cert: tuple[bytes, bytes] | None = None,
        validity: int = 86400,
    ) -> list[bytes]:
        metadata = [("clusterid", "Kubernetes")]
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        request = ca_pb2.IstioCertificateRequest(csr=csr.decode(), validity_duration=validity)
        request.metadata.update({"ClusterID": "Kubernetes", "WorkloadName": "reviews-v1"})
        with self.channel(cert) as channel:
            call = channel.unary_unary(
                CREATE,
                request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
            )
            response = call(request, metadata=metadata, timeout=20)
        return [pem.encode() for pem in response.cert_chain]

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.istiolite.monitoring_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    work = tmp_path_factory.mktemp("ca-api")
    config = work / "config"
    config.mkdir()
    with KubeApiServer() as apiserver:
        kubeconfig = apiserver.write_kubeconfig(work / "kubeconfig")
        istiolite = IstioliteProcess(
            [config],
            work,
            "--ca-dir", str(work / "ca"),
            "--kubeconfig", str(kubeconfig),
            "--max-workload-cert-ttl", "48h",
            "--extra-san", "istiolite.test",
            "--log-level", "debug",
        )  # fmt: skip
        try:
            yield Running(istiolite, apiserver, work / "ca")
        finally:
            istiolite.stop()


def _csr(key: rsa.RSAPrivateKey, uri: str) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_csr_signed_for_the_tokens_identity_not_the_csrs(running: Running) -> None:
    token = running.apiserver.add_token("shop", "reviews")
    key = _rsa()
    chain = running.create(_csr(key, "spiffe://cluster.local/ns/kube-system/sa/admin"), token=token)

    assert len(chain) >= 2
    certs = [x509.load_pem_x509_certificate(pem) for pem in chain]
    assert _uris(certs[0]) == ["spiffe://cluster.local/ns/shop/sa/reviews"]
    assert chain[-1] == (running.ca_dir / "root-cert.pem").read_bytes()
    assert _spki(certs[0].public_key()) == _spki(key.public_key())
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    life = certs[0].not_valid_after_utc - certs[0].not_valid_before_utc
    assert life.total_seconds() == 86400 + 120
    (review,) = [r for r in running.apiserver.reviews() if r.body["spec"]["token"] == token]
    assert review.body["spec"]["audiences"] == ["istio-ca"]


def test_validity_capped_at_the_maximum(running: Running) -> None:
    token = running.apiserver.add_token("shop", "ratings")
    chain = running.create(_csr(_rsa(), "spiffe://x/ns/a/sa/b"), token=token, validity=10**12)
    leaf = x509.load_pem_x509_certificate(chain[0])
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 48 * 3600 + 120


@pytest.mark.parametrize("case", ["bad token", "wrong audience", "no token"])
def test_unauthenticated_callers(running: Running, case: str) -> None:
    token = {
        "bad token": "sa.not-a-real-token",
        "wrong audience": running.apiserver.add_token("shop", "reviews", audiences=("vault",)),
        "no token": None,
    }[case]
    before = running.metrics()
    with pytest.raises(grpc.RpcError) as err:
        running.create(_csr(_rsa(), "spiffe://cluster.local/ns/shop/sa/reviews"), token=token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    details = err.value.details()  # type: ignore[attr-defined]
    assert details.startswith("request authenticate failure:")
    if token:
        assert token not in details
    assert _counter(running.metrics(), "citadel_server_authentication_failure_count") == (
        _counter(before, "citadel_server_authentication_failure_count") + 1
    )


def test_mesh_client_certificate_needs_no_token(running: Running) -> None:
    token = running.apiserver.add_token("shop", "details")
    key = _rsa()
    chain = running.create(_csr(key, "spiffe://cluster.local/ns/shop/sa/details"), token=token)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    reviews_before = len(running.apiserver.reviews())
    renewed = running.create(
        _csr(_rsa(), "spiffe://cluster.local/ns/other/sa/x"), cert=(chain[0], key_pem)
    )
    leaf = x509.load_pem_x509_certificate(renewed[0])
    assert _uris(leaf) == ["spiffe://cluster.local/ns/shop/sa/details"]
    assert len(running.apiserver.reviews()) == reviews_before  # no TokenReview needed


def test_broken_csr_is_invalid_argument(running: Running) -> None:
    token = running.apiserver.add_token("shop", "reviews")
    csr = bytearray(_csr(_rsa(), "spiffe://x/ns/a/sa/b"))
    der = bytearray(x509.load_pem_x509_csr(bytes(csr)).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x55
    broken = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(grpc.RpcError) as err:
        running.create(broken, token=token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "signature" in err.value.details()  # type: ignore[attr-defined]


def test_secure_port_serves_health_and_reflection_lists_the_ca(running: Running) -> None:
    with running.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert CA_SERVICE in names
    assert "envoy.service.discovery.v3.AggregatedDiscoveryService" in names
    # The CA API is on the secure port only.
    with grpc.insecure_channel(f"127.0.0.1:{running.istiolite.grpc_port}") as plain:
        call = plain.unary_unary(CREATE)
        with pytest.raises(grpc.RpcError) as err:
            call(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_grpcurl_style_describe_of_the_ca_service(running: Running) -> None:
    """A reflection client can fetch the service's file descriptor (grpcurl describe)."""
    with running.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=CA_SERVICE)]),
                timeout=10,
            )
        )
    (response,) = responses
    files = response.file_descriptor_response.file_descriptor_proto
    assert files, response
    names = set()
    for raw in files:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        names.add(proto.name)
        if proto.name == "istio/v1/auth/ca.proto":
            (service,) = proto.service
            assert [m.name for m in service.method] == ["CreateCertificate"]
    assert "istio/v1/auth/ca.proto" in names


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_and_no_key_anywhere(running: Running) -> None:
    token = running.apiserver.add_token("shop", "reviews")
    running.create(_csr(_rsa(), "spiffe://x/ns/a/sa/b"), token=token)
    text = running.metrics()
    assert _counter(text, "citadel_server_csr_count") >= 1
    assert _counter(text, "citadel_server_success_cert_issuance_count") >= 1
    root = x509.load_pem_x509_certificate((running.ca_dir / "root-cert.pem").read_bytes())
    assert _counter(text, "citadel_server_root_cert_expiry_timestamp") == pytest.approx(
        root.not_valid_after_utc.timestamp()
    )

    key_pem = (running.ca_dir / "ca-key.pem").read_bytes()
    assert (running.ca_dir / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    body = b"".join(line for line in key_pem.splitlines() if b"-----" not in line)
    der_b64 = base64.b64encode(base64.b64decode(body))
    secrets = [key_pem.decode(), body.decode(), der_b64.decode(), body.decode()[:40]]
    pages = [text, running.istiolite.log()]
    for path in ("/debug/syncz", "/debug/config_dump", "/debug/configz", "/debug/registryz"):
        url = f"http://127.0.0.1:{running.istiolite.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                pages.append(resp.read().decode(errors="replace"))
        except urllib.error.HTTPError as err:
            pages.append(err.read().decode(errors="replace"))
    for page in pages:
        for secret in secrets:
            assert secret not in page
        assert "PRIVATE KEY" not in page


def test_restart_reuses_the_root_and_a_broken_ca_dir_is_named(
    running: Running, tmp_path: Path
) -> None:
    root = (running.ca_dir / "root-cert.pem").read_bytes()
    config = tmp_path / "config"
    config.mkdir()
    again = IstioliteProcess([config], tmp_path, "--ca-dir", str(running.ca_dir))
    try:
        with grpc.secure_channel(
            f"127.0.0.1:{again.secure_grpc_port}",
            grpc.ssl_channel_credentials(root_certificates=root),
            options=[("grpc.ssl_target_name_override", "istiod")],
        ) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        again.stop()
    assert (running.ca_dir / "root-cert.pem").read_bytes() == root

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "root-cert.pem").write_bytes(root)
    (broken / "ca-key.pem").write_bytes(b"not a key")
    result = subprocess.run(
        [sys.executable, "-m", "istiolite.cli", "serve", "--config-dir", str(config),
         "--ca-dir", str(broken), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
         "--monitoring-addr", "127.0.0.1:0", "--secure-grpc-addr", "127.0.0.1:0",
         "--webhook-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{broken / 'ca-key.pem'}: not a PEM private key" in result.stderr
    assert "Traceback" not in result.stderr
