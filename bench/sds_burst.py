"""A burst of new proxies asking for their workload certificate over SDS, on the TLS ADS port.

    .venv/bin/python -m bench.sds_burst                       # 500 new proxies, 50 others
    .venv/bin/python -m bench.sds_burst --burst 100 --others 10 --json out.json

The server (its own process, as istiolite runs): the ADS service with per-stream token
authentication and workload certificates from the mesh CA, behind TLS, over a 20-service mesh
whose EndpointSlice `svc-0` the benchmark churns. The clients (this process, real gRPC over TLS):
`--others` proxies subscribed to CDS and to the endpoints of svc-0, then `--burst` new proxies,
each with its own service account (so each needs its own certificate), opening their stream at
the same moment and asking for `default` + `ROOTCA`.

Measured, in one run:
- time from the burst's start until every new proxy has its `default`; certificates per second
  that makes, against the raw `cryptography` rate of the same signing code (key + certificate,
  one thread, in the server process, before the burst);
- endpoint-churn push latency to the others (a change of svc-0's endpoints every
  `--churn-every` s: from just before the change until each proxy holds the new endpoint), before
  and during the burst: p50 / p99 / max.
Targets are printed next to the numbers, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from istiolite import type_urls
from istiolite.model.kinds import parse_object
from istiolite.security.identity import Identity

DOMAIN = "cluster.local"
NAMESPACE = "bench"
SERVER_NAME = "istiod.istio-system.svc"
SERVICES = 20
CHURN_CLUSTER = f"outbound|80||svc-0.{NAMESPACE}.svc.{DOMAIN}"
# What the baseline burst asks for: endpoints that do not churn, so it gets no pushes.
QUIET_CLUSTER = f"outbound|80||svc-1.{NAMESPACE}.svc.{DOMAIN}"
SECRET = type_urls.SECRET
STREAMS_PER_CHANNEL = 50


# -- the server process --------------------------------------------------------------------------


def _endpoint_ip(generation: int) -> str:
    return f"10.200.{generation // 250 % 250}.{generation % 250 + 1}"


def _service(i: int, generation: int = 0) -> list[dict[str, Any]]:
    name = f"svc-{i}"
    ips = [f"10.1.{i}.1", _endpoint_ip(generation) if i == 0 else f"10.1.{i}.2"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "clusterIP": f"10.96.0.{i + 1}",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-abc",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        },
    ]


def _parsed(raws: list[dict[str, Any]]) -> dict[Any, Any]:
    return dict(parse_object(raw) for raw in raws)


def _serving_pair() -> tuple[bytes, bytes, bytes]:
    """(root PEM, serving chain PEM, serving key PEM) for the TLS port, named as istiod."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sds bench")])
    now = datetime.datetime.now(datetime.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return root.public_bytes(pem), leaf.public_bytes(pem), key_pem


def _mesh_ca() -> Any:
    """The mesh CA istiolite runs (in memory)."""
    from istiolite.security.ca import MeshCA  # type: ignore[import-not-found, unused-ignore]

    return MeshCA.load(None, DOMAIN)


def _raw_rate(ca: Any, samples: int) -> float:
    """Certificates per second of the CA's own signing code (fresh key + certificate), one
    thread, nothing else running."""
    identity = Identity(DOMAIN, NAMESPACE, "raw")
    ttl = datetime.timedelta(hours=24)
    started = time.perf_counter()
    for _ in range(samples):
        ca._issue_sync(identity, ttl)
    return samples / (time.perf_counter() - started)


class _TokenAuthenticator:
    """`Bearer tok-<account>` → spiffe://cluster.local/ns/bench/sa/<account> (the TokenReview
    round trip is not what this measures)."""

    async def authenticate(self, context: Any) -> Identity:
        token = dict(context.invocation_metadata() or ()).get("authorization", "")
        account = str(token).removeprefix("Bearer tok-")
        if account == token or not account:
            raise PermissionError("no bench token")
        return Identity(DOMAIN, NAMESPACE, account)


def server_main(conn: Connection, raw_samples: int, profile: bool) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile() if profile else None
    asyncio.run(_serve(conn, raw_samples, profiler))
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)


async def _serve(conn: Connection, raw_samples: int, profile: Any) -> None:
    from istiolite.logs import configure_logging

    configure_logging("console", "warning")
    from istiolite.model.store import ConfigStore
    from istiolite.networking.generator import ConfigGenerator
    from istiolite.push.cache import ResourceCache
    from istiolite.push.context import PushContext
    from istiolite.push.pusher import Pusher
    from istiolite.server import GRPC_OPTIONS
    from istiolite.xds.ads import AdsService
    from istiolite.xds.workload_certs import WorkloadCerts

    ca = _mesh_ca()
    raw = _raw_rate(ca, raw_samples)
    store, cache = ConfigStore(), ResourceCache()
    certs = WorkloadCerts(ca)
    ads = AdsService(
        PushContext({}, domain=DOMAIN, version="empty"),
        generator=ConfigGenerator(cache),
        workload_certs=certs,
    )
    pusher = Pusher(store, cache, domain=DOMAIN, publish=ads.update, connected=lambda: 0)
    pusher.start()
    # One source per service (as one file each): a churn replaces svc-0's source.
    loaded = [
        (time.monotonic(), store.replace_source(f"svc-{i}", _parsed(_service(i))))
        for i in range(SERVICES)
    ]
    pusher.push(loaded)
    root_pem, chain_pem, key_pem = _serving_pair()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    ads.register(server, authenticator=_TokenAuthenticator())
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, chain_pem)])
    )
    await server.start()
    conn.send(("ready", port, root_pem, raw))
    loop = asyncio.get_running_loop()
    try:
        while True:
            command, *args = await loop.run_in_executor(None, conn.recv)
            if command == "churn":
                (generation,) = args
                changed = _parsed(_service(0, generation))
                at = time.monotonic()
                pusher.push([(at, store.replace_source("svc-0", changed))])
                conn.send(at)
            elif command == "profile":
                if profile is not None:
                    (profile.enable if args[0] else profile.disable)()
                conn.send(None)
            elif command == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                conn.send(
                    {"cpu_s": usage.ru_utime + usage.ru_stime, "streams": len(ads.connections)}
                )
            else:
                break
    finally:
        await server.stop(None)
        await certs.close()
        conn.send("stopped")


# -- the clients ---------------------------------------------------------------------------------


def _node(pod: str, account: str) -> Any:
    metadata = struct_pb2.Struct()
    metadata.update(
        {"NAMESPACE": NAMESPACE, "SERVICE_ACCOUNT": account, "INTERCEPTION_MODE": "NONE"}
    )
    node_id = f"sidecar~10.9.0.1~{pod}.{NAMESPACE}~{NAMESPACE}.svc.{DOMAIN}"
    return discovery_pb2.DiscoveryRequest().node.__class__(id=node_id, metadata=metadata)


def _channel(port: int, root_pem: bytes) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem)
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)


@dataclass
class Watcher:
    """One of the others: CDS + the endpoints of svc-0; notes when each generation arrives."""

    arrivals: dict[int, float] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def _watch(
    stub: Any, index: int, watcher: Watcher, ip_generation: dict[str, int], stop: asyncio.Event
) -> None:
    requests: asyncio.Queue[Any] = asyncio.Queue()
    first = discovery_pb2.DiscoveryRequest(
        node=_node(f"other-{index}", f"other-{index}"),
        type_url=type_urls.ENDPOINT,
        resource_names=[CHURN_CLUSTER],
    )
    requests.put_nowait(first)

    async def outgoing() -> Any:
        while True:
            yield await requests.get()

    call = stub.StreamAggregatedResources(
        outgoing(), metadata=[("authorization", f"Bearer tok-other-{index}")]
    )
    reader = asyncio.ensure_future(call.read())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                return
            response = reader.result()
            if response is grpc.aio.EOF:
                return
            now = time.monotonic()
            for any_msg in response.resources:
                cla = endpoint_pb2.ClusterLoadAssignment.FromString(any_msg.value)
                for group in cla.endpoints:
                    for lb in group.lb_endpoints:
                        generation = ip_generation.get(lb.endpoint.address.socket_address.address)
                        if generation is not None:
                            watcher.arrivals.setdefault(generation, now)
            watcher.ready.set()
            requests.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    resource_names=[CHURN_CLUSTER],
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )
            reader = asyncio.ensure_future(call.read())
    finally:
        reader.cancel()
        stopped.cancel()
        call.cancel()


async def _new_proxy(
    stub: Any,
    index: int,
    arrived: asyncio.Future[float],
    hold: asyncio.Event,
    *,
    sds: bool = True,
    prefix: str = "new",
    identities: int = 0,
) -> None:
    """Opens a stream as new proxy `index` (its own service account) asking for its
    certificate (`sds`; else for the endpoints of svc-1, which do not churn: the same stream
    without a certificate); sets `arrived` when that is there; holds the stream open until
    `hold`."""
    account = f"{prefix}-{index % identities if identities else index}"
    request = discovery_pb2.DiscoveryRequest(
        node=_node(f"{prefix}-{index}", account),
        type_url=SECRET if sds else type_urls.ENDPOINT,
        resource_names=["default", "ROOTCA"] if sds else [QUIET_CLUSTER],
    )

    async def outgoing() -> Any:
        yield request
        await hold.wait()

    call = stub.StreamAggregatedResources(
        outgoing(), metadata=[("authorization", f"Bearer tok-{account}")]
    )
    try:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise RuntimeError(f"{prefix}-{index}: stream ended before its answer")
            if not sds:
                arrived.set_result(time.monotonic())
                await hold.wait()
                return
            for any_msg in response.resources:
                secret = secret_pb2.Secret.FromString(any_msg.value)
                if secret.name == "default" and secret.tls_certificate.private_key.inline_bytes:
                    arrived.set_result(time.monotonic())
                    await hold.wait()
                    return
    finally:
        call.cancel()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
    }


@dataclass
class Result:
    burst: int
    identities: int
    others: int
    baseline_s: float
    raw_certs_per_s: float
    all_delivered_s: float
    certs_per_s: float
    ratio: float
    churn_before: dict[str, float]
    churn_during: dict[str, float]
    server_cpu_s: float
    client_cpu_s: float


async def _run(args: argparse.Namespace) -> Result:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=server_main, args=(child, args.raw_samples, args.profile), daemon=True
    )
    proc.start()
    loop = asyncio.get_running_loop()
    try:

        def receive() -> Any:
            # The server process may die (an import error, a crash): say so, never hang.
            while not parent.poll(0.5):
                if not proc.is_alive():
                    raise RuntimeError(f"the server process exited ({proc.exitcode})")
            return parent.recv()

        _, port, root_pem, raw_rate = await loop.run_in_executor(None, receive)

        async def command(*message: Any) -> Any:
            parent.send(message)
            return await loop.run_in_executor(None, receive)

        channels = [_channel(port, root_pem) for _ in range(args.burst // STREAMS_PER_CHANNEL + 2)]
        stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
        ip_generation: dict[str, int] = {}
        stop = asyncio.Event()
        watchers = [Watcher() for _ in range(args.others)]
        watch_tasks = [
            asyncio.ensure_future(_watch(stubs[-1], i, w, ip_generation, stop))
            for i, w in enumerate(watchers)
        ]
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 60)
        generation = 0
        changed_at: dict[int, float] = {}

        async def churn(rounds: int | None, until: asyncio.Event | None) -> list[int]:
            nonlocal generation
            done: list[int] = []
            while (rounds is None or len(done) < rounds) and not (until and until.is_set()):
                generation += 1
                ip_generation[_endpoint_ip(generation)] = generation
                changed_at[generation] = await command("churn", generation)
                done.append(generation)
                await asyncio.sleep(args.churn_every)
            return done

        before = await churn(args.churn_rounds, None)

        async def burst(*, sds: bool, prefix: str) -> tuple[float, list[int], Any, Any]:
            """(start → last answer, churns meanwhile, the streams, their release)."""
            hold, burst_done = asyncio.Event(), asyncio.Event()
            started = time.monotonic()
            arrived = [loop.create_future() for _ in range(args.burst)]
            new = [
                asyncio.ensure_future(
                    _new_proxy(
                        stubs[i // STREAMS_PER_CHANNEL],
                        i,
                        arrived[i],
                        hold,
                        sds=sds,
                        prefix=prefix,
                        identities=args.identities,
                    )
                )
                for i in range(args.burst)
            ]
            churning = asyncio.ensure_future(churn(None, burst_done))
            # A stream that fails fails its task: surface that instead of waiting for ever.
            waiting = asyncio.ensure_future(asyncio.gather(*arrived))
            failed = asyncio.ensure_future(_first_failure(new))
            await asyncio.wait({waiting, failed}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                if failed.done():
                    failed.result()
                raise TimeoutError("the burst was not delivered within 300 s")
            failed.cancel()
            last = max(waiting.result()) - started
            burst_done.set()
            return last, await churning, new, hold

        # Every channel's TLS handshake done before anything is timed.
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 30)
        # The same burst without certificates first: what the streams themselves cost.
        baseline, _, plain, plain_hold = await burst(sds=False, prefix="plain")
        plain_hold.set()
        await asyncio.gather(*plain, return_exceptions=True)
        await command("profile", True)
        client_cpu0 = time.process_time()
        last, during, new, hold = await burst(sds=True, prefix="new")
        await command("profile", False)
        await asyncio.sleep(1.0)  # the last churn's pushes
        client_cpu = time.process_time() - client_cpu0
        stats = await command("stats")
        hold.set()
        await asyncio.gather(*new, return_exceptions=True)
        stop.set()
        await asyncio.gather(*watch_tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()

        def latencies(generations: list[int]) -> list[float]:
            return [
                w.arrivals[g] - changed_at[g]
                for g in generations
                for w in watchers
                if g in w.arrivals
            ]

        rate = args.burst / last
        return Result(
            burst=args.burst,
            identities=args.identities,
            others=args.others,
            baseline_s=baseline,
            raw_certs_per_s=raw_rate,
            all_delivered_s=last,
            certs_per_s=rate,
            ratio=rate / raw_rate,
            churn_before=_percentiles(latencies(before)),
            churn_during=_percentiles(latencies(during)),
            server_cpu_s=stats["cpu_s"],
            client_cpu_s=client_cpu,
        )
    finally:
        if proc.is_alive():
            parent.send(("stop",))
            proc.join(timeout=15)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)


async def _first_failure(tasks: list[asyncio.Future[None]]) -> None:
    """Raises the first error of a new proxy's stream (they end only when let go)."""
    for finished in asyncio.as_completed(tasks):
        await finished


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def report(result: Result) -> str:
    before, during = result.churn_before, result.churn_during
    rows = [
        ("new proxies", f"{result.burst}", f"{result.identities or result.burst} identities"),
        ("burst start → every `default` delivered", f"{result.all_delivered_s:.2f} s", ""),
        (
            "same burst of streams without a certificate (EDS)",
            f"{result.baseline_s:.2f} s",
            "what the streams cost",
        ),
        (
            "certificates per second beyond that stream cost",
            (
                f"{result.burst / (result.all_delivered_s - result.baseline_s):.0f}"
                if result.all_delivered_s > result.baseline_s
                else "- (within the noise)"
            ),
            "",
        ),
        ("certificates per second, SDS burst", f"{result.certs_per_s:.0f}", ""),
        ("raw signing rate (same code, one thread)", f"{result.raw_certs_per_s:.0f}", ""),
        ("SDS rate ÷ raw rate", f"{result.ratio:.0%}", "goal ≥ 80 %"),
        (
            f"EDS push latency to {result.others} others, quiet: p50 / p99 / max",
            f"{_ms(before.get('p50'))} / {_ms(before.get('p99'))} / {_ms(before.get('max'))}",
            f"n={before.get('n')}",
        ),
        (
            "same, during the burst: p50 / p99 / max",
            f"{_ms(during.get('p50'))} / {_ms(during.get('p99'))} / {_ms(during.get('max'))}",
            f"goal p99 < 1 s; n={during.get('n')}",
        ),
        ("server CPU (whole run)", f"{result.server_cpu_s:.1f} s", ""),
        ("client CPU during the burst", f"{result.client_cpu_s:.1f} s", "shares the 2 cores"),
    ]
    lines = ["| | value | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sds_burst", description=__doc__)
    parser.add_argument("--burst", type=int, default=500, help="new proxies (default 500)")
    parser.add_argument("--others", type=int, default=50, help="connected proxies (default 50)")
    parser.add_argument(
        "--identities",
        type=int,
        default=0,
        help="service accounts the new proxies share (default 0: each its own)",
    )
    parser.add_argument("--churn-every", type=float, default=0.2, metavar="S")
    parser.add_argument("--churn-rounds", type=int, default=10, help="churns before the burst")
    parser.add_argument("--raw-samples", type=int, default=300)
    parser.add_argument("--json", default=None, metavar="FILE")
    parser.add_argument(
        "--profile", action="store_true", help="the server under cProfile during the SDS burst"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    print(report(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(asdict(result), out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
