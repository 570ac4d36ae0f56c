"""The leader's gateway deployment controller, as istiod's: every Gateway of istiolite's classes
without `spec.addresses` gets the ServiceAccount, Deployment and Service of
`gateway_children.py`, kept in shape.

Informers of Gateways and of the three child kinds (those labelled as managed) feed a work queue
of Gateways; a child event queues its owner. Reconciling compares each desired child with the
informer's copy and writes only what differs: POST when missing, PUT of the current object with
our fields put back (with its resourceVersion: a Conflict means "read again") when an edit
changed one. Compare-then-PUT rather than server-side apply: a forced apply would leave fields
another manager added (a port a user appended stays), and an apply every resync is a write
request even when nothing changes; here an unchanged Gateway costs no request at all.

Deleting is the garbage collector's: every child has the Gateway as its controlling owner.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.gatewayapi.gateway import CONTROLLERS
from istiolite.model.meta import ObjectKey
from istiolite.operator.gateway_children import (
    MANAGED_LABEL,
    MANAGED_VALUE,
    ChildError,
    GatewayDeploymentConfig,
    children,
    class_controller,
    corrected,
    covers,
    deployment_name,
    gateway_addresses,
    managed,
)
from istiolite.operator.workqueue import WorkQueue
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.errors import Conflict, NotFound
from istiolite.sources.kube.informer import Batch, Informer, InformerOptions
from istiolite.sources.kube.refs import ObjectRef
from istiolite.sources.kube.resources import ApiResource

log = get_logger("gateway-deployment")

GATEWAYS = ApiResource("gateway.networking.k8s.io", "v1", "gateways", "Gateway", True)
GATEWAY_CLASSES = ApiResource(
    "gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", False
)
CHILD_KINDS = {
    "ServiceAccount": ApiResource("", "v1", "serviceaccounts", "ServiceAccount", True),
    "Deployment": ApiResource("apps", "v1", "deployments", "Deployment", True),
    "Service": ApiResource("", "v1", "services", "Service", True),
}
GATEWAY_STATUS_KIND = "KubernetesGateway"  # the key the Gateway API status writer uses
WORKERS = 4
Key = tuple[str, str]  # (namespace, name)


class GatewayDeployer:
    """`run()` while leader; `addresses(key)` is what the Gateway's status.addresses should be
    (None when it has no Service of ours)."""

    def __init__(
        self,
        kube: KubeClient,
        config: GatewayDeploymentConfig,
        *,
        options: InformerOptions | None = None,
        addresses_changed: Callable[[ObjectKey], None] | None = None,
        workers: int = WORKERS,
    ) -> None:
        self._kube = kube
        self._config = config
        self._options = options or InformerOptions()
        self._addresses_changed = addresses_changed
        self._workers = workers
        self.gateways: dict[Key, dict[str, Any]] = {}
        self.classes: frozenset[str] = frozenset()  # GatewayClasses naming our controller
        self.children: dict[str, dict[Key, dict[str, Any]]] = {k: {} for k in CHILD_KINDS}
        self.queue: WorkQueue[Key] = WorkQueue()
        self._synced = False
        self._addresses: dict[Key, list[dict[str, str]]] = {}
        self.writes = 0  # creates and updates made (for tests, bench and /debug)
        self.reconciles = 0  # Gateways reconciled to the end

    # --- events -----------------------------------------------------------------------------

    def _on_gateways(self, batch: Batch) -> None:
        for key, obj in batch.upserts.items():
            self.gateways[key] = obj
            self._queue(key)
        for key in batch.deletes:
            self.gateways.pop(key, None)
            if self._addresses.pop(key, None) is not None:
                self._notify(key)

    def _on_classes(self, batch: Batch) -> None:
        classes = set(self.classes)
        for (_ns, name), obj in batch.upserts.items():
            if class_controller(obj) in CONTROLLERS:
                classes.add(name)
            else:
                classes.discard(name)
        classes -= {name for _ns, name in batch.deletes}
        if classes != self.classes:
            changed = classes ^ self.classes
            self.classes = frozenset(classes)
            for key, gateway in self.gateways.items():
                spec = gateway.get("spec")
                if isinstance(spec, dict) and spec.get("gatewayClassName") in changed:
                    self._queue(key)

    def _on_children(self, kind: str) -> Callable[[Batch], None]:
        def handle(batch: Batch) -> None:
            store = self.children[kind]
            for key, obj in batch.upserts.items():
                store[key] = obj
                self._queue_owner(key[0], obj)
            for key in batch.deletes:
                gone = store.pop(key, None)
                if gone is not None:
                    self._queue_owner(key[0], gone)

        return handle

    def _queue_owner(self, namespace: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        owners = meta.get("ownerReferences") if isinstance(meta, dict) else None
        for owner in owners if isinstance(owners, list) else []:
            if isinstance(owner, dict) and owner.get("kind") == "Gateway" and owner.get("name"):
                self._queue((namespace, str(owner["name"])))

    def _queue(self, key: Key) -> None:
        if self._synced:  # before: the first full pass queues everything
            self.queue.add(key)

    def _notify(self, key: Key) -> None:
        if self._addresses_changed is not None:
            self._addresses_changed(ObjectKey(GATEWAY_STATUS_KIND, key[0], key[1]))

    def addresses(self, key: ObjectKey) -> list[dict[str, str]] | None:
        return self._addresses.get((key.namespace, key.name))

    # --- work -------------------------------------------------------------------------------

    async def run(self) -> None:
        informers = [
            Informer(self._kube, GATEWAYS, self._on_gateways, self._options),
            Informer(
                self._kube,
                GATEWAY_CLASSES,
                self._on_classes,
                dataclasses.replace(self._options, namespaces=None),
            ),
        ]
        managed_only = dataclasses.replace(
            self._options, label_selector=f"{MANAGED_LABEL}={MANAGED_VALUE}"
        )
        for kind, resource in CHILD_KINDS.items():
            informers.append(Informer(self._kube, resource, self._on_children(kind), managed_only))
        tasks = [asyncio.create_task(i.run(), name=f"gateway-deployment-{i.resource}")
                 for i in informers]  # fmt: skip
        try:
            # Compare against complete caches only: a restart then writes nothing.
            await asyncio.gather(*(i.synced.wait() for i in informers))
            self._synced = True
            for key in sorted(self.gateways):
                self.queue.add(key)
            await self.queue.run(self.reconcile, self._workers)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reconcile(self, key: Key) -> None:
        """Make the children of Gateway `key` what they should be; raises to be retried."""
        gateway = self.gateways.get(key)
        if gateway is None or not managed(gateway, self.classes):
            # Gone, or no longer ours: what it owns stays for the garbage collector (or the
            # user) — istiod does not delete children either.
            if self._addresses.pop(key, None) is not None:
                self._notify(key)
            return
        try:
            wanted = children(gateway, self._config)
        except ChildError as err:
            log.warning("gateway not deployed", error=str(err))
            metrics.OPERATOR_WRITES.inc("Gateway", "invalid")
            return
        for child in wanted:
            current = self.children[child.ref.kind].get((key[0], child.ref.name))
            if current is not None and covers(current, child.desired):
                continue
            await self._write(child.ref, current, child.desired)
        service = self.children["Service"].get((key[0], deployment_name(gateway)))
        if service is not None:
            addresses = gateway_addresses(service, self._config.domain)
            if self._addresses.get(key) != addresses:
                self._addresses[key] = addresses
                self._notify(key)
        self.reconciles += 1

    async def _write(
        self, ref: ObjectRef, current: dict[str, Any] | None, desired: dict[str, Any]
    ) -> None:
        try:
            if current is None:
                try:
                    written = await self._kube.create(ref, desired)
                    action = "created"
                except Conflict as err:
                    if not err.already_exists:
                        raise
                    # There, but not in our cache: it lost our label (our watch selects on it)
                    # or its event has not arrived. Ours if the Gateway controls it.
                    found = await self._kube.get(ref)
                    if _controller_uid(found) != _controller_uid(desired):
                        log.warning("gateway child name taken by an object the Gateway does "
                                    "not own; left alone", object=str(ref))  # fmt: skip
                        metrics.OPERATOR_WRITES.inc(ref.kind, "taken")
                        return
                    if covers(found, desired):
                        self.children[ref.kind][(ref.namespace, ref.name)] = found
                        return
                    written = await self._kube.replace(ref, corrected(found, desired))
                    action = "corrected"
            else:
                written = await self._kube.replace(ref, corrected(current, desired))
                action = "corrected"
        except Conflict:
            # Changed since we read it: the informer brings the current object, whose event
            # queues the Gateway again.
            metrics.OPERATOR_WRITES.inc(ref.kind, "conflict")
            return
        except NotFound:
            metrics.OPERATOR_WRITES.inc(ref.kind, "gone")  # deleted meanwhile: its event requeues
            return
        except Exception:
            metrics.OPERATOR_WRITES.inc(ref.kind, "error")
            raise
        # Known at once, not when its watch event comes: a sibling's event in between must
        # not make us create (or correct) it a second time.
        self.children[ref.kind][(ref.namespace, ref.name)] = written
        self.writes += 1
        metrics.OPERATOR_WRITES.inc(ref.kind, "ok")
        log.info(f"gateway {ref.kind} {action}", object=str(ref))


def _controller_uid(obj: dict[str, Any]) -> str | None:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    owners = meta.get("ownerReferences") if isinstance(meta, dict) else None
    for owner in owners if isinstance(owners, list) else []:
        if isinstance(owner, dict) and owner.get("controller") is True:
            uid = owner.get("uid")
            return uid if isinstance(uid, str) else None
    return None
