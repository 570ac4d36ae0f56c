"""The mesh's trust bundle in every namespace, as istiod publishes it: ConfigMap
`istio-ca-root-cert`, key `root-cert.pem`, label `istio.io/config: "true"` — created for a new
namespace, recreated when deleted, corrected when edited, rewritten when the root changes.
Only the leader runs it. Each namespace is a key of a work queue: reconciling reads the
ConfigMap and writes only what differs (create, or replace with the resourceVersion read), so
a repeat is harmless and a conflict just means "read again".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.operator.workqueue import WorkQueue
from istiolite.sources.kube.errors import Conflict, NotFound
from istiolite.sources.kube.refs import ObjectRef, config_map

log = get_logger("root-configmaps")

CONFIGMAP_NAME = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"
CONFIG_LABEL = "istio.io/config"
# Namespaces istiod leaves alone (pilot/pkg/keycertbundle + namespace controller).
EXCLUDED_NAMESPACES = frozenset({"kube-public", "kube-node-lease", "local-path-storage"})
WORKERS = 4  # ConfigMap writes in flight at once


class ConfigMapApi(Protocol):
    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]: ...

    async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(
        self, ref: ObjectRef, obj: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]: ...


class RootCertPublisher:
    """Feed it namespace and ConfigMap events (`namespace_seen`, `namespace_gone`,
    `configmap_changed`) and root changes (`root_changed`); `run()` while leader."""

    def __init__(
        self,
        api: ConfigMapApi,
        bundle: Callable[[], bytes],
        *,
        namespaces: frozenset[str] | None = None,
        workers: int = WORKERS,
    ) -> None:
        self._api = api
        self._bundle = bundle
        self._only = namespaces  # --watch-namespaces; None: every namespace
        self._workers = workers
        self.namespaces: set[str] = set()
        self.queue: WorkQueue[str] = WorkQueue()
        self.writes = 0  # creates and replaces made (for tests and /debug)

    def wanted(self, namespace: str) -> bool:
        if namespace in EXCLUDED_NAMESPACES:
            return False
        return self._only is None or namespace in self._only

    def _desired_data(self) -> dict[str, str]:
        return {ROOT_CERT_KEY: self._bundle().decode()}

    def up_to_date(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        labels = meta.get("labels") if isinstance(meta, dict) else None
        labelled = isinstance(labels, dict) and labels.get(CONFIG_LABEL) == "true"
        return labelled and obj.get("data") == self._desired_data()

    # --- events -----------------------------------------------------------------------------

    def namespaces_synced(self, names: Iterable[str]) -> None:
        """The full set of namespaces (a first list or a relist): reconcile every one."""
        self.namespaces = {n for n in names if self.wanted(n)}
        for name in sorted(self.namespaces):
            self.queue.add(name)

    def namespace_seen(self, name: str) -> None:
        if self.wanted(name) and name not in self.namespaces:
            self.namespaces.add(name)
            self.queue.add(name)

    def namespace_gone(self, name: str) -> None:
        self.namespaces.discard(name)

    def configmap_changed(self, namespace: str, obj: dict[str, Any] | None) -> None:
        """Our ConfigMap in `namespace` changed (None: deleted). Our own writes come back here
        too; they are already what we want, so they queue nothing."""
        if namespace in self.namespaces and (obj is None or not self.up_to_date(obj)):
            self.queue.add(namespace)

    def root_changed(self) -> None:
        for name in sorted(self.namespaces):
            self.queue.add(name)

    # --- work -------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.queue.run(self.reconcile, self._workers)

    async def reconcile(self, namespace: str) -> None:
        """Make the ConfigMap of `namespace` what it should be; raises to be retried."""
        if namespace not in self.namespaces:
            return
        ref = config_map(namespace, CONFIGMAP_NAME)
        try:
            current = await self._api.get(ref)
        except NotFound:
            current = None
        if current is not None and self.up_to_date(current):
            return
        data = self._desired_data()
        try:
            if current is None:
                await self._api.create(
                    ref, {"metadata": {"labels": {CONFIG_LABEL: "true"}}, "data": data}
                )
                action = "created"
            else:
                meta = dict(current.get("metadata") or {})
                meta["labels"] = {**(meta.get("labels") or {}), CONFIG_LABEL: "true"}
                # Our key only: an edit that added keys is undone too (istiod's behaviour).
                await self._api.replace(ref, {"metadata": meta, "data": data})
                action = "corrected"
        except Conflict:
            metrics.OPERATOR_WRITES.inc("ConfigMap", "conflict")
            self.queue.add(namespace)  # changed (or created) meanwhile: read it again
            return
        except NotFound:
            # The namespace is going away (or gone): the namespace event will say so.
            metrics.OPERATOR_WRITES.inc("ConfigMap", "gone")
            return
        except Exception:
            metrics.OPERATOR_WRITES.inc("ConfigMap", "error")
            raise
        self.writes += 1
        metrics.OPERATOR_WRITES.inc("ConfigMap", "ok")
        log.info("root ConfigMap " + action, namespace=namespace)
