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
from istiolite.operator.cluster import ClusterOperator
from istiolite.operator.gateway_children import GatewayDeploymentConfig
from istiolite.operator.leader import LeaseTimings
from istiolite.push.cache import ResourceCache
from istiolite.push.context import ConfigWarning, PushContext
from istiolite.push.debounce import Debouncer
from istiolite.push.errors import GenerationError
from istiolite.push.pusher import Pusher
from istiolite.security import ca_service
from istiolite.security.authn import Authenticator
from istiolite.security.ca import MeshCA
from istiolite.security.kept_certs import KeptCertificates
from istiolite.security.local_tokens import LocalTokenVerifier
from istiolite.security.secure_port import SecureFrontEnd, serving_names
from istiolite.settings import Settings, split_host_port
from istiolite.sources.files import FileSource
from istiolite.sources.jwks import JwksFetcher
from istiolite.sources.kube.client import KubeClient, in_cluster
from istiolite.sources.kube.informer import InformerOptions
from istiolite.sources.kube.source import KubeSource
from istiolite.sources.mesh_config import MeshConfigFile
from istiolite.webhooks.server import WebhookServer
from istiolite.webhooks.sidecar_template import FLAVORS, InjectionConfig
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
        # The mesh config file, in the store before the first push (MeshConfigError naming the
        # file and field when unusable).
        self.mesh_config: MeshConfigFile | None = None
        if settings.mesh_config is not None:
            self.mesh_config = MeshConfigFile(
                settings.mesh_config, self.store, trust_domain=settings.trust_domain
            )
            self.mesh_config.load()
        self.jwks = JwksFetcher(self.store, refresh_interval=settings.jwks_refresh_interval)
        self.cache = ResourceCache()
        self.generator = ConfigGenerator(self.cache)
        # The mesh CA (CAError naming the file when --ca-dir is unusable) and the authenticator
        # of secure-port callers; its TokenReviewer is connected in run().
        # With a cluster and no --ca-dir, the root lives in a Secret shared by every replica
        # (loaded in run(), before anything is signed); until then a placeholder. --ca-dir, plug-in
        # files or a self-signed root there, wins as istiod's mounted /etc/cacerts does.
        self.ca_in_cluster = settings.ca_dir is None and (
            settings.kubeconfig is not None or in_cluster()
        )
        self.ca = MeshCA.load(
            None if self.ca_in_cluster else settings.ca_dir,
            settings.trust_domain,
            key_type=settings.ca_key_type,
            workload_ttl=settings.workload_cert_ttl,
            max_ttl=settings.max_workload_cert_ttl,
            placeholder=self.ca_in_cluster,
        )
        self.authenticator = Authenticator(settings.trust_domain, cluster_id=settings.cluster_id)
        if settings.token_issuer_key is not None:
            # TokenIssuerError naming the file when it holds no usable public key.
            self.authenticator.local = LocalTokenVerifier.load(
                settings.token_issuer_key, settings.token_issuer, settings.trust_domain
            )
        self.ads = AdsService(
            PushContext({}, domain=settings.domain, version="empty"),
            generator=self.generator,
            push_concurrency=settings.push_concurrency,
            send_timeout=settings.xds_send_timeout,
            # Key material on the plaintext port only in the development mode, and then only
            # to loopback/Unix peers (xds/stream_secrets.py): as istiod, which sends SDS only
            # to a proxy whose identity the TLS port verified.
            dev_plaintext_sds=settings.dev_plaintext_sds,
            # With a CA directory, workload certificates are kept there too, so a restart does
            # not give every proxy a new key (security/kept_certs.py).
            workload_certs=WorkloadCerts(
                KeptCertificates(self.ca, settings.ca_dir / "workload-certs")
                if settings.ca_dir is not None
                else self.ca
            ),
        )
        self.pusher = Pusher(
            self.store,
            self.cache,
            domain=settings.domain,
            trust_domain=settings.trust_domain,
            publish=self.ads.update,
            connected=lambda: len(self.ads.connections),
        )
        self.debouncer: Debouncer[tuple[float, ChangeSet]] = Debouncer(
            self._push, quiet=settings.debounce_quiet, max_delay=settings.debounce_max
        )
        self.kube: KubeClient | None = None
        self.kube_source: KubeSource | None = None
        self.operator: ClusterOperator | None = None
        self.secure: SecureFrontEnd | None = None
        self.webhooks: WebhookServer | None = None
        self._health = health.aio.HealthServicer()
        self.grpc_port = self.http_port = self.monitoring_port = self.secure_grpc_port = 0
        self.webhook_port = 0

    @property
    def push_status(self) -> dict[str, Any]:
        return self.pusher.status

    @property
    def warnings(self) -> list[ConfigWarning]:
        return self.pusher.warnings

    async def _push(self, batch: list[tuple[float, ChangeSet]]) -> None:
        self.pusher.push(batch)
        if self.operator is not None:
            self.operator.writers.config_pushed()

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

    def _namespace_labels(self, name: str) -> dict[str, str] | None:
        namespace = self.ads.context.namespaces.get(name)
        return None if namespace is None else dict(namespace.meta.labels)

    def _injection_config(self) -> InjectionConfig:
        """The proxy /inject adds and the gateway deployment runs."""
        settings = self.settings
        flavor = next((f for f in FLAVORS if f == settings.injection_flavor), None)
        if flavor is None:
            raise ValueError(
                f"injection flavor {settings.injection_flavor!r}: not one of {FLAVORS}"
            )
        # Proxies reach the CA and xDS through the Service (istiod.istio-system.svc:15012),
        # whatever address this process binds.
        return InjectionConfig(
            flavor=flavor,
            proxy_image=settings.proxy_image,
            envoy_image=settings.envoy_image,
            istiolite_image=settings.istiolite_image,
            trust_domain=settings.trust_domain,
            domain=settings.domain,
            cluster_id=settings.cluster_id,
            native_sidecars=settings.native_sidecars,
        )

    async def _start_webhooks(self) -> None:
        """/validate and /inject on --webhook-addr, HTTPS with a mesh CA certificate."""
        settings = self.settings
        if not settings.webhook_addr:
            return
        injection = self._injection_config()
        self.webhooks = WebhookServer(
            self.ca,
            dns_names=serving_names(settings.extra_sans),
            injection=injection,
            namespace_labels=self._namespace_labels,
        )
        host, port = split_host_port(settings.webhook_addr)
        try:
            self.webhook_port = await self.webhooks.start(host, port)
        except OSError as err:
            raise OSError(
                f"cannot listen for the webhooks on {settings.webhook_addr}: {err}"
            ) from None

    def _ready(self, _request: Request) -> Response:
        if not self.files.loaded:
            return Response(503, "config not loaded\n")
        if self.kube_source is not None and not self.kube_source.synced:
            return Response(503, "kubernetes not synced\n")
        return Response(200, "ok\n")

    async def _start_kube(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """Kubernetes as a source: its informers run from here on, and the first push waits
        until each has listed once (as istiod waits for its caches), or until `stop`."""
        if self.kube is None:
            return None
        self.kube_source = KubeSource(
            self.kube,
            self.store,
            options=InformerOptions(namespaces=self.settings.watch_namespaces),
        )
        if self.operator is not None:
            self.operator.follow(self.kube_source)
        task = asyncio.create_task(self.kube_source.run(), name="kube-source")
        synced = asyncio.create_task(self.kube_source.wait_synced())
        stopped = asyncio.create_task(stop.wait())
        started = time.monotonic()
        await asyncio.wait({synced, stopped, task}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (synced, stopped):
            waiter.cancel()
        if task.done():
            task.result()  # its failure, raised here
        if self.kube_source.synced:
            log.info("kubernetes synced", seconds=round(time.monotonic() - started, 3))
        return task

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
        self.kube = await KubeClient.connect(self.settings.kubeconfig)
        self.authenticator.reviewer = self.kube
        if self.kube is not None:
            self.operator = ClusterOperator(
                self.kube,
                self.ca,
                namespace=self.settings.pod_namespace,
                identity=self.settings.pod_name,
                timings=LeaseTimings.from_lease_duration(self.settings.leader_lease_duration),
                ca_in_cluster=self.ca_in_cluster,
                watch_namespaces=self.settings.watch_namespaces,
                # The Gateway API status of the latest push, written by the leader.
                gateway_status=lambda: self.pusher.context.gateway_api_status(),
                gateway_deployment=GatewayDeploymentConfig(
                    self._injection_config(), domain=self.settings.domain
                )
                if self.settings.gateway_deployment
                else None,
            )
            await self.operator.load_ca(stop)
            if (
                stop.is_set()
            ):  # stopped while the API was unreachable: never sign with the placeholder
                await self.kube.close()
                return
        kube_task = await self._start_kube(stop)
        if self.operator is not None:
            self.operator.start()
        # The keys of the jwksUris the config names, before the startup push (bounded wait).
        await self.jwks.first_round()
        self.store.subscribe(self.jwks.on_change)
        # Subscribed after the initial load: that load is the startup push, not a change.
        self.store.subscribe(lambda changes: self.debouncer.add((time.monotonic(), changes)))
        self.pusher.start()
        server = self._grpc_server()
        host, port = split_host_port(self.settings.grpc_addr)
        self.grpc_port = server.add_insecure_port(f"{host}:{port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {self.settings.grpc_addr}")
        await server.start()
        internal = await self._start_secure()
        await self._start_webhooks()
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
            webhooks=(
                f"{split_host_port(self.settings.webhook_addr)[0]}:{self.webhook_port}"
                if self.webhooks is not None
                else "off"
            ),
            ca_root_expiry=self.ca.expiry().isoformat(),
            trust_domain=self.settings.trust_domain,
            mesh_config=str(self.settings.mesh_config or "none"),
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
        if kube_task is not None:
            tasks.append(kube_task)
        if self.mesh_config is not None:
            tasks.append(asyncio.create_task(self.mesh_config.run(stop), name="mesh-config"))
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
            if self.webhooks is not None:
                await self.webhooks.stop()
            if internal is not None:
                await internal.stop(grace=1.0)
            await server.stop(grace=1.0)
            if self.operator is not None:
                await self.operator.stop()  # releases the Lease: another replica leads at once
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
        operator = self._app.operator
        if operator is None:
            return self._app.push_status
        return {**self._app.push_status, "leader_election": operator.status()}

    def warnings(self) -> Sequence[ConfigWarning]:
        return self._app.warnings

    def generate(self, proxy: Proxy, type_url: str) -> Mapping[str, Resource]:
        return self._app.generator(self._app.ads.context, proxy, type_url)

    def generation_errors(self) -> Sequence[GenerationError]:
        return self._app.cache.errors()

    def sources(self) -> SourcesState:
        store, files, kube = self._app.store, self._app.files, self._app.kube_source
        owners = store.all_owners()
        return SourcesState(
            loaded=files.loaded and (kube is None or kube.synced),
            objects={key: owners.get(key, []) for key in store.snapshot()},
            errors=files.errors + (kube.errors if kube is not None else []),
            unsupported=files.unsupported + (kube.unsupported if kube is not None else []),
        )
