"""Composition root: builds the components, runs them on one event loop, shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2
from envoy.service.status.v3 import csds_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from istiolite import __version__, metrics
from istiolite.debug.pages import debug_routes
from istiolite.debug.status import SourcesState
from istiolite.http_server import HttpServer, Request, Response
from istiolite.logs import get_logger
from istiolite.model.meta import ObjectKey
from istiolite.model.store import ChangeSet, ConfigStore
from istiolite.networking.endpoint import eds_ports
from istiolite.networking.generator import carry_over
from istiolite.push.context import ConfigWarning, PushContext
from istiolite.push.debounce import Debouncer
from istiolite.push.request import PushRequest
from istiolite.settings import Settings, split_host_port
from istiolite.sources.files import FileSource
from istiolite.xds import reflection
from istiolite.xds.ads import AdsService, Connection
from istiolite.xds.csds import CsdsService

log = get_logger("server")

# istiod's gRPC server options: keepalive 30 s / 10 s, streams recycled after 30 min.
GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_connection_age_ms", 30 * 60 * 1000),
    ("grpc.max_connection_age_grace_ms", 10_000),
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class Istiolite:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ConfigStore()
        self.files = FileSource(settings.config_dirs, self.store)
        self._versions = itertools.count(1)
        self._snapshot: Mapping[ObjectKey, Any] = self.store.snapshot()
        self.ads = AdsService(
            self._build_context(self._snapshot), push_concurrency=settings.push_concurrency
        )
        self.debouncer: Debouncer[tuple[float, ChangeSet]] = Debouncer(
            self._push, quiet=settings.debounce_quiet, max_delay=settings.debounce_max
        )
        self.push_status: dict[str, Any] = {}
        self.warnings: list[ConfigWarning] = []
        self.grpc_port = self.http_port = self.monitoring_port = 0

    def _build_context(self, snapshot: Mapping[ObjectKey, Any]) -> PushContext:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return PushContext(
            snapshot, domain=self.settings.domain, version=f"{stamp}/{next(self._versions)}"
        )

    @staticmethod
    def _endpoint_only(
        keys: set[ObjectKey],
        old: Mapping[ObjectKey, Any],
        new: Mapping[ObjectKey, Any],
        ctx: PushContext,
    ) -> frozenset[str] | None:
        """The EDS clusters an EndpointSlice- or WorkloadEntry-only change touches, or None if
        it needs a full push: other kinds changed, or a touched service's endpoints shape more
        than EDS (headless: listeners; a ServiceEntry that is not STATIC: DNS clusters or
        NONE listeners; istiod too pushes in full for a WorkloadEntry of a DNS entry)."""
        if any(key.kind not in ("EndpointSlice", "WorkloadEntry") for key in keys):
            return None
        hosts: set[str] = set()
        for key in keys:
            for snapshot in (old, new):
                obj = snapshot.get(key)
                if obj is None:
                    continue
                if key.kind == "WorkloadEntry":
                    hosts.update(ctx.hostname(s) for s in ctx.workload_entry_services(obj))
                else:
                    hosts.add(f"{obj.service_name}.{obj.namespace}.svc.{ctx.domain}")
        clusters: set[str] = set()
        for host in hosts:
            service = ctx.services_by_host.get(host)
            if service is None:
                continue  # endpoints of no service: nobody sees them
            if service.headless or (
                service.type == "ServiceEntry" and service.resolution != "STATIC"
            ):
                return None
            clusters.update(cluster for cluster, _ in eds_ports(ctx, service))
        return frozenset(clusters)

    def _log_new_warnings(self, ctx: PushContext) -> None:
        warnings = ctx.reference_warnings()
        for warning in warnings:
            if warning not in self.warnings:
                log.warning(
                    "config setting not applied"
                    if warning.unapplied
                    else "config refers to something missing",
                    object=warning.object,
                    field=warning.field,
                    message=warning.message,
                )
        self.warnings = warnings

    async def _push(self, batch: list[tuple[float, ChangeSet]]) -> None:
        first_seen = min(seen for seen, _ in batch)
        keys = {key for _, changes in batch for key in changes.keys}
        kinds = sorted({key.kind for key in keys})
        metrics.DEBOUNCE.observe(time.monotonic() - first_seen)
        started = time.perf_counter()
        old_ctx, old_snapshot = self.ads.context, self._snapshot
        snapshot = self.store.snapshot()
        ctx = self._build_context(snapshot)
        eds_clusters = self._endpoint_only(keys, old_snapshot, snapshot, ctx)
        if eds_clusters is None:
            request = PushRequest(full=True, reasons=frozenset(kinds), started=first_seen)
        else:
            carry_over(old_ctx, ctx, eds_clusters)
            request = PushRequest(
                full=False, eds_clusters=eds_clusters, reasons=frozenset(kinds), started=first_seen
            )
        build_seconds = time.perf_counter() - started
        metrics.CONTEXT_INIT.observe(build_seconds)
        for kind in kinds:
            metrics.PUSH_TRIGGERS.inc(kind)
        self._snapshot = snapshot
        if request.full or "WorkloadEntry" in kinds:
            # Endpoint-only pushes cannot change which routes refer to missing subsets, but a
            # WorkloadEntry's own fields may be unapplied.
            self._log_new_warnings(ctx)
        self.ads.update(ctx, request)
        changed = sorted(str(k) for k in keys)
        self.push_status = {
            "version": ctx.version,
            "full": request.full,
            "reason": kinds,
            "changed": changed[:100],
            "changed_count": len(changed),
            "eds_clusters": sorted(eds_clusters or ()),
            "time": datetime.datetime.now(datetime.UTC).isoformat(),
            "context_build_seconds": round(build_seconds, 6),
            "proxies": len(self.ads.connections),
            "services": len(ctx.services),
        }
        log.info(
            "push",
            version=ctx.version,
            full=request.full,
            reason=kinds,
            changed=changed[:20],
            changed_count=len(changed),
            eds_clusters=len(eds_clusters or ()),
            proxies=len(self.ads.connections),
            services=len(ctx.services),
        )

    def _grpc_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        self.ads.register(server)
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            CsdsService(self.ads), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (
            ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name,
            CsdsService.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        )
        # Under grpc.reflection.v1alpha and grpc.reflection.v1 (both list themselves).
        reflection.enable_reflection(server, names)
        self._health = health_servicer
        return server

    def _ready(self, _request: Request) -> Response:
        if self.files.loaded:
            return Response(200, "ok\n")
        return Response(503, "config not loaded\n")

    async def run(self, stop: asyncio.Event) -> None:
        self.files.load_all()
        # Subscribed after the initial load: that load is the startup push, not a change.
        self.store.subscribe(lambda changes: self.debouncer.add((time.monotonic(), changes)))
        self._snapshot = self.store.snapshot()
        initial = self._build_context(self._snapshot)
        self._log_new_warnings(initial)
        self.ads.update(initial)
        self.push_status = {
            "version": initial.version,
            "full": True,
            "reason": ["startup"],
            "time": datetime.datetime.now(datetime.UTC).isoformat(),
            "services": len(initial.services),
            "proxies": 0,
        }
        server = self._grpc_server()
        host, port = split_host_port(self.settings.grpc_addr)
        self.grpc_port = server.add_insecure_port(f"{host}:{port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {self.settings.grpc_addr}")
        await server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        http = HttpServer(
            {
                "/ready": self._ready,
                "/version": _version_page,
                **debug_routes(DebugStatusView(self)),
            },
            name="http",
        )
        monitoring = HttpServer(
            {
                "/version": _version_page,
                "/metrics": lambda _request: Response(200, *metrics.exposition()),
            },
            name="monitoring",
        )
        await http.start(*split_host_port(self.settings.http_addr))
        await monitoring.start(*split_host_port(self.settings.monitoring_addr))
        self.http_port, self.monitoring_port = http.port, monitoring.port
        log.info(
            "serving",
            version=__version__,
            grpc=f"{host}:{self.grpc_port}",
            http=self.settings.http_addr,
            monitoring=self.settings.monitoring_addr,
            config_dirs=[str(d) for d in self.settings.config_dirs],
            services=len(self.ads.context.services),
        )
        tasks = [
            asyncio.create_task(self.debouncer.run(), name="debounce"),
            asyncio.create_task(self.files.run(stop), name="files"),
        ]
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await http.stop()
            await monitoring.stop()
            await server.stop(grace=1.0)


def _version_page(_request: Request) -> Response:
    return Response(200, __version__ + "\n")


class DebugStatusView:
    """The server's side of the debug pages' DebugStatus: reads its components, changes nothing."""

    def __init__(self, app: Istiolite) -> None:
        self._app = app

    def push_context(self) -> PushContext:
        return self._app.ads.context  # type: ignore[no-any-return]

    def connections(self) -> Sequence[Connection]:
        return list(self._app.ads.connections.values())

    def push_status(self) -> Mapping[str, Any]:
        return self._app.push_status

    def warnings(self) -> Sequence[ConfigWarning]:
        return self._app.warnings

    def sources(self) -> SourcesState:
        store, files = self._app.store, self._app.files
        return SourcesState(
            loaded=files.loaded,
            objects={key: store.owners(key) for key in store.snapshot()},
            errors=files.errors,
        )
