"""Benchmark: the mesh CA and the secure port.

(1) certificates per second through `IstioCertificateService/CreateCertificate` on a real
`istiolite serve`'s secure port (TLS, Bearer token checked by TokenReview against the test API
server, cached), N concurrent clients, against the raw `cryptography` rate of the same work (CSR
check + sign) in this process, in the same run;
(2) the secure port's TLS front end: time to receive a large CDS response over 15012 vs 15010.

    .venv/bin/python -m bench.ca_issuance [--clients 8] [--seconds 5] [--services 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.meshgen import write_mesh
from bench.startup import cpu_seconds
from istiolite import type_urls
from istiolite._generated.istio.v1.auth import ca_pb2
from istiolite.security.ca import MeshCA
from istiolite.security.identity import Identity
from tests.protocol.harness import make_node
from tests.support.kube_apiserver import KubeApiServer
from tests.support.processes import IstioliteProcess

CREATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"


def csr_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def raw_rate(csrs: list[bytes], seconds: float) -> float:
    """CSR check + leaf signing, single thread, the CA's own code without gRPC."""
    ca = MeshCA.load(None, "cluster.local")
    identity = Identity("cluster.local", "bench", "sa")
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ca._sign_csr_sync(csrs[done % len(csrs)], identity, timedelta(hours=24))
        done += 1
    ca.close()
    return done / (time.perf_counter() - start)


def secure_channel(root: bytes, port: int) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(root_certificates=root),
        options=[
            ("grpc.ssl_target_name_override", "istiod.istio-system.svc"),
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        ],
    )


async def grpc_rate(
    root: bytes,
    port: int,
    tokens: list[str],
    csrs: list[bytes],
    clients: int,
    seconds: float,
    *,
    plaintext: bool = False,
) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal done
        channel = (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            if plaintext
            else secure_channel(root, port)
        )
        async with channel:
            call = channel.unary_unary(
                CREATE,
                request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
            )
            metadata = [("authorization", f"Bearer {tokens[n % len(tokens)]}")]
            i = n
            while time.perf_counter() < stop:
                request = ca_pb2.IstioCertificateRequest(
                    csr=csrs[i % len(csrs)].decode(), validity_duration=86400
                )
                response = await call(request, metadata=metadata, timeout=30)
                assert len(response.cert_chain) == 2
                done += 1
                i += clients

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return done / (time.perf_counter() - start)


async def cds_fetch_times(channel: grpc.aio.Channel, repeats: int) -> tuple[list[float], int]:
    """Seconds from request to a complete CDS response, each on a new ADS stream."""
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    times, size = [], 0
    node = make_node(
        "sidecar~10.0.0.1~bench-0.ns-0~ns-0.svc.cluster.local",
        namespace="ns-0",
        interception_mode="NONE",
    )
    for _ in range(repeats):
        request = discovery_pb2.DiscoveryRequest(node=node, type_url=type_urls.CLUSTER)
        start = time.perf_counter()
        stream = stub.StreamAggregatedResources(iter([request]))
        response = await stream.read()
        times.append(time.perf_counter() - start)
        size = response.ByteSize()
        stream.cancel()
    return times, size


async def run(args: argparse.Namespace) -> None:
    csrs = [csr_pem() for _ in range(64)]
    with tempfile.TemporaryDirectory() as tmp, KubeApiServer() as apiserver:
        work = Path(tmp)
        config = work / "config"
        config.mkdir()
        write_mesh(config, args.services, 3)
        tokens = [apiserver.add_token("bench", f"sa-{i}") for i in range(args.clients)]
        istiolite = IstioliteProcess(
            [config],
            work,
            "--ca-dir", str(work / "ca"),
            "--kubeconfig", str(apiserver.write_kubeconfig(work / "kubeconfig")),
        )  # fmt: skip
        try:
            root = (work / "ca" / "root-cert.pem").read_bytes()
            port = istiolite.secure_grpc_port
            await grpc_rate(root, port, tokens, csrs, args.clients, 1.0)  # warm-up
            raw = raw_rate(csrs, args.seconds)
            cpu0, client0 = cpu_seconds(istiolite.proc.pid), time.process_time()
            rate = await grpc_rate(root, port, tokens, csrs, args.clients, args.seconds)
            cpu = cpu_seconds(istiolite.proc.pid) - cpu0
            client_cpu = time.process_time() - client0
            print(f"raw cryptography (CSR check + sign, 1 thread): {raw:8.0f} certs/s")
            print(
                f"CreateCertificate over gRPC+TLS, {args.clients} clients: {rate:8.0f} certs/s "
                f"({100 * rate / raw:.0f} % of raw; istiolite CPU {cpu / args.seconds:.2f} cores, "
                f"this client {client_cpu / args.seconds:.2f} cores)"
            )
            print(f"TokenReviews sent: {len(apiserver.reviews())} (cache: one per token)")
            # The same calls straight to the internal plaintext server: the front end's share.
            (internal,) = [
                int(str(e["address"]).rpartition(":")[2])
                for e in istiolite.log_events()
                if e.get("event") == "secure port internal server"
            ]
            direct = await grpc_rate(
                b"", internal, tokens, csrs, args.clients, args.seconds, plaintext=True
            )
            print(f"same, straight to the internal plaintext server:        {direct:8.0f} certs/s")

            plain = grpc.aio.insecure_channel(
                f"127.0.0.1:{istiolite.grpc_port}",
                options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
            )
            secure = secure_channel(root, port)
            async with plain, secure:
                await cds_fetch_times(plain, 2)  # warm the cache
                p_times, size = await cds_fetch_times(plain, args.repeats)
                s_times, _ = await cds_fetch_times(secure, args.repeats)
            p, s = statistics.median(p_times), statistics.median(s_times)
            mib = size / 1024 / 1024
            print(
                f"CDS response {mib:.2f} MiB ({args.services} services), median of {args.repeats}:"
            )
            print(f"  15010 plaintext : {p * 1000:7.1f} ms  ({mib / p:6.1f} MiB/s)")
            print(f"  15012 TLS front : {s * 1000:7.1f} ms  ({mib / s:6.1f} MiB/s)  x{s / p:.2f}")
        finally:
            istiolite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
