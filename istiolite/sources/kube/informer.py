"""istiolite's informer: one API resource kept in sync by list + watch, handed on as batches.

The first sync asks for a streaming list (`sendInitialEvents`) and falls back to a paged LIST
when the server answers 400/422; then a WATCH from the list's resourceVersion, with bookmarks
moving the resume point. A watch the server ends (its timeout) is resumed from there without a
relist; a 410 (the resume point is older than the server's history) relists and hands on only
the difference to what was known, as one batch. Connection failures and silent connections
(no byte for `read_timeout`) are retried with exponential backoff and jitter, resuming from the
last resourceVersion. Events are decoded from the raw JSON lines with orjson.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.sources.kube.client import ApiError, KubeClient, KubeUnavailable, WatchStream
from istiolite.sources.kube.resources import ApiResource

log = get_logger("sources.kube")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
RawObject = dict[str, Any]

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# A watch the server ended this soon without a single event is a failure, not a timeout:
# retrying it at once would spin.
_SHORT_WATCH_SECONDS = 1.0
# Expired continue tokens tolerated before the list is taken in one unpaged request.
_MAX_LIST_RESTARTS = 3


@dataclass(frozen=True, slots=True)
class Batch:
    """Objects added or changed (latest state) and keys deleted since the previous batch.
    `relist` marks the difference a (re)list made: one change, never a delete before the add of
    its replacement."""

    upserts: dict[Key, RawObject]
    deletes: frozenset[Key]
    relist: bool = False


Handler = Callable[[Batch], None]


@dataclass(frozen=True, slots=True)
class InformerOptions:
    page_size: int = 500
    # No byte for this long on an open watch: the connection is taken for dead. Bookmarks
    # (which the server sends about once a minute) and events keep a live one busy.
    read_timeout: float = 120.0
    # timeoutSeconds asked of the server for each watch, drawn from this range (as client-go,
    # so that many informers do not all re-watch at the same moment).
    watch_timeout: tuple[float, float] = (300.0, 600.0)
    request_timeout: float = 30.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # One watch event (a line) and one list: what a peer can make istiolite hold.
    max_event_bytes: int = 8 * 1024 * 1024
    max_objects: int = 500_000
    # Only these namespaces (None: all); objects of other namespaces are dropped on arrival.
    namespaces: frozenset[str] | None = None
    label_selector: str = ""
    # e.g. "metadata.name=istio-ca-root-cert": one object name in every namespace.
    field_selector: str = ""
    streaming_list: bool = True


class ProtocolError(ValueError):
    """The server sent something that is not the watch/list protocol (bad JSON, bounds)."""


class _Gone(Exception):
    """410: the resume point is older than the server's history; relist."""


@dataclass(slots=True)
class _Pending:
    upserts: dict[Key, RawObject] = field(default_factory=dict)
    deletes: set[Key] = field(default_factory=set)

    def upsert(self, key: Key, obj: RawObject) -> None:
        self.upserts[key] = obj
        self.deletes.discard(key)

    def delete(self, key: Key) -> None:
        self.upserts.pop(key, None)
        self.deletes.add(key)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)


class Informer:
    """Keeps `resource` in sync and calls `handler` with each batch of changes. `synced` is set
    once the first complete list has been handed on. Run with `run()` (cancel to stop)."""

    def __init__(
        self,
        client: KubeClient,
        resource: ApiResource,
        handler: Handler,
        options: InformerOptions | None = None,
        *,
        on_error: Callable[[ApiError], None] | None = None,
    ) -> None:
        self.resource = resource
        self._on_error = on_error
        self._client = client
        self._handler = handler
        self._options = options or InformerOptions()
        self._versions: dict[Key, str] = {}  # resourceVersion of every object handed on
        self._rv = ""  # where a watch resumes; "" means a list is needed
        self._streaming: bool = self._options.streaming_list
        self.last_error: ApiError | None = None  # the last error status the server answered
        self.synced = asyncio.Event()
        # Counters for tests, the debug view and the benchmark.
        self.lists = 0
        self.watches = 0
        self.events = 0

    @property
    def resource_version(self) -> str:
        return self._rv

    def keys(self) -> frozenset[Key]:
        return frozenset(self._versions)

    async def run(self) -> None:
        failures = 0
        while True:
            started, events = time.monotonic(), self.events
            try:
                await self._cycle()
                healthy = True
            except _Gone:
                log.info("kubernetes watch expired; relisting", resource=str(self.resource))
                self._rv = ""
                healthy = True
            except ApiError as err:
                self.last_error = err
                if self._on_error is not None:
                    self._on_error(err)
                if err.status == 404 and not self._rv:
                    self._absent(err)
                else:
                    self._note_failure(err, failures + 1)
                healthy = False
            except (KubeUnavailable, ProtocolError, ValueError) as err:
                self._note_failure(err, failures + 1)
                healthy = False
            except Exception as err:  # a bug here must not end the watch of this kind for good
                log.exception("kubernetes informer failed", resource=str(self.resource))
                self._note_failure(err, failures + 1)
                healthy = False
            # A cycle that ended at once without an event (a refused watch, a 410 right after
            # the list) is retried with backoff too, so nothing can make this loop spin.
            if healthy and (
                self.events > events or time.monotonic() - started >= _SHORT_WATCH_SECONDS
            ):
                failures = 0
                continue
            failures += 1
            await asyncio.sleep(self._backoff(failures))

    def _absent(self, err: ApiError) -> None:
        """The resource is not served (a CRD not installed, or removed): as istiod, that is an
        empty list, synced; it is listed again with backoff until it appears."""
        if self._versions or not self.synced.is_set():
            log.info(
                "kubernetes resource not served; empty until it is", resource=str(self.resource)
            )
        self._replace_all({}, "")

    def _note_failure(self, err: Exception, failures: int) -> None:
        metrics.KUBE_WATCH_FAILURES.inc(self.resource.kind)
        # The first failure of a run of them is a warning, the rest are expected repeats.
        emit = log.warning if failures == 1 else log.info
        emit(
            "kubernetes list/watch failed; retrying",
            resource=str(self.resource),
            error=str(err)[:300],
            failures=failures,
        )

    def _backoff(self, failures: int) -> float:
        options = self._options
        delay: float = min(options.backoff_max, options.backoff_base * 2.0 ** min(failures - 1, 20))
        return delay * random.uniform(0.5, 1.0)

    async def _cycle(self) -> None:
        """One list (when needed) and one watch, until the watch ends."""
        if not self._rv and self._streaming:
            try:
                stream = await self._open_watch(initial_events=True)
            except ApiError as err:
                if err.status not in (400, 422):
                    raise
                # The server does not offer streaming lists: said by its answer, not its version.
                log.info(
                    "streaming list not offered; using list + watch",
                    resource=str(self.resource),
                    status=err.status,
                )
                self._streaming = False
            else:
                await self._consume(stream, initial=True)
                return
        if not self._rv:
            await self._list()
        await self._consume(await self._open_watch(initial_events=False), initial=False)

    # --- list ---------------------------------------------------------------------------------

    async def _list(self) -> None:
        options = self._options
        items: dict[Key, RawObject] = {}
        token, snapshot_rv, restarts = "", "", 0
        page_size = options.page_size
        while True:
            query: dict[str, str] = {}
            if page_size:
                query["limit"] = str(page_size)
            if token:
                query["continue"] = token
            if options.label_selector:
                query["labelSelector"] = options.label_selector
            if options.field_selector:
                query["fieldSelector"] = options.field_selector
            try:
                page = await self._client.get_json(
                    self.resource.path, query, request_timeout=options.request_timeout
                )
            except ApiError as err:
                if err.status != 410 or not token:
                    raise
                restarts += 1
                log.info(
                    "kubernetes list continue token expired; listing again",
                    resource=str(self.resource),
                    restarts=restarts,
                )
                if restarts >= _MAX_LIST_RESTARTS:
                    page_size = 0  # one unpaged request cannot expire half-way
                items, token, snapshot_rv = {}, "", ""
                continue
            metadata = page.get("metadata")
            meta = metadata if isinstance(metadata, dict) else {}
            if not snapshot_rv:
                snapshot_rv = _str(meta.get("resourceVersion"))
            page_items = page.get("items")
            if not isinstance(page_items, list):
                if page_items is not None:
                    raise ProtocolError(f"list of {self.resource}: items is not a list")
                page_items = []
            for item in page_items:
                if not isinstance(item, dict):
                    raise ProtocolError(f"list of {self.resource}: an item is not an object")
                key = self._prepare(item)
                if key is not None:
                    items[key] = item
            if len(items) > options.max_objects:
                raise ProtocolError(
                    f"list of {self.resource}: more than {options.max_objects} objects"
                )
            token = _str(meta.get("continue"))
            if not token:
                break
        if not snapshot_rv:
            raise ProtocolError(f"list of {self.resource}: no metadata.resourceVersion")
        self.lists += 1
        self._replace_all(items, snapshot_rv)

    def _replace_all(self, items: dict[Key, RawObject], resource_version: str) -> None:
        """Hand on the difference between a complete list and what was known, as one batch."""
        upserts = {key: obj for key, obj in items.items() if self._versions.get(key) != _rv_of(obj)}
        deletes = frozenset(self._versions.keys() - items.keys())
        self._versions = {key: _rv_of(obj) for key, obj in items.items()}
        self._rv = resource_version
        if upserts or deletes:
            self._hand_on(Batch(upserts, deletes, relist=True))
        if not self.synced.is_set():
            log.info("kubernetes resource synced", resource=str(self.resource), objects=len(items))
            self.synced.set()

    # --- watch --------------------------------------------------------------------------------

    async def _open_watch(self, *, initial_events: bool) -> WatchStream:
        options = self._options
        low, high = options.watch_timeout
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(random.uniform(low, high))),
        }
        if initial_events:
            query.update(sendInitialEvents="true", resourceVersionMatch="NotOlderThan")
            query["resourceVersion"] = ""
        else:
            query["resourceVersion"] = self._rv
        if options.label_selector:
            query["labelSelector"] = options.label_selector
        if options.field_selector:
            query["fieldSelector"] = options.field_selector
        try:
            stream = await self._client.stream(
                self.resource.path,
                query,
                connect_timeout=options.request_timeout,
                read_timeout=options.read_timeout,
            )
        except ApiError as err:
            if err.status == 410:
                raise _Gone() from None
            raise
        self.watches += 1
        return stream

    async def _consume(self, stream: WatchStream, *, initial: bool) -> None:
        """Apply a watch's events until it ends. With `initial`, the events up to the
        initial-events-end bookmark are a complete list, handed on as its difference."""
        listing: dict[Key, RawObject] | None = {} if initial else None
        limit = self._options.max_event_bytes
        buffer = bytearray()
        try:
            async for chunk in stream.chunks():
                start = len(buffer)
                buffer += chunk
                end = buffer.rfind(b"\n", start)
                if end < 0:
                    if len(buffer) > limit:
                        raise ProtocolError(
                            f"watch of {self.resource}: an event larger than {limit} bytes"
                        )
                    continue
                lines = bytes(buffer[:end])
                del buffer[: end + 1]
                listing = self._apply_lines(lines, listing)
        finally:
            stream.close()
        if listing is not None:
            log.info(
                "kubernetes streaming list ended before its last event; retrying",
                resource=str(self.resource),
            )
            raise KubeUnavailable(f"watch of {self.resource} ended during the initial events")

    def _apply_lines(
        self, lines: bytes, listing: dict[Key, RawObject] | None
    ) -> dict[Key, RawObject] | None:
        pending = _Pending()
        try:
            for line in lines.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise ProtocolError(f"watch of {self.resource}: an event is not JSON") from None
                listing = self._apply_event(event, listing, pending)
        finally:
            if pending:
                self._hand_on(Batch(pending.upserts, frozenset(pending.deletes)))
        return listing

    def _apply_event(
        self, event: Any, listing: dict[Key, RawObject] | None, pending: _Pending
    ) -> dict[Key, RawObject] | None:
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise ProtocolError(f"watch of {self.resource}: an event without an object")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone()
            raise ApiError(
                self.resource.path,
                code if isinstance(code, int) else 0,
                _str(obj.get("reason")),
                _str(obj.get("message"))[:300],
            )
        self.events += 1
        rv = _rv_of(obj)
        if kind == "BOOKMARK":
            if rv:
                if listing is not None and _initial_events_end(obj):
                    self._replace_all(listing, rv)
                    return None
                if listing is None:
                    self._rv = rv
            return listing
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise ProtocolError(f"watch of {self.resource}: unknown event type {kind!r}")
        key = self._prepare(obj)
        if key is None:
            return listing
        if listing is not None:
            if kind == "DELETED":
                listing.pop(key, None)
            else:
                listing[key] = obj
                if len(listing) > self._options.max_objects:
                    raise ProtocolError(
                        f"list of {self.resource}: more than {self._options.max_objects} objects"
                    )
            return listing
        if kind == "DELETED":
            if self._versions.pop(key, None) is not None:
                pending.delete(key)
        else:
            self._versions[key] = rv
            pending.upsert(key, obj)
        if rv:
            self._rv = rv
        return listing

    # --- objects ------------------------------------------------------------------------------

    def _prepare(self, obj: RawObject) -> Key | None:
        """The object's key, after filling in what list items of built-in kinds leave out;
        None when it is outside the watched namespaces."""
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            raise ProtocolError(f"{self.resource}: an object without metadata")
        name, namespace = _str(metadata.get("name")), _str(metadata.get("namespace"))
        if not name:
            raise ProtocolError(f"{self.resource}: an object without metadata.name")
        wanted = self._options.namespaces
        if wanted is not None:
            if self.resource.kind == "Namespace":
                if name not in wanted:
                    return None
            elif self.resource.namespaced and namespace not in wanted:
                return None
        obj.setdefault("kind", self.resource.kind)
        obj.setdefault("apiVersion", self.resource.api_version)
        metadata.pop("managedFields", None)  # often the largest part; never read
        return (namespace, name)

    def _hand_on(self, batch: Batch) -> None:
        metrics.KUBE_EVENTS.inc(self.resource.kind, amount=len(batch.upserts) + len(batch.deletes))
        try:
            self._handler(batch)
        except Exception:  # a consumer's bug must not stop the watch
            log.exception("kubernetes event handler failed", resource=str(self.resource))


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _rv_of(obj: RawObject) -> str:
    metadata = obj.get("metadata")
    return _str(metadata.get("resourceVersion")) if isinstance(metadata, dict) else ""


def _initial_events_end(obj: RawObject) -> bool:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return isinstance(annotations, dict) and annotations.get(INITIAL_EVENTS_END) == "true"
