"""Kubernetes → the store: one informer per watched kind, every object through the same parsing
and validation as a config file, each informer's batch applied as one store update.

Istio kinds are watched only while their CustomResourceDefinition is installed (learned by
watching CRDs): a missing CRD is not an error and does not hold back readiness, and the kind is
picked up when it appears.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.kinds import UnknownKind, parse_object, unsupported_kind
from istiolite.model.meta import ObjectKey
from istiolite.model.secret import CA_KEYS, CERT_KEYS, KEY_KEYS
from istiolite.model.store import ConfigStore
from istiolite.model.validation import ValidationError
from istiolite.sources.kube.client import ApiError, KubeClient
from istiolite.sources.kube.informer import Batch, Informer, InformerOptions
from istiolite.sources.kube.resources import CRDS, NOT_TRANSLATED, WATCHED, WatchedKind, by_crd
from istiolite.sources.kube.results import ObjectResult, ResultsListener

log = get_logger("sources.kube")

SOURCE_PREFIX = "kubernetes/"  # store source ids: one per kind
_INVALID_OBJECT = "invalid object rejected"  # the files source's event and metric reason
_TLS_KEYS = frozenset(CERT_KEYS + KEY_KEYS + CA_KEYS)


class KubeSource:
    """Watches the cluster's Services, Pods, Nodes, Namespaces, TLS Secrets, EndpointSlices and
    Istio kinds into `store`. Run with `run()`; `synced` once every informer has listed once."""

    def __init__(
        self,
        client: KubeClient,
        store: ConfigStore,
        *,
        options: InformerOptions | None = None,
        kinds: Iterable[WatchedKind] | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._options = options or InformerOptions()
        if kinds is None:
            kinds = [*WATCHED.values(), *NOT_TRANSLATED.values()]
        self._kinds = {k.kind: k for k in kinds}
        self.informers: dict[str, Informer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._keys: dict[str, set[ObjectKey]] = {k: set() for k in self._kinds}
        self._results: dict[ObjectKey, ObjectResult] = {}
        self._rejected: dict[ObjectKey, tuple[str, str]] = {}
        # Objects of kinds istiolite does not translate, as /debug/configz lists them.
        self._unsupported: dict[ObjectKey, dict[str, Any]] = {}
        self._result_listeners: list[ResultsListener] = []
        self._crds: Informer | None = None
        self._synced = asyncio.Event()
        self._started = False
        self._running = asyncio.Event()

    # --- what others read -----------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every informer (and the CRD watch) has listed once; stays true from then on."""
        if not self._synced.is_set() and self._all_synced():
            self._synced.set()
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._running.wait()
        while not self.synced:
            pending = [i for i in self._readiness_informers() if not i.synced.is_set()]
            if self._crds is not None and not self._crds.synced.is_set():
                pending.append(self._crds)
            waits = [asyncio.ensure_future(i.synced.wait()) for i in pending]
            try:
                # Bounded: the set of informers changes as CRDs come and go.
                await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    def object_results(self) -> dict[ObjectKey, ObjectResult]:
        """The last result of every Istio object read (valid or rejected)."""
        return dict(self._results)

    def subscribe_results(self, callback: ResultsListener) -> None:
        self._result_listeners.append(callback)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The objects currently rejected (object, field, message), as /debug/configz lists."""
        return [
            {"source": "kubernetes", "object": str(key), "field": f, "message": m}
            for key, (f, m) in sorted(self._rejected.items(), key=lambda kv: str(kv[0]))
        ]

    @property
    def unsupported(self) -> list[dict[str, Any]]:
        """The objects of mesh kinds istiolite does not translate (they have no effect)."""
        return [self._unsupported[key] for key in sorted(self._unsupported, key=str)]

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            for kind in self._kinds.values():
                if not kind.custom:
                    self._start(kind, kind.resource())
            if any(k.custom for k in self._kinds.values()):
                self._crds = Informer(
                    self._client,
                    CRDS,
                    self._on_crds,
                    self._crd_options(),
                    on_error=self._on_crd_error,
                )
                self._tasks["<crds>"] = asyncio.create_task(self._crds.run(), name="kube-crds")
            self._started = True
            self._running.set()
            await asyncio.Event().wait()
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _crd_options(self) -> InformerOptions:
        return replace(self._options, namespaces=None, label_selector="")

    def _all_synced(self) -> bool:
        if not self._started:
            return False
        if self._crds is not None and not self._crds.synced.is_set():
            return False
        return all(informer.synced.is_set() for informer in self._readiness_informers())

    def _readiness_informers(self) -> list[Informer]:
        """The informers readiness waits for: not those of kinds only reported (a cluster whose
        RBAC does not let istiolite list EnvoyFilters must still get config)."""
        return [i for name, i in self.informers.items() if self._kinds[name].translated]

    def _start(self, kind: WatchedKind, resource: Any) -> None:
        informer = Informer(
            self._client,
            resource,
            lambda batch: self._apply(kind, informer, batch),
            self._options,
        )
        self.informers[kind.kind] = informer
        self._tasks[kind.kind] = asyncio.create_task(informer.run(), name=f"kube-{kind.plural}")
        log.info("watching", resource=str(resource))

    def _stop(self, kind: WatchedKind) -> None:
        task = self._tasks.pop(kind.kind, None)
        if task is not None:
            task.cancel()
        self.informers.pop(kind.kind, None)
        gone = self._keys[kind.kind]
        self._keys[kind.kind] = set()
        for key in gone:
            self._unsupported.pop(key, None)
        self._forget(gone)
        self._store.update_source(SOURCE_PREFIX + kind.kind, {}, gone)

    def _on_crd_error(self, err: ApiError) -> None:
        """Not allowed to watch CRDs (RBAC): read every Istio kind at its preferred version
        instead; one whose CRD is missing reads as empty (and is listed again with backoff)."""
        if err.status != 403 or self._crds is None:
            return
        log.warning(
            "cannot watch CustomResourceDefinitions; reading the Istio kinds at their preferred "
            "version (grant list/watch on customresourcedefinitions to follow installs)",
            error=str(err)[:300],
        )
        task = self._tasks.pop("<crds>", None)
        if task is not None:
            task.cancel()
        self._crds = None
        for kind in self._kinds.values():
            if kind.custom and kind.kind not in self.informers:
                self._start(kind, kind.resource())

    def _on_crds(self, batch: Batch) -> None:
        """Start a kind's informer when its CRD serves a version istiolite reads; stop it (and
        drop its objects) when the CRD goes."""
        for crd in batch.upserts.values():
            kind = by_crd(crd, self._kinds.values())
            if kind is None:
                continue
            version = kind.served_version(crd)
            running = self.informers.get(kind.kind)
            if version is None:
                if running is not None:
                    log.info("CRD serves no version istiolite reads", kind=kind.kind)
                    self._stop(kind)
                continue
            if running is not None and running.resource.version == version:
                continue
            if running is not None:
                self._stop(kind)
            self._start(kind, kind.resource(version))
        for _, name in batch.deletes:
            for kind in self._kinds.values():
                if kind.custom and name == f"{kind.plural}.{kind.group}":
                    log.info("CRD removed; its objects are dropped", kind=kind.kind)
                    self._stop(kind)

    # --- objects ----------------------------------------------------------------------------

    def _apply(self, kind: WatchedKind, informer: Informer, batch: Batch) -> None:
        if self.informers.get(kind.kind) is not informer:
            return  # a batch of an informer already stopped
        if not kind.translated:
            self._note_unsupported(kind, informer, batch)
            return
        keys = self._keys[kind.kind]
        upserts: dict[ObjectKey, Any] = {}
        deletes: set[ObjectKey] = set()
        gone: set[ObjectKey] = set()  # no longer in the cluster (or no longer read)
        results: dict[ObjectKey, ObjectResult] = {}
        for (namespace, name), raw in batch.upserts.items():
            key = ObjectKey(kind.kind, namespace, name)
            if kind.kind == "Secret" and not _tls_secret(raw):
                gone.add(key)  # e.g. its type changed: no longer a credential
                continue
            obj, result = self._parse(key, raw)
            if kind.custom:
                results[key] = result
            if obj is None:
                deletes.add(key)  # as istiod: an invalid object is dropped, not kept
            else:
                upserts[key] = obj
        gone.update(ObjectKey(kind.kind, ns, name) for ns, name in batch.deletes)
        if batch.relist:
            # What this informer no longer lists (e.g. it replaced one of another version).
            listed = informer.keys()
            gone.update(k for k in keys if (k.namespace, k.name) not in listed)
        deletes |= gone
        keys.difference_update(deletes)
        keys.update(upserts)
        self._store.update_source(SOURCE_PREFIX + kind.kind, upserts, deletes)
        self._forget(gone)
        self._set_results(results)

    def _note_unsupported(self, kind: WatchedKind, informer: Informer, batch: Batch) -> None:
        """Count and show each object of a kind istiolite does not translate, once: when it
        first appears (as the file source does); nothing goes into the store."""
        keys = self._keys[kind.kind]
        gone = {ObjectKey(kind.kind, ns, name) for ns, name in batch.deletes}
        if batch.relist:
            listed = informer.keys()
            gone.update(k for k in keys if (k.namespace, k.name) not in listed)
        for (namespace, name), raw in batch.upserts.items():
            key = ObjectKey(kind.kind, namespace, name)
            if key in keys:
                continue
            keys.add(key)
            api_version = str(raw.get("apiVersion") or kind.resource().api_version)
            err = unsupported_kind(kind.kind, api_version)
            item = {
                "source": "kubernetes",
                "object": str(key),
                "kind": kind.kind,
                "apiVersion": api_version,
                "message": str(err) if err is not None else f"not supported: {kind.kind}",
            }
            self._unsupported[key] = item
            log.warning("object of unsupported kind has no effect", **item)
            metrics.UNSUPPORTED_OBJECTS.inc(kind.kind)
        for key in gone:
            keys.discard(key)
            self._unsupported.pop(key, None)

    def _parse(self, key: ObjectKey, raw: dict[str, Any]) -> tuple[Any | None, ObjectResult]:
        metadata = raw.get("metadata") or {}
        generation = metadata.get("generation")
        result = ObjectResult(
            generation=generation if isinstance(generation, int) else 0,
            api_version=str(raw.get("apiVersion") or ""),
        )
        try:
            _, obj = parse_object(raw)
        except UnknownKind:
            return None, result  # not reachable: informers watch known kinds only
        except ValidationError as exc:
            return None, self._reject(key, result, exc.field, exc.message)
        except Exception as exc:  # a model bug costs one object, not the watch
            return None, self._reject(key, result, "", f"could not be parsed: {exc!r}")
        self._rejected.pop(key, None)
        warnings = [f"{f}: {m}" if f else m for f, m in obj.meta.unapplied]
        # resourceVersion changes with every write, status ones included (the leader's own):
        # kept, it would make each of those a config change and a push.
        obj = replace(obj, meta=replace(obj.meta, resource_version=""))
        return obj, replace(result, warnings=warnings)

    def _reject(
        self, key: ObjectKey, result: ObjectResult, field: str, message: str
    ) -> ObjectResult:
        if self._rejected.get(key) != (field, message):
            log.error(
                _INVALID_OBJECT, source="kubernetes", object=str(key), field=field, message=message
            )
            metrics.INVALID_CONFIG.inc(_INVALID_OBJECT)
        self._rejected[key] = (field, message)
        return replace(result, errors=[(field, message)])

    def _forget(self, keys: Iterable[ObjectKey]) -> None:
        results: dict[ObjectKey, ObjectResult | None] = {}
        for key in keys:
            self._rejected.pop(key, None)
            results[key] = None
        self._set_results(results)

    def _set_results(self, results: Mapping[ObjectKey, ObjectResult | None]) -> None:
        changed: set[ObjectKey] = set()
        for key, result in results.items():
            before = self._results.get(key)
            if result is None:
                if before is not None:
                    del self._results[key]
                    changed.add(key)
            elif before != result:
                self._results[key] = result
                changed.add(key)
        if changed:
            frozen = frozenset(changed)
            for listener in self._result_listeners:
                try:
                    listener(frozen)
                except Exception:
                    log.exception("object results listener failed")


def _tls_secret(raw: dict[str, Any]) -> bool:
    """Secrets istiolite reads: kubernetes.io/tls, and Opaque (or untyped) ones holding TLS keys
    as Istio's credentialName accepts them."""
    kind = raw.get("type") or "Opaque"
    if kind == "kubernetes.io/tls":
        return True
    if kind != "Opaque":
        return False
    data = raw.get("data")
    return isinstance(data, dict) and not _TLS_KEYS.isdisjoint(data)
