"""The mesh root in the `caBundle` of istiolite's two webhook configurations, as istiod keeps it:
the API server verifies the webhook server's certificate (issued by the mesh CA) with it.

Only the leader runs it. `istio-validator-istio-system` and `istio-sidecar-injector` are watched
by name; each is reconciled when it changes (someone edited or re-applied it), when the root
changes, and when leadership starts: every webhook's `clientConfig.caBundle` becomes the trust
bundle, and once validation can be verified its `failurePolicy` becomes `Fail` (the manifest
ships `Ignore`, so that config writes are not blocked before a server is reachable), as istiod
does. The write is a merge patch of the whole `webhooks` list carrying the resourceVersion read:
a concurrent edit makes it a conflict, and the object is read again. A configuration that is not
installed is left alone (istiolite does not create it).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.operator.workqueue import WorkQueue
from istiolite.sources.kube.errors import Conflict, NotFound
from istiolite.sources.kube.refs import ObjectRef
from istiolite.sources.kube.resources import ApiResource

log = get_logger("webhook-ca-bundle")

_GROUP = "admissionregistration.k8s.io"


@dataclass(frozen=True, slots=True)
class WebhookConfiguration:
    resource: ApiResource
    name: str
    fail_closed: bool  # failurePolicy Fail once the caBundle is in place

    @property
    def ref(self) -> ObjectRef:
        r = self.resource
        return ObjectRef(f"{r.group}/{r.version}", r.kind, r.plural, "", self.name)


VALIDATING = ApiResource(
    _GROUP, "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False
)
MUTATING = ApiResource(
    _GROUP, "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False
)
CONFIGURATIONS = (
    WebhookConfiguration(VALIDATING, "istio-validator-istio-system", fail_closed=True),
    # Injection already fails closed in the manifest, as Istio's.
    WebhookConfiguration(MUTATING, "istio-sidecar-injector", fail_closed=False),
)


class WebhookApi(Protocol):
    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]: ...

    async def merge_patch(
        self, ref: ObjectRef, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]: ...


def desired_webhooks(
    webhooks: Any, bundle: bytes, *, fail_closed: bool
) -> list[dict[str, Any]] | None:
    """The `webhooks` list with the bundle in place; None when it already is as wanted."""
    if not isinstance(webhooks, list):
        return None
    encoded = base64.b64encode(bundle).decode()
    out, changed = [], False
    for hook in webhooks:
        if not isinstance(hook, dict):
            out.append(hook)
            continue
        new = copy.deepcopy(hook)
        client = new.setdefault("clientConfig", {})
        if isinstance(client, dict) and client.get("caBundle") != encoded:
            client["caBundle"] = encoded
            changed = True
        if fail_closed and new.get("failurePolicy") != "Fail":
            new["failurePolicy"] = "Fail"
            changed = True
        out.append(new)
    return out if changed else None


class WebhookCaBundle:
    """Feed it `configuration_changed(name)` and `root_changed()`; `run()` while leader."""

    def __init__(
        self,
        api: WebhookApi,
        bundle: Callable[[], bytes],
        configurations: tuple[WebhookConfiguration, ...] = CONFIGURATIONS,
    ) -> None:
        self._api = api
        self._bundle = bundle
        self._by_name = {c.name: c for c in configurations}
        self.queue: WorkQueue[str] = WorkQueue()
        self.writes = 0

    def configuration_changed(self, name: str) -> None:
        if name in self._by_name:
            self.queue.add(name)

    def root_changed(self) -> None:
        for name in sorted(self._by_name):
            self.queue.add(name)

    async def run(self) -> None:
        self.root_changed()  # a new leader checks both once
        await self.queue.run(self.reconcile, len(self._by_name))

    async def reconcile(self, name: str) -> None:
        """Make one configuration's webhooks carry the bundle; raises to be retried."""
        config = self._by_name[name]
        try:
            current = await self._api.get(config.ref)
        except NotFound:
            log.info("webhook configuration not installed; nothing to patch", name=name)
            return
        webhooks = desired_webhooks(
            current.get("webhooks"), self._bundle(), fail_closed=config.fail_closed
        )
        if webhooks is None:
            return
        meta = current.get("metadata") if isinstance(current.get("metadata"), dict) else {}
        version = meta.get("resourceVersion", "") if isinstance(meta, dict) else ""
        patch = {"metadata": {"resourceVersion": version}, "webhooks": webhooks}
        kind = config.resource.kind
        try:
            await self._api.merge_patch(config.ref, patch)
        except Conflict:
            metrics.OPERATOR_WRITES.inc(kind, "conflict")
            self.queue.add(name)  # edited meanwhile: read it again
            return
        except NotFound:
            metrics.OPERATOR_WRITES.inc(kind, "gone")
            return
        except Exception:
            metrics.OPERATOR_WRITES.inc(kind, "error")
            raise
        self.writes += 1
        metrics.OPERATOR_WRITES.inc(kind, "ok")
        log.info("webhook caBundle patched", name=name, webhooks=len(webhooks))
