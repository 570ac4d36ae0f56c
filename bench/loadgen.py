"""Simulated Envoy sidecars: many ADS streams (SotW or Delta) that behave like Envoy and record
when each response arrived.

Each `SimProxy` owns one gRPC channel (one HTTP/2 connection, as each Envoy has) and one ADS
stream with a distinct sidecar node id. It subscribes to CDS and LDS as a wildcard, then to EDS
for every EDS cluster it was sent and to RDS for every route name its listeners' HTTP connection
managers reference; it ACKs every response at once (SotW: version_info + nonce + the current
names; Delta: the nonce). For every response it records the receive time, the type, how many
resources it carried and which names changed (SotW: compared with the previous response of that
type, byte for byte; Delta: the names sent plus the names removed).

Responses are taken off the wire as raw bytes (identity deserializer), so `rawsend` can replay
exactly what istiolite sent. Resources identical across proxies (most of them) are decoded once
per worker process: SotW resources are memoized by their bytes, Delta resources by (name,
version).

Proxies run in 1-2 worker processes (`Worker`), each with its own asyncio loop and grpc.aio, and
are driven from the benchmark process over a `multiprocessing` pipe (`WorkerHandle`). Times are
`time.monotonic()`, which is one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

_PREFIX = "type.googleapis.com/"
CDS = _PREFIX + "envoy.config.cluster.v3.Cluster"
EDS = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = _PREFIX + "envoy.config.listener.v3.Listener"
RDS = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SHORT = {CDS: "CDS", EDS: "EDS", LDS: "LDS", RDS: "RDS"}
TYPES = ("CDS", "EDS", "LDS", "RDS")
HCM_TYPE = _PREFIX + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_METHOD = ADS + "StreamAggregatedResources"
DELTA_METHOD = ADS + "DeltaAggregatedResources"

CHANNEL_OPTIONS = [
    # A connection per proxy, as with real Envoys: without this, grpc shares one subchannel (one
    # TCP connection) between channels to the same address.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


# ---------------------------------------------------------------------------------------------
# Who the simulated proxies are.


@dataclass(frozen=True)
class ProxySpec:
    index: int
    node_id: str
    namespace: str
    interception: str  # REDIRECT or NONE

    def node(self) -> base_pb2.Node:
        metadata = struct_pb2.Struct()
        pod = self.node_id.split("~")[2].split(".")[0]
        metadata.update(
            {
                "NAMESPACE": self.namespace,
                "INTERCEPTION_MODE": self.interception,
                "LABELS": {"app": pod},
                "SERVICE_ACCOUNT": "default",
                "ISTIO_VERSION": "1.22.0",
                "CLUSTER_ID": "Kubernetes",
            }
        )
        return base_pb2.Node(id=self.node_id, cluster=f"{pod}.{self.namespace}", metadata=metadata)


def proxy_specs(count: int, namespaces: int = 10, interception: str = "mixed") -> list[ProxySpec]:
    """`count` sidecars spread over the mesh's namespaces; `interception` REDIRECT, NONE or
    mixed (even proxies REDIRECT, odd NONE: two listener shapes, as in a mesh where some pods
    are not captured)."""
    specs = []
    for i in range(count):
        ns = f"ns-{i % namespaces}"
        ip = f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
        mode = interception.upper()
        if mode == "MIXED":
            mode = "REDIRECT" if i % 2 == 0 else "NONE"
        specs.append(
            ProxySpec(
                index=i,
                node_id=f"sidecar~{ip}~pod-{i}.{ns}~{ns}.svc.cluster.local",
                namespace=ns,
                interception=mode,
            )
        )
    return specs


# ---------------------------------------------------------------------------------------------
# Decoding, memoized per worker process.


@dataclass(frozen=True)
class Info:
    """What a proxy needs from one resource: its name, and what it makes the proxy ask for."""

    name: str
    eds_name: str | None = None  # CDS: the EDS service name of an EDS cluster
    routes: frozenset[str] = frozenset()  # LDS: RDS route names referenced


def _listener_routes(listener: listener_pb2.Listener) -> frozenset[str]:
    names: set[str] = set()
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    hcms = [f.typed_config for chain in chains for f in chain.filters]
    if listener.HasField("api_listener"):
        hcms.append(listener.api_listener.api_listener)
    for typed in hcms:
        if typed.type_url == HCM_TYPE:
            hcm = hcm_pb2.HttpConnectionManager.FromString(typed.value)
            if hcm.HasField("rds"):
                names.add(hcm.rds.route_config_name)
    return frozenset(names)


def decode_info(type_url: str, payload: bytes) -> Info:
    if type_url == CDS:
        cluster = cluster_pb2.Cluster.FromString(payload)
        eds = None
        if cluster.HasField("eds_cluster_config") or cluster.type == cluster_pb2.Cluster.EDS:
            eds = cluster.eds_cluster_config.service_name or cluster.name
        return Info(cluster.name, eds_name=eds)
    if type_url == EDS:
        return Info(endpoint_pb2.ClusterLoadAssignment.FromString(payload).cluster_name)
    if type_url == LDS:
        listener = listener_pb2.Listener.FromString(payload)
        return Info(listener.name, routes=_listener_routes(listener))
    if type_url == RDS:
        return Info(route_pb2.RouteConfiguration.FromString(payload).name)
    return Info("")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


_RESOURCES_TAG = 0x12  # field 2 (resources), length-delimited


def _resources_run(raw: bytes, resp: discovery_pb2.DiscoveryResponse) -> memoryview | None:
    """The bytes of every `resources` entry of a DiscoveryResponse, or None if they are not one
    contiguous run. The other fields are small: their total size is known from `resp`, and the
    ones before the run are skipped by walking their tags."""
    small = discovery_pb2.DiscoveryResponse(
        version_info=resp.version_info, type_url=resp.type_url, nonce=resp.nonce,
        canary=resp.canary,
    )  # fmt: skip
    if resp.HasField("control_plane"):
        small.control_plane.CopyFrom(resp.control_plane)
    body_len = len(raw) - small.ByteSize()
    if body_len <= 0:
        return memoryview(b"") if body_len == 0 and not resp.resources else None
    pos = 0
    try:
        while raw[pos] != _RESOURCES_TAG:
            tag, pos = _varint(raw, pos)
            if tag & 7 == 2:
                length, pos = _varint(raw, pos)
                pos += length
            elif tag & 7 == 0:
                _, pos = _varint(raw, pos)
            else:
                return None
    except IndexError:
        return None
    if pos + body_len > len(raw):
        return None
    return memoryview(raw)[pos : pos + body_len]  # read-only, so hashable; no copy


@dataclass(eq=False)
class Snapshot:
    """A SotW resource set: name → resource id (ids are equal iff the bytes are)."""

    ids: dict[str, int]
    eds_names: frozenset[str]
    routes: frozenset[str]


class Decoder:
    """Per-process memo of decoded resources and SotW snapshots, shared by every proxy."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self._by_bytes: dict[tuple[str, bytes], tuple[Info, int]] = {}
        self._by_body: dict[tuple[str, int, int], Snapshot] = {}
        self._sorted: dict[frozenset[str], list[str]] = {}
        self._by_version: dict[tuple[str, str, str], Info] = {}
        self._snapshots: dict[tuple[str, tuple[int, ...]], Snapshot] = {}
        self._diffs: dict[tuple[int, int], frozenset[str]] = {}
        self._next_id = 0
        self.slow_path = 0  # SotW responses decoded per resource (layout not recognised)
        self.empty = Snapshot({}, frozenset(), frozenset())

    def _trim(self) -> None:
        if len(self._by_bytes) > self.LIMIT or len(self._snapshots) > self.LIMIT // 100:
            # Live proxies keep their snapshots; only the memo is dropped.
            self._by_bytes.clear()
            self._snapshots.clear()
            self._diffs.clear()
        if len(self._by_version) > self.LIMIT:
            self._by_version.clear()

    def sotw_response(self, raw: bytes, resp: discovery_pb2.DiscoveryResponse) -> Snapshot:
        """The snapshot of a SotW response. Responses of one push differ between proxies only in
        version_info and nonce, so the run of `resources` entries on the wire (field 2, always
        contiguous here) identifies the set without touching each resource; if the bytes are not
        laid out that way, fall back to decoding per resource."""
        body = _resources_run(raw, resp)
        if body is None:
            self.slow_path += 1
            return self.sotw(resp.type_url, [a.value for a in resp.resources])
        key = (resp.type_url, len(body), hash(body))
        snap = self._by_body.get(key)
        if snap is None:
            snap = self.sotw(resp.type_url, [a.value for a in resp.resources])
            if len(self._by_body) > 256:
                self._by_body.clear()
            self._by_body[key] = snap
        return snap

    def sotw(self, type_url: str, payloads: list[bytes]) -> Snapshot:
        self._trim()
        entries = []
        for payload in payloads:
            key = (type_url, payload)
            hit = self._by_bytes.get(key)
            if hit is None:
                self._next_id += 1
                hit = (decode_info(type_url, payload), self._next_id)
                self._by_bytes[key] = hit
            entries.append(hit)
        skey = (type_url, tuple(rid for _, rid in entries))
        snap = self._snapshots.get(skey)
        if snap is None:
            snap = Snapshot(
                ids={info.name: rid for info, rid in entries},
                eds_names=frozenset(i.eds_name for i, _ in entries if i.eds_name),
                routes=frozenset(r for i, _ in entries for r in i.routes),
            )
            self._snapshots[skey] = snap
        return snap

    def sorted_names(self, names: frozenset[str]) -> list[str]:
        """Sorted, memoized: most proxies subscribe to the very same names."""
        found = self._sorted.get(names)
        if found is None:
            if len(self._sorted) > 1024:
                self._sorted.clear()
            found = self._sorted[names] = sorted(names)
        return found

    def diff(self, old: Snapshot, new: Snapshot) -> frozenset[str]:
        key = (id(old), id(new))
        found = self._diffs.get(key)
        if found is None:
            found = frozenset(
                n for n in old.ids.keys() | new.ids.keys() if old.ids.get(n) != new.ids.get(n)
            )
            if len(self._diffs) > self.LIMIT // 10:
                self._diffs.clear()
            self._diffs[key] = found
        return found

    def delta(self, type_url: str, name: str, version: str, payload: bytes) -> Info:
        key = (type_url, name, version)
        info = self._by_version.get(key)
        if info is None:
            info = decode_info(type_url, payload)
            self._by_version[key] = info
        return info


# ---------------------------------------------------------------------------------------------
# One simulated proxy.


@dataclass
class Event:
    t: float
    type: str
    resources: int
    changed: int
    hits: tuple[str, ...]
    size: int


@dataclass
class Progress:
    """What the benchmark polls while it waits: counters, not events."""

    responses: int = 0
    last_t: float = 0.0
    first_hits: Counter[tuple[str, str]] = field(default_factory=Counter)


_CLOSE = object()


class SimProxy:
    def __init__(
        self,
        spec: ProxySpec,
        *,
        delta: bool,
        target: str,
        decoder: Decoder,
        progress: Progress,
        capture: bool = False,
    ) -> None:
        self.spec = spec
        self.delta = delta
        self.decoder = decoder
        self.progress = progress
        self.capture = capture
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None
        self.responses = 0
        self.bytes = 0
        # Subscriptions and what has arrived.
        self.eds_wanted: frozenset[str] = frozenset()
        self.routes_wanted: frozenset[str] = frozenset()
        self.eds_have: set[str] = set()
        self.routes_have: set[str] = set()
        self.sotw_last: dict[str, Snapshot] = {}
        self.sotw_acked: dict[str, tuple[str, str]] = {}  # type → (version, nonce)
        self.delta_clusters: dict[str, str] = {}  # EDS cluster name → EDS service name
        self.delta_listeners: dict[str, frozenset[str]] = {}
        self.got: set[str] = set()  # types received at least once
        # Convergence: first time each condition held, and all of them at once.
        self.converged: dict[str, float] = {}
        # Per scenario.
        self.watch: frozenset[str] = frozenset()
        self.events: list[Event] = []
        self.first_hits: dict[tuple[str, str], float] = {}
        self.captured: list[tuple[float, bytes]] = []

    # -- wire --

    def start(self) -> None:
        method = DELTA_METHOD if self.delta else SOTW_METHOD
        call = self.channel.stream_stream(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )(self._request_stream())
        self.task = asyncio.create_task(self._read(call))
        node = self.spec.node()
        # The node goes on the first request only, as Envoy and pilot-agent send it.
        if self.delta:
            self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, node=node))
            self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=LDS))
        else:
            self._send(discovery_pb2.DiscoveryRequest(type_url=CDS, node=node))
            self._send(discovery_pb2.DiscoveryRequest(type_url=LDS))

    def _send(self, message: Any) -> None:
        self.requests.put_nowait(message)

    async def _request_stream(self) -> AsyncIterator[Any]:
        while True:
            item = await self.requests.get()
            if item is _CLOSE:
                return
            yield item

    async def _read(self, call: Any) -> None:
        try:
            async for raw in call:
                self.on_response(raw, time.monotonic())
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{err.code().name}: {err.details()}"
        except Exception as err:  # a decoding bug in the load generator: report it
            self.error = f"{type(err).__name__}: {err}"
        else:
            self.error = self.error or "stream closed by server"

    async def close(self) -> None:
        self.requests.put_nowait(_CLOSE)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.channel.close(grace=None)

    # -- behaviour --

    def on_response(self, raw: bytes, t: float) -> None:
        if self.delta:
            type_url, count, changed = self._on_delta(raw)
        else:
            type_url, count, changed = self._on_sotw(raw)
        kind = SHORT.get(type_url, type_url.rsplit(".", 1)[-1])
        self.responses += 1
        self.bytes += len(raw)
        self.got.add(kind)
        hits = tuple(sorted(changed & self.watch)) if self.watch else ()
        self.events.append(Event(t, kind, count, len(changed), hits, len(raw)))
        if self.capture:
            self.captured.append((t, raw))
        progress = self.progress
        progress.responses += 1
        progress.last_t = max(progress.last_t, t)
        for name in hits:
            key = (kind, name)
            if key not in self.first_hits:
                self.first_hits[key] = t
                progress.first_hits[key] += 1
        self._check_converged(t)

    def _on_sotw(self, raw: bytes) -> tuple[str, int, frozenset[str]]:
        resp = discovery_pb2.DiscoveryResponse.FromString(raw)
        type_url = resp.type_url
        snap = self.decoder.sotw_response(raw, resp)
        changed = self.decoder.diff(self.sotw_last.get(type_url, self.decoder.empty), snap)
        self.sotw_last[type_url] = snap
        self.sotw_acked[type_url] = (resp.version_info, resp.nonce)
        # ACK at once, with the names this type is subscribed to.
        self._send(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=resp.version_info,
                response_nonce=resp.nonce,
                resource_names=self._sotw_names(type_url),
            )
        )
        if type_url == CDS and snap.eds_names != self.eds_wanted:
            self.eds_wanted = snap.eds_names
            self._sotw_subscribe(EDS)
        elif type_url == LDS and snap.routes != self.routes_wanted:
            self.routes_wanted = snap.routes
            self._sotw_subscribe(RDS)
        elif type_url == EDS:
            self.eds_have = set(snap.ids)
        elif type_url == RDS:
            self.routes_have = set(snap.ids)
        return type_url, len(resp.resources), changed

    def _sotw_names(self, type_url: str) -> list[str]:
        if type_url == EDS:
            return self.decoder.sorted_names(self.eds_wanted)
        if type_url == RDS:
            return self.decoder.sorted_names(self.routes_wanted)
        return []

    def _sotw_subscribe(self, type_url: str) -> None:
        version, nonce = self.sotw_acked.get(type_url, ("", ""))
        self._send(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=version,
                response_nonce=nonce,
                resource_names=self._sotw_names(type_url),
            )
        )

    def _on_delta(self, raw: bytes) -> tuple[str, int, frozenset[str]]:
        resp = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        type_url = resp.type_url
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=resp.nonce)
        )
        removed = list(resp.removed_resources)
        names = []
        decoder = self.decoder
        if type_url == CDS:
            for r in resp.resources:
                info = decoder.delta(type_url, r.name, r.version, r.resource.value)
                names.append(r.name)
                if info.eds_name:
                    self.delta_clusters[r.name] = info.eds_name
                else:
                    self.delta_clusters.pop(r.name, None)
            for name in removed:
                self.delta_clusters.pop(name, None)
            self._delta_subscribe(EDS, frozenset(self.delta_clusters.values()))
        elif type_url == LDS:
            for r in resp.resources:
                info = decoder.delta(type_url, r.name, r.version, r.resource.value)
                names.append(r.name)
                self.delta_listeners[r.name] = info.routes
            for name in removed:
                self.delta_listeners.pop(name, None)
            routes = frozenset(n for rs in self.delta_listeners.values() for n in rs)
            self._delta_subscribe(RDS, routes)
        else:
            names = [r.name for r in resp.resources]
            have = self.eds_have if type_url == EDS else self.routes_have
            have.update(names)
            # A removed name was deleted or does not exist: either way it is answered.
            have.update(removed)
        return type_url, len(resp.resources), frozenset(names) | frozenset(removed)

    def _delta_subscribe(self, type_url: str, wanted: frozenset[str]) -> None:
        old = self.eds_wanted if type_url == EDS else self.routes_wanted
        if wanted == old:
            return
        add, drop = sorted(wanted - old), sorted(old - wanted)
        if type_url == EDS:
            self.eds_wanted = wanted
            self.eds_have.difference_update(drop)
        else:
            self.routes_wanted = wanted
            self.routes_have.difference_update(drop)
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=add, resource_names_unsubscribe=drop
            )
        )

    def _check_converged(self, t: float) -> None:
        if "done" in self.converged:
            return
        conv = self.converged
        if "CDS" in self.got:
            conv.setdefault("CDS", t)
        if "LDS" in self.got:
            conv.setdefault("LDS", t)
        if "CDS" in self.got and self.eds_wanted <= self.eds_have:
            conv.setdefault("EDS", t)
        if "LDS" in self.got and self.routes_wanted <= self.routes_have:
            conv.setdefault("RDS", t)
        if len(conv) == 4 and (
            self.eds_wanted <= self.eds_have and self.routes_wanted <= self.routes_have
        ):
            conv["done"] = t

    def mark(self, watch: Iterable[str], capture: bool) -> None:
        self.watch = frozenset(watch)
        self.events = []
        self.first_hits = {}
        self.captured = []
        self.capture = capture

    def subscribed_eds(self, name: str) -> bool:
        return name in self.eds_wanted


# ---------------------------------------------------------------------------------------------
# A worker process: a set of proxies, driven over a pipe.


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Worker:
    def __init__(self, conn: Connection, specs: list[ProxySpec], capture_index: int) -> None:
        self.conn = conn
        self.specs = specs
        self.capture_index = capture_index
        self.decoder = Decoder()
        self.progress = Progress()
        self.proxies: list[SimProxy] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, self.conn.recv)
            if command == "exit":
                await self._close()
                self.conn.send(None)
                return
            try:
                reply = await getattr(self, "cmd_" + command)(*args)
            except Exception as err:
                reply = {"error": f"{type(err).__name__}: {err}"}
            self.conn.send(reply)

    async def _close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.proxies), return_exceptions=True)
        self.proxies = []

    async def cmd_connect(self, target: str, delta: bool) -> int:
        """Open every proxy's stream at once (the connect storm)."""
        await self._close()
        self.decoder = Decoder()
        self.progress = Progress()
        for spec in self.specs:
            proxy = SimProxy(
                spec,
                delta=delta,
                target=target,
                decoder=self.decoder,
                progress=self.progress,
                capture=spec.index == self.capture_index,
            )
            self.proxies.append(proxy)
        for proxy in self.proxies:
            proxy.start()
        return len(self.proxies)

    async def cmd_close(self) -> int:
        count = len(self.proxies)
        await self._close()
        return count

    async def cmd_progress(self) -> dict[str, Any]:
        return {
            "responses": self.progress.responses,
            "last_t": self.progress.last_t,
            "first_hits": dict(self.progress.first_hits),
            "converged": sum(1 for p in self.proxies if "done" in p.converged),
            "errors": sum(1 for p in self.proxies if p.error),
            "cpu_s": _cpu_seconds(),
            "slow_path": self.decoder.slow_path,
        }

    async def cmd_converged(self) -> list[dict[str, Any]]:
        return [
            {
                "index": p.spec.index,
                "interception": p.spec.interception,
                "converged": dict(p.converged),
                "eds": len(p.eds_wanted),
                "routes": len(p.routes_wanted),
                "responses": p.responses,
                "bytes": p.bytes,
                "error": p.error,
            }
            for p in self.proxies
        ]

    async def cmd_mark(self, watch: list[str], eds_watch: list[str]) -> dict[str, int]:
        """Start a scenario: forget events, watch these names; say who is subscribed to what."""
        self.progress.first_hits = Counter()
        self.progress.responses = 0
        for p in self.proxies:
            p.mark(watch, capture=p.spec.index == self.capture_index)
        return {name: sum(1 for p in self.proxies if p.subscribed_eds(name)) for name in eds_watch}

    async def cmd_events(self) -> dict[int, dict[str, Any]]:
        return {
            p.spec.index: {
                "events": [(e.t, e.type, e.resources, e.changed, e.hits, e.size) for e in p.events],
                "first_hits": {f"{k[0]} {k[1]}": t for k, t in p.first_hits.items()},
                "error": p.error,
            }
            for p in self.proxies
        }

    async def cmd_captured(self) -> list[tuple[float, bytes]]:
        for p in self.proxies:
            if p.capture:
                return list(p.captured)
        return []


def worker_main(conn: Connection, specs: list[ProxySpec], capture_index: int) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Worker(conn, specs, capture_index).run())


class WorkerHandle:
    """The benchmark's end of one worker process."""

    def __init__(self, specs: list[ProxySpec], capture_index: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold grpc
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child, specs, capture_index), daemon=True
        )
        self.process.start()
        child.close()
        self.specs = specs

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, command: str, *args: Any) -> None:
        self.conn.send((command, args))

    def receive(self, timeout: float = 120.0) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"load-generator worker {self.pid}: no reply in {timeout}s")
        reply = self.conn.recv()
        if isinstance(reply, dict) and set(reply) == {"error"}:
            raise RuntimeError(f"load-generator worker {self.pid}: {reply['error']}")
        return reply

    def call(self, command: str, *args: Any, timeout: float = 120.0) -> Any:
        self.send(command, *args)
        return self.receive(timeout)

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.call("exit", timeout=20)
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()  # this worker's own PID
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def call_all(workers: list[WorkerHandle], command: str, *args: Any, timeout: float = 120) -> list:
    """Send to every worker first, then collect, so workers act at (nearly) the same moment."""
    for w in workers:
        w.send(command, *args)
    return [w.receive(timeout) for w in workers]
