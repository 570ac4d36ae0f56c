"""Composition root: builds the components, runs them on one event loop, shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
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
from istiolite.http_server import Handler, HttpServer, Request, Response, local_only
from istiolite.logs import get_logger
from istiolite.model.proxy import Proxy
from istiolite.model.store import ChangeSet, ConfigStore
from istiolite.networking.generator import ConfigGenerator
from istiolite.networking.resource import Resource
from istiolite.push.cache import ResourceCache
from istiolite.push.context import ConfigWarning, PushContext
from istiolite.push.debounce import Debouncer
from istiolite.push.errors import GenerationError
from istiolite.push.pusher import Pusher
from istiolite.security import ca_service
from istiolite.security.authn import Authenticator
from istiolite.security.ca import MeshCA
from istiolite.security.secure_port import SecureFrontEnd, serving_names
from istiolite.settings import Settings, split_host_port
from istiolite.sources.files import FileSource
from istiolite.sources.jwks import JwksFetcher
from istiolite.sources.kube.client import KubeClient
from istiolite.xds import reflection
from istiolite.xds.ads import AdsService, Connection
from istiolite.xds.csds import CsdsService
from istiolite.xds.workload_certs import WorkloadCerts

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
    # istiod's default; --grpc-max-recv-size replaces it.
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


class Istiolite:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ConfigStore()
        self.files = FileSource(settings.config_dirs, self.store)
        self.jwks = JwksFetcher(self.store, refresh_interval=settings.jwks_refresh_interval)
        self.cache = ResourceCache()
        self.generator = ConfigGenerator(self.cache)
        # The mesh CA (CAError naming the file when --ca-dir is unusable) and the authenticator
        # of secure-port callers; its TokenReviewer is connected in run().
        self.ca = MeshCA.load(
            settings.ca_dir,
            settings.trust_domain,
            key_type=settings.ca_key_type,
            workload_ttl=settings.workload_cert_ttl,
            max_ttl=settings.max_workload_cert_ttl,
        )
        self.authenticator = Authenticator(settings.trust_domain, cluster_id=settings.cluster_id)
        self.ads = AdsService(
            PushContext({}, domain=settings.domain, version="empty"),
            generator=self.generator,
            push_concurrency=settings.push_concurrency,
            send_timeout=settings.xds_send_timeout,
            # Key material on the plaintext port only in the development mode, and then only
            # to loopback/Unix peers (xds/stream_secrets.py): as istiod, which sends SDS only
            # to a proxy whose identity the TLS port verified.
            dev_plaintext_sds=settings.dev_plaintext_sds,
            workload_certs=WorkloadCerts(self.ca),
        )
        self.pusher = Pusher(
            self.store,
            self.cache,
            domain=settings.domain,
            publish=self.ads.update,
            connected=lambda: len(self.ads.connections),
        )
        self.debouncer: Debouncer[tuple[float, ChangeSet]] = Debouncer(
            self._push, quiet=settings.debounce_quiet, max_delay=settings.debounce_max
        )
        self.kube: KubeClient | None = None
        self.secure: SecureFrontEnd | None = None
        self._health = health.aio.HealthServicer()
        self.grpc_port = self.http_port = self.monitoring_port = self.secure_grpc_port = 0

    @property
    def push_status(self) -> dict[str, Any]:
        return self.pusher.status

    @property
    def warnings(self) -> list[ConfigWarning]:
        return self.pusher.warnings

    async def _push(self, batch: list[tuple[float, ChangeSet]]) -> None:
        self.pusher.push(batch)

    def _grpc_server(self, *, secure: bool = False) -> grpc.aio.Server:
        """The gRPC services of 15010; with `secure`, the internal server behind the secure
        port's TLS front end, which also serves the CA API."""
        options = [o for o in GRPC_OPTIONS if o[0] != "grpc.max_receive_message_length"]
        options.append(("grpc.max_receive_message_length", self.settings.grpc_max_recv_size))
        server = grpc.aio.server(options=options)
        # The secure port authenticates every stream and sends each its own identity's keys.
        self.ads.register(server, authenticator=self.authenticator if secure else None)
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            CsdsService(self.ads, generator=self.generator), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [
            ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name,
            CsdsService.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        if secure:
            ca_service.IstioCertificateService(self.ca, self.authenticator).register(server)
            names.append(ca_service.SERVICE_NAME)
        # Under grpc.reflection.v1alpha and grpc.reflection.v1 (both list themselves).
        reflection.enable_reflection(server, names)
        return server

    async def _start_secure(self) -> grpc.aio.Server | None:
        """The secure port: the internal gRPC server on a free loopback port, and the TLS front
        end on --secure-grpc-addr forwarding to it."""
        addr = self.settings.secure_grpc_addr
        if not addr:
            return None
        internal = self._grpc_server(secure=True)
        internal_port = internal.add_insecure_port("127.0.0.1:0")
        if internal_port == 0:
            raise OSError("cannot listen on 127.0.0.1 for the secure port's internal server")
        await internal.start()
        self.secure = SecureFrontEnd(
            self.ca,
            self.authenticator.peers,
            dns_names=serving_names(self.settings.extra_sans),
        )
        host, port = split_host_port(addr)
        try:
            self.secure_grpc_port = await self.secure.start(host, port, internal_port)
        except OSError as err:
            await internal.stop(None)
            raise OSError(f"cannot listen for the secure gRPC port on {addr}: {err}") from None
        # Loopback only; a caller connecting to it directly is never taken for a TLS client.
        log.info("secure port internal server", address=f"127.0.0.1:{internal_port}")
        return internal

    def _ready(self, _request: Request) -> Response:
        if self.files.loaded:
            return Response(200, "ok\n")
        return Response(503, "config not loaded\n")

    def _debug_routes(self) -> dict[str, Handler]:
        """The /debug/* pages as `--debug-on-http` says: loopback peers only (the port also
        answers the kubelet's probes on the pod IP), every peer, or none at all."""
        mode = self.settings.debug_on_http
        if mode == "false":
            return {}
        routes = debug_routes(DebugStatusView(self))
        if mode == "true":
            return routes
        opt_in = "--debug-on-http=true opens them to every client"
        return {path: local_only(handler, opt_in) for path, handler in routes.items()}

    async def run(self, stop: asyncio.Event) -> None:
        self.files.load_all()
        # The keys of the jwksUris the config names, before the startup push (bounded wait).
        await self.jwks.first_round()
        self.store.subscribe(self.jwks.on_change)
        # Subscribed after the initial load: that load is the startup push, not a change.
        self.store.subscribe(lambda changes: self.debouncer.add((time.monotonic(), changes)))
        self.pusher.start()
        self.kube = await KubeClient.connect(self.settings.kubeconfig)
        self.authenticator.reviewer = self.kube
        server = self._grpc_server()
        host, port = split_host_port(self.settings.grpc_addr)
        self.grpc_port = server.add_insecure_port(f"{host}:{port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {self.settings.grpc_addr}")
        await server.start()
        internal = await self._start_secure()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        http = HttpServer(
            {
                "/ready": self._ready,
                "/version": _version_page,
                **self._debug_routes(),
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
            secure_grpc=(
                f"{split_host_port(self.settings.secure_grpc_addr)[0]}:{self.secure_grpc_port}"
                if self.secure is not None
                else "off"
            ),
            ca_root_expiry=self.ca.expiry().isoformat(),
            kubernetes=self.kube.source if self.kube is not None else "none",
            # The bound ports (a port 0 in the settings is chosen by the kernel).
            http=f"{split_host_port(self.settings.http_addr)[0]}:{self.http_port}",
            monitoring=f"{split_host_port(self.settings.monitoring_addr)[0]}:{self.monitoring_port}",
            config_dirs=[str(d) for d in self.settings.config_dirs],
            services=len(self.ads.context.services),
        )
        tasks = [
            asyncio.create_task(self.debouncer.run(), name="debounce"),
            asyncio.create_task(self.files.run(stop), name="files"),
            asyncio.create_task(self.ca.watch(), name="ca-watch"),
            asyncio.create_task(self.jwks.run(stop), name="jwks"),
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
            if self.secure is not None:
                await self.secure.stop()
            if internal is not None:
                await internal.stop(grace=1.0)
            await server.stop(grace=1.0)
            if self.kube is not None:
                await self.kube.close()
            if self.ads.workload_certs is not None:
                await self.ads.workload_certs.close()
            self.ca.close()


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

    def generate(self, proxy: Proxy, type_url: str) -> Mapping[str, Resource]:
        return self._app.generator(self._app.ads.context, proxy, type_url)

    def generation_errors(self) -> Sequence[GenerationError]:
        return self._app.cache.errors()

    def sources(self) -> SourcesState:
        store, files = self._app.store, self._app.files
        owners = store.all_owners()
        return SourcesState(
            loaded=files.loaded,
            objects={key: owners.get(key, []) for key in store.snapshot()},
            errors=files.errors,
            unsupported=files.unsupported,
        )
