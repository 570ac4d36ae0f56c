"""Status of the Istio objects read from the cluster, in Istio's shape (istio.meta.v1alpha1
IstioStatus): `status.conditions` with a `Reconciled` condition carrying `observedGeneration`,
and `status.validationMessages` (analysis messages: type code/name, level) for the errors and
warnings the source found, each with its `message` naming the field.

Written by the leader only, through the /status subresource with a merge patch, and only when
what it would write differs from what the object has (timestamps aside): its own write comes
back as a MODIFIED event with the same generation and result, which changes nothing here, so
there is no write loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.meta import ObjectKey
from istiolite.operator.workqueue import WorkQueue
from istiolite.sources.kube.errors import NotFound
from istiolite.sources.kube.refs import ObjectRef
from istiolite.sources.kube.resources import WATCHED
from istiolite.sources.kube.results import ObjectResult

log = get_logger("status")

RECONCILED = "Reconciled"
MAX_MESSAGES = 20  # validationMessages per object: the object's author controls how many
MAX_MESSAGE_CHARS = 1000
WORKERS = 4
# istioctl analyze's code for an object that fails schema validation.
_SCHEMA_ERROR = {"code": "IST0106", "name": "SchemaValidationError"}
_SCHEMA_ERROR_DOC = "https://istio.io/latest/docs/reference/config/analysis/ist0106/"
_WARNING = {"name": "ConfigWarning"}


class StatusApi(Protocol):
    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]: ...

    async def merge_patch(
        self, ref: ObjectRef, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]: ...


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def desired_status(key: ObjectKey, result: ObjectResult) -> dict[str, Any]:
    """The status `result` calls for, without timestamps."""
    messages: list[dict[str, Any]] = []
    for field, message in result.errors:
        text = f"{key}: {field}: {message}" if field else f"{key}: {message}"
        messages.append(
            {
                "type": dict(_SCHEMA_ERROR),
                "level": "ERROR",
                "documentationUrl": _SCHEMA_ERROR_DOC,
                "message": _clip(text),
            }
        )
    for warning in result.warnings:
        messages.append({"type": dict(_WARNING), "level": "WARNING", "message": _clip(warning)})
    condition: dict[str, Any]
    if result.errors:
        field, message = result.errors[0]
        condition = {
            "type": RECONCILED,
            "status": "False",
            "reason": "Invalid",
            "message": _clip(f"{field}: {message}" if field else message),
        }
    else:
        condition = {
            "type": RECONCILED,
            "status": "True",
            "reason": "Accepted",
            "message": "accepted and served to the proxies it applies to",
        }
    condition["observedGeneration"] = result.generation
    status: dict[str, Any] = {"conditions": [condition], "observedGeneration": result.generation}
    if messages:
        status["validationMessages"] = messages[:MAX_MESSAGES]
    return status


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status istiolite compares: its own fields, no timestamps."""
    conditions = status.get("conditions")
    out: dict[str, Any] = {
        "conditions": [
            {k: v for k, v in c.items() if k not in ("lastTransitionTime", "lastProbeTime")}
            for c in (conditions if isinstance(conditions, list) else [])
            if isinstance(c, dict)
        ],
        "observedGeneration": status.get("observedGeneration"),
    }
    if status.get("validationMessages"):
        out["validationMessages"] = status.get("validationMessages")
    return out


def same_status(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    return _without_times(current) == _without_times(desired)


def _with_times(desired: dict[str, Any], current: Mapping[str, Any], now: str) -> dict[str, Any]:
    """`desired` with each condition's lastTransitionTime: kept when its status did not
    change, now when it did."""
    before = {
        c.get("type"): c
        for c in (current.get("conditions") or [])
        if isinstance(c, dict)
    }  # fmt: skip
    conditions = []
    for condition in desired["conditions"]:
        old = before.get(condition["type"])
        kept = old.get("lastTransitionTime") if isinstance(old, dict) else None
        same = isinstance(old, dict) and old.get("status") == condition["status"]
        conditions.append({**condition, "lastTransitionTime": kept if same and kept else now})
    return {**desired, "conditions": conditions}


class StatusWriter:
    """Keys of changed results go in (`changed`); `run()` while leader writes what differs."""

    def __init__(
        self,
        api: StatusApi,
        results: Callable[[], Mapping[ObjectKey, ObjectResult]],
        *,
        workers: int = WORKERS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._results = results
        self._workers = workers
        self._now = now
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        # What is known to be on each object: (generation, status without times).
        self._known: dict[ObjectKey, tuple[int, dict[str, Any]]] = {}
        self.writes = 0

    def changed(self, keys: frozenset[ObjectKey]) -> None:
        for key in keys:
            kind = WATCHED.get(key.kind)
            if kind is not None and kind.custom:  # the Istio kinds: they have a status
                self.queue.add(key)

    def resync(self) -> None:
        self.changed(frozenset(self._results()))

    async def run(self) -> None:
        self.resync()
        await self.queue.run(self.reconcile, self._workers)

    async def reconcile(self, key: ObjectKey) -> None:
        result = self._results().get(key)
        if result is None:
            self._known.pop(key, None)
            return
        desired = desired_status(key, result)
        known = self._known.get(key)
        if known is not None and known == (result.generation, _without_times(desired)):
            return
        plural = WATCHED[key.kind].plural
        ref = ObjectRef(result.api_version, key.kind, plural, key.namespace, key.name)
        try:
            current = await self._api.get(ref)
        except NotFound:
            return  # deleted meanwhile: its DELETED event removes the result
        meta = current.get("metadata") if isinstance(current.get("metadata"), dict) else {}
        generation = meta.get("generation") if isinstance(meta, dict) else None
        if isinstance(generation, int) and generation != result.generation:
            return  # the result is of another generation: the newer event will come
        raw = current.get("status")
        existing: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        if not same_status(existing, desired):
            now = self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = _with_times(desired, existing, now)
            try:
                await self._api.merge_patch(ref, {"status": status}, subresource="status")
            except NotFound:
                return
            except Exception:
                metrics.OPERATOR_WRITES.inc(key.kind, "error")
                raise
            metrics.OPERATOR_WRITES.inc(key.kind, "ok")
            self.writes += 1
            log.info("status written", object=str(key), generation=result.generation,
                     valid=not result.errors)  # fmt: skip
        self._known[key] = (result.generation, _without_times(desired))
