"""What the leader runs, and only while it leads: the root ConfigMap publisher (fed by its own
informers of Namespaces and of the `istio-ca-root-cert` ConfigMaps) and the status writer (fed
by the Kubernetes source's results). Started by the elector's started-leading callback and
cancelled by its stopped-leading one; each term starts from a fresh list, so a new leader
reconciles everything once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from istiolite.logs import get_logger
from istiolite.model.meta import ObjectKey
from istiolite.operator.gateway_api_status import GatewayApiStatusWriter
from istiolite.operator.gateway_children import GatewayDeploymentConfig
from istiolite.operator.gateway_deployment import GatewayDeployer
from istiolite.operator.root_configmaps import CONFIGMAP_NAME, RootCertPublisher
from istiolite.operator.status import StatusWriter
from istiolite.operator.webhook_ca_bundle import CONFIGURATIONS, WebhookCaBundle
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import Batch, Informer, InformerOptions
from istiolite.sources.kube.resources import ApiResource
from istiolite.sources.kube.results import ObjectResult

log = get_logger("operator")

NAMESPACES = ApiResource("", "v1", "namespaces", "Namespace", False)
CONFIGMAPS = ApiResource("", "v1", "configmaps", "ConfigMap", True)


class LeaderWriters:
    """`start()` when leadership begins, `stop()` when it ends (both plain calls on the loop)."""

    def __init__(
        self,
        kube: KubeClient,
        bundle: Callable[[], bytes],
        *,
        results: Callable[[], Mapping[ObjectKey, ObjectResult]] | None = None,
        gateway_status: Callable[[], Mapping[ObjectKey, dict[str, Any]]] | None = None,
        gateway_deployment: GatewayDeploymentConfig | None = None,
        namespaces: frozenset[str] | None = None,
        options: InformerOptions | None = None,
    ) -> None:
        self._kube = kube
        self._bundle = bundle
        self._results = results
        self._gateway_status = gateway_status
        self.gateway_api_status: GatewayApiStatusWriter | None = None
        self._gateway_deployment = gateway_deployment
        self.gateway_deployer: GatewayDeployer | None = None
        self._namespaces = namespaces
        self._options = options or InformerOptions()
        self.publisher: RootCertPublisher | None = None
        self.status: StatusWriter | None = None
        self.webhook_ca_bundle: WebhookCaBundle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        publisher = RootCertPublisher(self._kube, self._bundle, namespaces=self._namespaces)
        self.publisher = publisher
        synced = {"namespaces": False}

        def on_namespaces(batch: Batch) -> None:
            if not synced["namespaces"]:
                synced["namespaces"] = True
                publisher.namespaces_synced(name for _ns, name in batch.upserts)
            else:
                for _ns, name in batch.upserts:
                    publisher.namespace_seen(name)
            for _ns, name in batch.deletes:
                publisher.namespace_gone(name)

        def on_configmaps(batch: Batch) -> None:
            for (namespace, _name), obj in batch.upserts.items():
                publisher.configmap_changed(namespace, obj)
            for namespace, _name in batch.deletes:
                publisher.configmap_changed(namespace, None)

        ours = dataclasses.replace(
            self._options,
            field_selector=f"metadata.name={CONFIGMAP_NAME}",
            namespaces=self._namespaces,
        )
        spawn = self._spawn
        spawn(Informer(self._kube, NAMESPACES, on_namespaces, self._options).run(), "namespaces")
        spawn(Informer(self._kube, CONFIGMAPS, on_configmaps, ours).run(), "root-configmaps")
        spawn(publisher.run(), "root-cert-publisher")
        if self._results is not None:
            self.status = StatusWriter(self._kube, self._results)
            spawn(self.status.run(), "status-writer")
        deployer = None
        if self._gateway_deployment is not None:
            deployer = GatewayDeployer(
                self._kube,
                self._gateway_deployment,
                options=dataclasses.replace(self._options, namespaces=self._namespaces),
                addresses_changed=lambda key: self.config_pushed_for(frozenset({key})),
            )
            self.gateway_deployer = deployer
            spawn(deployer.run(), "gateway-deployment")
        if self._gateway_status is not None:
            self.gateway_api_status = GatewayApiStatusWriter(
                self._kube,
                self._gateway_status,
                addresses=deployer.addresses if deployer is not None else None,
            )
            spawn(self.gateway_api_status.run(), "gateway-api-status-writer")
        self._start_webhook_ca_bundle()
        log.info("leader writers started")

    def _start_webhook_ca_bundle(self) -> None:
        """The caBundle of the two webhook configurations, each watched by name."""
        patcher = WebhookCaBundle(self._kube, self._bundle)
        self.webhook_ca_bundle = patcher

        def on_configuration(batch: Batch) -> None:
            for _ns, name in batch.upserts:
                patcher.configuration_changed(name)

        for config in CONFIGURATIONS:
            by_name = dataclasses.replace(
                self._options, field_selector=f"metadata.name={config.name}", namespaces=None
            )
            informer = Informer(self._kube, config.resource, on_configuration, by_name)
            self._spawn(informer.run(), f"webhook-config-{config.name}")
        self._spawn(patcher.run(), "webhook-ca-bundle")

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    def root_changed(self) -> None:
        if self.publisher is not None and self._tasks:
            self.publisher.root_changed()
        if self.webhook_ca_bundle is not None and self._tasks:
            self.webhook_ca_bundle.root_changed()

    def results_changed(self, keys: frozenset[ObjectKey]) -> None:
        if self.status is not None and self._tasks:
            self.status.changed(keys)

    def config_pushed(self) -> None:
        """A push happened: the Gateway API status may have changed (only changes are written)."""
        if self.gateway_api_status is not None and self._tasks:
            self.gateway_api_status.changed()

    def config_pushed_for(self, keys: frozenset[ObjectKey]) -> None:
        if self.gateway_api_status is not None and self._tasks:
            self.gateway_api_status.changed(keys)

    def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        self._stopping = [t for t in self._stopping if not t.done()] + tasks
        self.publisher = None
        self.status = None
        self.gateway_api_status = None
        self.gateway_deployer = None
        self.webhook_ca_bundle = None
        if tasks:
            log.info("leader writers stopped")

    async def close(self) -> None:
        """Stop, and wait until every task has ended."""
        self.stop()
        stopping, self._stopping = self._stopping, []
        for task in stopping:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leader writer stopped", task=task.get_name(), error=str(task.exception()))
