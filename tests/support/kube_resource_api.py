"""The HTTP face of the test API server's resources: discovery, list, watch, create, replace,
patch, delete and `/status`, answered as kube-apiserver answers them (kube_resources.py holds
the state). Runs on the server's event loop; state changes happen under the server's lock.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from tests.support.kube_resources import (
    ApiError,
    Event,
    ResourceState,
    ResourceType,
    crd_types,
    field_matcher,
    json_patch,
    label_matcher,
    merge_patch,
)

GZIP_THRESHOLD = 128 * 1024
MAX_BODY_BYTES = 3 * 1024 * 1024
# Sizes the watch stream is cut into, so chunk boundaries fall inside events.
_CHUNK_SIZES = (37, 5, 211, 1, 4096, 64)
_PATCH_TYPES = {
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
}


# Go's strconv.ParseBool, which the API server parses boolean query parameters with.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")


def status_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status_body(code, reason, message), status=code)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass(frozen=True, slots=True)
class ResourcePath:
    group: str
    version: str
    namespace: str  # "" when the path names none
    plural: str
    name: str
    subresource: str


def parse_resource_path(path: str) -> ResourcePath | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = ""
    # /api/v1/namespaces/{name}/status is the Namespace's own subresource, not a resource.
    own_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if rest[0] == "namespaces" and len(rest) >= 3 and not own_subresource:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    return ResourcePath(group, version, namespace, plural, name, sub)


@dataclass(eq=False)
class _Watch:
    rtype: ResourceType
    namespace: str
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)

    def translate(self, event: Event) -> tuple[str, dict[str, Any]] | None:
        """The event this watcher sees: selector transitions turn MODIFIED into ADDED/DELETED."""
        now = self.matches(event.obj)
        if event.type != "MODIFIED":
            return (event.type, event.obj) if now else None
        before = self.matches(event.old)
        if before and now:
            return ("MODIFIED", event.obj)
        if now:
            return ("ADDED", event.obj)
        if before:
            return ("DELETED", event.obj)
        return None


@dataclass
class ResourceApi:
    state: ResourceState
    lock: threading.Lock
    watch_timeout: float
    bookmark_interval: float
    streaming_lists: bool
    loop: asyncio.AbstractEventLoop | None = None
    watches: set[_Watch] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.state.on_event = self._publish

    def _publish(self, event: Event) -> None:
        """Called under the lock, from any thread."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        for watch in list(self.watches):
            if watch.rtype.storage == event.storage:
                loop.call_soon_threadsafe(watch.queue.put_nowait, event)

    def end_watches(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with self.lock:
            for watch in list(self.watches):
                loop.call_soon_threadsafe(watch.queue.put_nowait, None)

    # --- dispatch ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse | None:
        """The answer for a discovery or resource path, or None when the path is neither."""
        path = request.path.rstrip("/") or "/"
        try:
            discovery = self._discovery(path)
            if discovery is not None:
                if request.method != "GET":
                    raise ApiError(405, "MethodNotAllowed", f"{request.method} not allowed")
                return self._json(request, discovery)
            where = parse_resource_path(path)
            if where is None:
                return None
            with self.lock:
                rtype = self.state.lookup(where.group, where.version, where.plural)
            if rtype.namespaced is False and where.namespace:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if where.subresource and not (where.subresource == "status" and rtype.status):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return await self._resource(request, rtype, where)
        except ApiError as err:
            return status_response(err.code, err.reason, err.message)

    async def _resource(
        self, request: web.Request, rtype: ResourceType, where: ResourcePath
    ) -> web.StreamResponse:
        method, name = request.method, where.name
        if rtype.namespaced and name and not where.namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and not name:
            if request.query.get("watch") in _TRUE:
                return await self._watch(request, rtype, where.namespace)
            return self._list(request, rtype, where.namespace)
        if method == "GET":
            with self.lock:
                return self._json(request, self.state.get(rtype, where.namespace, name))
        if method == "POST" and not name and not where.subresource:
            if rtype.namespaced and not where.namespace:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            body = await self._json_body(request)
            return self._create(request, rtype, where.namespace, body)
        if method == "PUT" and name:
            body = await self._json_body(request)
            with self.lock:
                obj = self.state.validate_object(rtype, body, where.namespace, name=name)
                stored = self.state.replace(
                    rtype, where.namespace, obj, subresource=where.subresource
                )
            return self._json(request, stored)
        if method == "PATCH" and name:
            return await self._patch(request, rtype, where)
        if method == "DELETE" and name and not where.subresource:
            precondition = None
            propagation = request.query.get("propagationPolicy", "Background")
            raw = await request.read()
            if raw:
                try:
                    options = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "BadRequest", "DeleteOptions is not JSON") from None
                if isinstance(options, dict):
                    precondition = (options.get("preconditions") or {}).get("resourceVersion")
                    propagation = options.get("propagationPolicy") or propagation
            with self.lock:
                gone = self.state.delete(
                    rtype, where.namespace, name, precondition, propagation=str(propagation)
                )
                if rtype.kind == "CustomResourceDefinition":
                    self._uninstall(gone)
            return self._json(request, gone)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on this path")

    # --- reads -------------------------------------------------------------------------------

    def _discovery(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            types = list(self.state.types.values())
        if path == "/version":
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for t in types:
                if t.group:
                    groups.setdefault(t.group, [])
                    if t.version not in groups[t.group]:
                        groups[t.group].append(t.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[:1] == ["apis"] and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        served = [t for t in types if t.group == group and t.version == version]
        if not served:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        for t in sorted(served, key=lambda t: t.plural):
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.kind.lower(),
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": list(t.verbs),
                }
            )
            if t.status:
                resources.append(
                    {
                        "name": f"{t.plural}/status",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _selectors(
        self, request: web.Request
    ) -> tuple[Callable[[dict[str, str]], bool], Callable[[dict[str, Any]], bool]]:
        return (
            label_matcher(request.query.get("labelSelector", "")),
            field_matcher(request.query.get("fieldSelector", "")),
        )

    def _list(self, request: web.Request, rtype: ResourceType, namespace: str) -> web.Response:
        labels, fields = self._selectors(request)
        query = request.query
        limit_text, token = query.get("limit", ""), query.get("continue", "")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError:
            raise ApiError(400, "BadRequest", f"limit: invalid value {limit_text!r}") from None
        if query.get("resourceVersion") == "0" and not token:
            limit = 0  # served from the watch cache: a real server ignores limit here
        with self.lock:
            list_rv, start = self.state.rv, None
            if token:
                list_rv, start = self._decode_continue(token)
                if list_rv < self.state.compacted_rv:
                    raise ApiError(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
            items = self.state.select(rtype, namespace, labels, fields)
            if start is not None:
                items = [
                    o
                    for o in items
                    if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
                ]
            more = limit > 0 and len(items) > limit
            page = items[:limit] if limit > 0 else items
            out_items = []
            for obj in page:
                item = copy.deepcopy(obj)
                if not rtype.builtin:
                    item = self.state.present(rtype, obj)
                out_items.append(item)
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if more:
            last = page[-1]["metadata"]
            meta["continue"] = self._encode_continue(
                list_rv, (last.get("namespace", ""), last["name"])
            )
            meta["remainingItemCount"] = len(items) - len(page)
        body = {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": out_items,
        }
        return self._json(request, body)

    @staticmethod
    def _encode_continue(rv: int, start: tuple[str, str]) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(start)})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
        except (ValueError, KeyError, TypeError, IndexError):
            raise ApiError(400, "BadRequest", "continue key is not valid") from None

    async def _watch(
        self, request: web.Request, rtype: ResourceType, namespace: str
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request)
        query = request.query
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        initial_events = query.get("sendInitialEvents") in _TRUE
        if initial_events:
            if not self.streaming_lists:
                raise ApiError(
                    422,
                    "Invalid",
                    'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
                    "sendInitialEvents is forbidden for watch unless the WatchList feature gate "
                    "is enabled",
                )
            if query.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks:
                raise ApiError(
                    422,
                    "Invalid",
                    'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and "
                    "allowWatchBookmarks",
                )
        try:
            timeout = float(query.get("timeoutSeconds", "0") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds: invalid value") from None
        server_limit = self.watch_timeout * random.uniform(1.0, 1.33)
        deadline = time.monotonic() + (min(timeout, server_limit) if timeout > 0 else server_limit)
        rv_text = query.get("resourceVersion", "")
        watch = _Watch(rtype, namespace, labels, fields)
        replay: list[tuple[str, dict[str, Any]]] = []
        expired: str | None = None
        with self.lock:
            current = self.state.rv
            if initial_events or rv_text in ("", "0"):
                for obj in self.state.select(rtype, namespace, labels, fields):
                    replay.append(("ADDED", obj))
                if initial_events:
                    replay.append(("BOOKMARK", self._bookmark(rtype, current, initial_end=True)))
            else:
                try:
                    since = int(rv_text)
                except ValueError:
                    raise ApiError(
                        400, "BadRequest", f"resourceVersion {rv_text!r} invalid"
                    ) from None
                if since < self.state.compacted_rv:
                    expired = f"too old resource version: {since} ({self.state.compacted_rv})"
                else:
                    for event in self.state.history:
                        if event.rv > since and event.storage == rtype.storage:
                            seen = watch.translate(event)
                            if seen is not None:
                                replay.append(seen)
            if expired is None:
                self.watches.add(watch)
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            writer = _ChunkWriter(response)
            if expired is not None:
                await writer.send(
                    [{"type": "ERROR", "object": status_body(410, "Expired", expired)}]
                )
                await response.write_eof()
                return response
            await writer.send([self._event(rtype, t, o) for t, o in replay])
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                try:
                    first = await asyncio.wait_for(watch.queue.get(), max(wait, 0.0))
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        with self.lock:
                            mark = self._bookmark(rtype, self.state.rv)
                        await writer.send([{"type": "BOOKMARK", "object": mark}])
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                batch = [first]
                while not watch.queue.empty():
                    batch.append(watch.queue.get_nowait())
                events = []
                ended = False
                for event in batch:
                    if event is None:
                        ended = True
                        break
                    seen = watch.translate(event)
                    if seen is not None:
                        events.append(self._event(rtype, *seen))
                await writer.send(events)
                if ended:
                    break
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self.lock:
                self.watches.discard(watch)
        return response

    def _event(self, rtype: ResourceType, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        if kind == "BOOKMARK":
            return {"type": kind, "object": obj}
        return {"type": kind, "object": self.state.present(rtype, obj)}

    @staticmethod
    def _bookmark(rtype: ResourceType, rv: int, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}

    # --- writes ------------------------------------------------------------------------------

    async def _json_body(self, request: web.Request) -> Any:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f'the body of the request was in an unknown format "{content_type}" - accepted '
                "media types include: application/json, application/yaml",
            )
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "RequestEntityTooLarge", "the request body is too large")
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the body of the request is not JSON") from None

    def _create(
        self, request: web.Request, rtype: ResourceType, namespace: str, body: Any
    ) -> web.Response:
        with self.lock:
            obj = self.state.validate_object(rtype, body, namespace)
            if rtype.namespaced and not self.state.namespace_exists(namespace):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            if rtype.kind == "CustomResourceDefinition":
                new_types = crd_types(obj)
            stored = self.state.create(rtype, namespace, obj)
            if rtype.kind == "CustomResourceDefinition":
                for t in new_types:
                    self.state.register(t)
        return self._json(request, stored, status=201)

    def _uninstall(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        self.state.drop(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))

    async def _patch(
        self, request: web.Request, rtype: ResourceType, where: ResourcePath
    ) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in _PATCH_TYPES or (
            content_type == "application/strategic-merge-patch+json" and not rtype.builtin
        ):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f'the body of the request was in an unknown format "{content_type}" - accepted '
                "media types include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml"
                + (", application/strategic-merge-patch+json" if rtype.builtin else ""),
            )
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "RequestEntityTooLarge", "the request body is too large")
        try:
            if content_type == "application/apply-patch+yaml":
                patch = yaml.safe_load(raw)
            else:
                patch = json.loads(raw)
        except (ValueError, yaml.YAMLError):
            raise ApiError(400, "BadRequest", "the patch does not parse") from None
        if content_type == "application/apply-patch+yaml":
            return self._apply(request, rtype, where, patch)
        with self.lock:
            current = self.state.get(rtype, where.namespace, where.name)
            if content_type == "application/json-patch+json":
                patched = json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
                patched = merge_patch(current, patch)
            obj = self.state.validate_object(rtype, patched, where.namespace, name=where.name)
            stored = self.state.replace(rtype, where.namespace, obj, subresource=where.subresource)
        return self._json(request, stored)

    def _apply(
        self, request: web.Request, rtype: ResourceType, where: ResourcePath, patch: Any
    ) -> web.Response:
        """Server-side apply, approximated as a merge of the applied configuration (no field
        ownership): the strictness a client must satisfy is real, the merge is simplified."""
        if not request.query.get("fieldManager"):
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch",
            )
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "an apply patch must be an object")
        for required in ("apiVersion", "kind"):
            if not patch.get(required):
                raise ApiError(400, "BadRequest", f"{required} must be set in an apply patch")
        allowed = {"apiVersion", "kind", "metadata", *rtype.fields}
        for key in patch:
            if key not in allowed:
                raise ApiError(
                    400,
                    "BadRequest",
                    f".{key}: field not declared in schema "
                    f'(strict decoding error: unknown field "{key}")',
                )
        with self.lock:
            obj = self.state.validate_object(rtype, patch, where.namespace, name=where.name)
            try:
                current = self.state.get(rtype, where.namespace, where.name)
            except ApiError as err:
                if err.code != 404 or where.subresource:
                    raise
                if rtype.namespaced and not self.state.namespace_exists(where.namespace):
                    raise ApiError(
                        404, "NotFound", f'namespaces "{where.namespace}" not found'
                    ) from None
                return self._json(
                    request, self.state.create(rtype, where.namespace, obj), status=201
                )
            merged = merge_patch(current, obj)
            merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            stored = self.state.replace(
                rtype, where.namespace, merged, subresource=where.subresource
            )
        return self._json(request, stored)

    # --- encoding ----------------------------------------------------------------------------

    @staticmethod
    def _json(request: web.Request, body: Any, *, status: int = 200) -> web.Response:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if len(data) > GZIP_THRESHOLD and "gzip" in request.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=data, status=status, headers=headers)


class _ChunkWriter:
    """Writes watch events as JSON lines in chunks cut at sizes that ignore line ends."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._turn = 0

    async def send(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        while data:
            size = _CHUNK_SIZES[self._turn % len(_CHUNK_SIZES)]
            self._turn += 1
            await self._response.write(data[:size])
            data = data[size:]
