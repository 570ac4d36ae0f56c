"""The operator side of istiolite with a cluster, as the server composes it: the CA kept in a
Secret (loaded before serving, watched after), the Lease election, and the writers the leader
runs. Every replica serves xDS; only the leader writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from istiolite.logs import get_logger
from istiolite.model.meta import ObjectKey
from istiolite.operator.ca_secret import ClusterCA
from istiolite.operator.gateway_children import GatewayDeploymentConfig
from istiolite.operator.leader import LeaderElector, LeaseTimings, stop_elector
from istiolite.operator.writers import LeaderWriters
from istiolite.security.ca import CAError, MeshCA
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from istiolite.sources.kube.results import ObjectResult
from istiolite.sources.kube.source import KubeSource

log = get_logger("operator")

_CA_LOAD_BACKOFF = (0.5, 10.0)


class ClusterOperator:
    def __init__(
        self,
        kube: KubeClient,
        ca: MeshCA,
        *,
        namespace: str,
        identity: str,
        timings: LeaseTimings,
        ca_in_cluster: bool,
        watch_namespaces: frozenset[str] | None = None,
        gateway_status: Callable[[], Mapping[ObjectKey, dict[str, Any]]] | None = None,
        gateway_deployment: GatewayDeploymentConfig | None = None,
    ) -> None:
        self._ca = ca
        self.namespace = namespace
        self.cluster_ca = ClusterCA(kube, ca, namespace=namespace) if ca_in_cluster else None
        self.elector = LeaderElector(kube, namespace=namespace, identity=identity, timings=timings)
        self.writers = LeaderWriters(
            kube,
            ca.trust_bundle,
            results=self._results,
            gateway_status=gateway_status,
            gateway_deployment=gateway_deployment,
            namespaces=watch_namespaces,
            options=InformerOptions(namespaces=watch_namespaces),
        )
        self._source: KubeSource | None = None
        ca.on_change(self.writers.root_changed)
        self.elector.on_started_leading(self.writers.start)
        self.elector.on_stopped_leading(self.writers.stop)
        self._tasks: list[asyncio.Task[None]] = []
        self._election: asyncio.Task[None] | None = None

    def follow(self, source: KubeSource) -> None:
        """Write the status of the Istio objects `source` reads."""
        self._source = source
        source.subscribe_results(self.writers.results_changed)

    def _results(self) -> Mapping[ObjectKey, ObjectResult]:
        return self._source.object_results() if self._source is not None else {}

    async def load_ca(self, stop: asyncio.Event) -> None:
        """The CA from the cluster's Secret, before anything is signed; retried with backoff
        while the API cannot be reached (until `stop`). CAError for a Secret that is there but
        unusable: no new root is made over it."""
        if self.cluster_ca is None:
            return
        delay = _CA_LOAD_BACKOFF[0]
        while not stop.is_set():
            try:
                source = await self.cluster_ca.load()
            except CAError:
                raise
            except Exception as err:
                log.warning("cannot load the CA from the cluster; retrying",
                            error=str(err)[:300], retry_in=delay)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, _CA_LOAD_BACKOFF[1])
                continue
            log.info("CA loaded from the cluster", secret=source)
            return

    def start(self) -> None:
        self._election = asyncio.create_task(self.elector.run(), name="leader-election")
        if self.cluster_ca is not None:
            self._tasks.append(asyncio.create_task(self.cluster_ca.watch(), name="ca-secret"))

    async def stop(self) -> None:
        """Stop writing, give the Lease up (so another replica leads at once), stop watching."""
        if self._election is not None:
            await stop_elector(self.elector, self._election)
        await self.writers.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict[str, Any]:
        """For /debug (read-only)."""
        out = self.elector.status()
        out["ca"] = self._ca.source
        publisher = self.writers.publisher
        out["root_configmaps_written"] = publisher.writes if publisher is not None else 0
        status = self.writers.status
        out["status_written"] = status.writes if status is not None else 0
        deployer = self.writers.gateway_deployer
        out["gateway_children_written"] = deployer.writes if deployer is not None else 0
        return out
