"""Status of the Gateway API objects istiolite handles, written by the leader: what
`PushContext.gateway_api_status()` computes (a pure function of the config), merge-patched onto
each object's /status subresource only when it differs from what the object carries, timestamps
aside. Each condition's `lastTransitionTime` is kept while its status stays the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.meta import ObjectKey
from istiolite.operator.status import StatusApi
from istiolite.operator.workqueue import WorkQueue
from istiolite.sources.kube.errors import NotFound
from istiolite.sources.kube.refs import ObjectRef
from istiolite.sources.kube.resources import WATCHED

log = get_logger("gateway-api-status")
WORKERS = 4
_TIMES = ("lastTransitionTime",)


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _conditions_by_type(conditions: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(conditions, list):
        return {}
    return {str(c.get("type")): c for c in conditions if isinstance(c, dict)}


def _stamp(conditions: list[dict[str, Any]], before: Any, now: str) -> list[dict[str, Any]]:
    old = _conditions_by_type(before)
    out = []
    for c in conditions:
        prior = old.get(c["type"])
        kept = prior.get("lastTransitionTime") if prior else None
        same = prior is not None and prior.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": kept if same and kept else now})
    return out


def with_times(desired: dict[str, Any], current: Mapping[str, Any], now: str) -> dict[str, Any]:
    """`desired` with every condition (of the object, its listeners, its parents) stamped."""
    out = dict(desired)
    if "conditions" in desired:
        out["conditions"] = _stamp(desired["conditions"], current.get("conditions"), now)
    for field, key in (("listeners", "name"), ("parents", "parentRef")):
        if field not in desired:
            continue
        found = current.get(field)
        existing: list[Any] = found if isinstance(found, list) else []
        by_key = {str(e.get(key)): e for e in existing if isinstance(e, dict)}
        out[field] = [
            {
                **item,
                "conditions": _stamp(
                    item["conditions"], by_key.get(str(item[key]), {}).get("conditions"), now
                ),
            }
            for item in desired[field]
        ]
    return out


class GatewayApiStatusWriter:
    """Keys in (`changed`, e.g. after every push); `run()` while leader writes what differs."""

    def __init__(
        self,
        api: StatusApi,
        statuses: Callable[[], Mapping[ObjectKey, dict[str, Any]]],
        *,
        workers: int = WORKERS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        addresses: Callable[[ObjectKey], list[dict[str, str]] | None] | None = None,
    ) -> None:
        self._api = api
        self._statuses = statuses
        # A Gateway's status.addresses, from the Service the gateway deployment made for it.
        self._addresses = addresses
        self._workers = workers
        self._now = now
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self._known: dict[ObjectKey, Any] = {}  # what is known to be on each object
        self.writes = 0

    def changed(self, keys: frozenset[ObjectKey] | None = None) -> None:
        """Queue `keys` (all objects with a status when None)."""
        for key in keys if keys is not None else frozenset(self._statuses()):
            self.queue.add(key)

    async def run(self) -> None:
        self.changed()
        await self.queue.run(self.reconcile, self._workers)

    async def reconcile(self, key: ObjectKey) -> None:
        desired = self._statuses().get(key)
        kind = WATCHED.get(key.kind)
        if desired is None or kind is None:
            self._known.pop(key, None)
            return
        addresses = self._addresses(key) if self._addresses is not None else None
        if addresses is not None:
            desired = {**desired, "addresses": addresses}
        if self._known.get(key) == desired:
            return
        ref = ObjectRef(
            f"{kind.group}/{kind.versions[0]}",
            kind.api_kind or kind.kind,
            kind.plural,
            key.namespace,
            key.name,
        )
        try:
            current = await self._api.get(ref)
        except NotFound:
            return
        raw = current.get("status")
        existing: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        mine = {k: existing.get(k) for k in desired}
        if _without_times(mine) != desired:
            now = self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            patch = {"status": with_times(desired, existing, now)}
            try:
                await self._api.merge_patch(ref, patch, subresource="status")
            except NotFound:
                return
            except Exception:
                metrics.OPERATOR_WRITES.inc(key.kind, "error")
                raise
            metrics.OPERATOR_WRITES.inc(key.kind, "ok")
            self.writes += 1
            log.info("status written", object=str(key))
        self._known[key] = desired
