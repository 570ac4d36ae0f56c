"""The state behind the test API server: resource types, objects, resourceVersions, the event
history watches replay from, label/field selectors and the patch formats.

Everything here is plain data guarded by the server's lock; `kube_apiserver.py` turns it into
HTTP. Kept apart so the rules a real API server enforces on objects (names, versions,
generation, status) read in one place.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# A real server keeps roughly this much history in its watch cache before a watch from an older
# resourceVersion gets 410 Gone.
HISTORY_LIMIT = 20_000

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


class ApiError(Exception):
    """A failure the server answers with a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool = False  # has a /status subresource
    builtin: bool = True  # list items of built-in kinds carry no kind/apiVersion
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    # Top-level fields besides apiVersion/kind/metadata that a strict decoder accepts.
    fields: tuple[str, ...] = ("spec", "status")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> tuple[str, str]:
        """Versions of one group/plural share storage, as in etcd."""
        return (self.group, self.plural)


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    *,
    status: bool = False,
    fields: tuple[str, ...] = ("spec", "status"),
    verbs: tuple[str, ...] | None = None,
) -> ResourceType:
    extra = {"verbs": verbs} if verbs else {}
    return ResourceType(
        group, version, plural, kind, namespaced, status, True, fields=fields, **extra
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", False, status=True),
    _builtin("", "v1", "services", "Service", True, status=True),
    _builtin("", "v1", "pods", "Pod", True, status=True),
    _builtin("", "v1", "nodes", "Node", False, status=True),
    _builtin(
        "", "v1", "secrets", "Secret", True, fields=("data", "stringData", "type", "immutable")
    ),
    _builtin("", "v1", "configmaps", "ConfigMap", True, fields=("data", "binaryData", "immutable")),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", True, fields=("secrets",)),
    _builtin(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        True,
        fields=("addressType", "endpoints", "ports"),
    ),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease", True, fields=("spec",)),
    _builtin("apps", "v1", "deployments", "Deployment", True, status=True),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        status=True,
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        fields=("webhooks",),
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        fields=("webhooks",),
    ),
)


def _plural(kind: str) -> str:
    # ServiceEntry → serviceentries, AuthorizationPolicy → authorizationpolicies, Gateway →
    # gateways, as Istio's CRDs name them
    name = kind.lower()
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


ISTIO_CRDS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = tuple(
    (group, kind, _plural(kind), versions)
    for group, versions, kinds in (
        (
            "networking.istio.io",
            ("v1", "v1beta1", "v1alpha3"),
            (
                "VirtualService",
                "DestinationRule",
                "Gateway",
                "ServiceEntry",
                "WorkloadEntry",
                "Sidecar",
            ),
        ),
        (
            "security.istio.io",
            ("v1", "v1beta1"),
            ("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"),
        ),
    )
    for kind in kinds
)

# Namespaces every cluster starts with.
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "istio-system")


def now_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors ---------------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A labelSelector query parameter as a predicate; 400 for a malformed one."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_selector(selector):
        m = _REQUIREMENT.match(part)
        if m is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        key, op, value = m["key"], m["op"], m["value"]
        if m["neg"]:
            checks.append(lambda labels, k=key: k not in labels)
        elif op in ("=", "=="):
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif m["set"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            if m["set"] == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        else:
            checks.append(lambda labels, k=key: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    """fieldSelector: metadata.name and metadata.namespace, = / == / !=, as every kind supports."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for part in _split_selector(selector):
        m = re.match(r"^\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*([^,]*)\s*$", part)
        if m is None:
            raise ApiError(
                400, "BadRequest", f"field label not supported: {part.split('=')[0].strip()}"
            )
        attr, op, value = m[1].split(".")[1], m[2], m[3]
        if op == "!=":
            checks.append(lambda obj, a=attr, v=value: obj["metadata"].get(a, "") != v)
        else:
            checks.append(lambda obj, a=attr, v=value: obj["metadata"].get(a, "") == v)
    return lambda obj: all(check(obj) for check in checks)


# --- patches -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"json patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ApiError(422, "Invalid", f"json patch: missing path element {part!r}")
    return node


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, test, copy, move)."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"invalid json patch operation: {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("copy", "move"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, parts, value)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "replace":
            doc = _add(_remove(doc, parts), parts, copy.deepcopy(op.get("value")))
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid", f"json patch test failed at {op['path']}")
        else:
            raise ApiError(400, "BadRequest", f"unknown json patch operation {kind!r}")
    return doc


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"json patch: no value at /{'/'.join(parts)}") from None
    return node


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise ApiError(422, "Invalid", f"json patch: cannot add at {'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    _get(doc, parts)
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


# --- objects -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Event:
    rv: int
    type: str  # ADDED MODIFIED DELETED
    storage: tuple[str, str]
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the object before (MODIFIED), for selector transitions


@dataclass
class ResourceState:
    """Objects, resourceVersions and the history of changes. Callers hold the server's lock."""

    types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=dict
    )
    rv: int = 1
    history: list[Event] = field(default_factory=list)
    compacted_rv: int = 0  # a watch from before this gets 410
    on_event: Callable[[Event], None] | None = None

    def register(self, rtype: ResourceType) -> None:
        self.types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self.objects.setdefault(rtype.storage, {})

    def unregister(self, group: str, plural: str) -> None:
        for key in [k for k in self.types if k[0] == group and k[2] == plural]:
            del self.types[key]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.types.get((group, version, plural))
        if rtype is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype

    def type_of(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rtype in self.types.values():
            if rtype.group == group and rtype.version == version and rtype.kind == kind:
                return rtype
        raise ApiError(404, "NotFound", f"no kind {kind!r} is registered for version {api_version}")

    # --- reads ---

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects[rtype.storage].get((namespace if rtype.namespaced else "", name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found')
        return self.present(rtype, obj)

    def present(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The stored object as served at `rtype`'s version."""
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = rtype.api_version, rtype.kind
        return out

    def select(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Callable[[dict[str, str]], bool],
        fields: Callable[[dict[str, Any]], bool],
    ) -> list[dict[str, Any]]:
        out = []
        for (ns, _name), obj in sorted(self.objects[rtype.storage].items()):
            if namespace and ns != namespace:
                continue
            if labels(obj["metadata"].get("labels") or {}) and fields(obj):
                out.append(obj)
        return out

    # --- writes ---

    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, event: Event) -> None:
        self.history.append(event)
        if len(self.history) > HISTORY_LIMIT:
            dropped = self.history[: len(self.history) - HISTORY_LIMIT]
            del self.history[: len(dropped)]
            self.compacted_rv = dropped[-1].rv
        if self.on_event is not None:
            self.on_event(event)

    def compact(self) -> None:
        """Every resourceVersion issued so far becomes too old (other kinds' writes move the
        global counter too, so a bump without an event of this server's is realistic)."""
        self.history.clear()
        self.compacted_rv = self._bump()

    def validate_object(
        self, rtype: ResourceType, obj: Any, namespace: str, *, name: str | None = None
    ) -> dict[str, Any]:
        """What the decoder and generic validation refuse, in a real server's words."""
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request is not a JSON object")
        version, kind = obj.get("apiVersion"), obj.get("kind")
        if version not in (None, "", rtype.api_version) or kind not in (None, "", rtype.kind):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({version}) does not match the expected API "
                f"version ({rtype.api_version}), or kind {kind} is not {rtype.kind}",
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", f"{rtype.kind}: metadata: Required value")
        obj_name = meta.get("name")
        if not isinstance(obj_name, str) or not obj_name:
            raise ApiError(
                422, "Invalid", f"{rtype.kind}.{rtype.group or 'core'} is invalid: "
                "metadata.name: Required value: name or generateName is required"
            )  # fmt: skip
        if len(obj_name) > 253 or not _DNS_SUBDOMAIN.match(obj_name):
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind} "{obj_name}" is invalid: metadata.name: Invalid value: '
                f'"{obj_name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.'",
            )
        if name is not None and obj_name != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        obj_ns = meta.get("namespace")
        if rtype.namespaced:
            if obj_ns not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
        if rtype.kind == "Lease":
            spec = obj.get("spec") or {}
            for key in ("acquireTime", "renewTime"):
                value = spec.get(key)
                if value is not None and not (isinstance(value, str) and MICROTIME.match(value)):
                    raise ApiError(
                        400,
                        "BadRequest",
                        f'Lease in version "v1" cannot be handled as a Lease: '
                        f'spec.{key}: parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00"',
                    )
        if rtype.kind == "Secret":
            for key, value in (obj.get("data") or {}).items():
                if not isinstance(value, str):
                    raise ApiError(400, "BadRequest", f"Secret data[{key}] must be base64 string")
        return obj

    def create(
        self,
        rtype: ResourceType,
        namespace: str,
        obj: dict[str, Any],
        *,
        with_status: bool = False,
    ) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        name = meta["name"]
        key = (namespace if rtype.namespaced else "", name)
        store = self.objects[rtype.storage]
        if key in store:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.plural}.{rtype.group or "core"} "{name}" already exists',
            )
        rv = self._bump()
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(rv),
            creationTimestamp=now_timestamp(),
        )
        if rtype.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for server_owned in ("deletionTimestamp", "managedFields", "selfLink"):
            meta.pop(server_owned, None)
        if not rtype.builtin:
            meta["generation"] = 1
        if rtype.status and not rtype.builtin and not with_status:
            obj.pop("status", None)  # CRs: status only through the subresource
        obj.pop("apiVersion", None)
        obj.pop("kind", None)
        store[key] = obj
        self._record(Event(rv, "ADDED", rtype.storage, copy.deepcopy(obj), None))
        if meta.get("ownerReferences"):
            self._collect_garbage()  # created with owners that are all gone: collected
        return self.present(rtype, obj)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str,
        obj: dict[str, Any],
        *,
        subresource: str = "",
        require_rv: bool = True,
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        name = meta["name"]
        key = (namespace if rtype.namespaced else "", name)
        store = self.objects[rtype.storage]
        old = store.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found')
        given = meta.get("resourceVersion")
        if require_rv and not given:
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind} "{name}" is invalid: metadata.resourceVersion: Invalid value: '
                "0x0: must be specified for an update",
            )
        if given and str(given) != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        new = copy.deepcopy(obj)
        new.pop("apiVersion", None)
        new.pop("kind", None)
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if subresource == "all":  # the test's own put: status as given
                pass
            elif rtype.status and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            elif rtype.status:
                new.pop("status", None)
            # Server-owned metadata survives a replace.
            for owned in ("uid", "creationTimestamp", "generation"):
                if owned in old["metadata"]:
                    new["metadata"][owned] = old["metadata"][owned]
            new["metadata"]["namespace"] = old["metadata"].get("namespace")
            if not rtype.namespaced:
                new["metadata"].pop("namespace", None)
            if not rtype.builtin and _content(new) != _content(old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return self.present(rtype, old)  # a no-op update writes nothing
        rv = self._bump()
        new["metadata"]["resourceVersion"] = str(rv)
        store[key] = new
        self._record(Event(rv, "MODIFIED", rtype.storage, copy.deepcopy(new), copy.deepcopy(old)))
        return self.present(rtype, new)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        precondition_rv: str | None = None,
        *,
        propagation: str = "Background",
    ) -> dict[str, Any]:
        """Delete; then, unless `propagation` is Orphan, the garbage collector's work: every
        object whose ownerReferences all name objects that no longer exist goes too (and its
        own dependents after it). Done at once here; a real cluster does it shortly after."""
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise ApiError(
                400, "BadRequest", f"propagationPolicy: Unsupported value: {propagation!r}"
            )
        gone = self._delete_one(rtype, namespace, name, precondition_rv)
        if propagation != "Orphan":
            self._collect_garbage()
        return gone

    def _collect_garbage(self) -> None:
        while True:
            uids = {
                obj["metadata"].get("uid")
                for objs in self.objects.values()
                for obj in objs.values()
            }
            orphans = [
                (storage, key)
                for storage, objs in self.objects.items()
                for key, obj in objs.items()
                if (owners := obj["metadata"].get("ownerReferences"))
                and all(isinstance(o, dict) and o.get("uid") not in uids for o in owners)
            ]
            if not orphans:
                return
            for storage, key in orphans:
                gone = self.objects[storage].pop(key)
                rv = self._bump()
                gone["metadata"]["resourceVersion"] = str(rv)
                self._record(Event(rv, "DELETED", storage, copy.deepcopy(gone), None))

    def _delete_one(
        self, rtype: ResourceType, namespace: str, name: str, precondition_rv: str | None
    ) -> dict[str, Any]:
        key = (namespace if rtype.namespaced else "", name)
        store = self.objects[rtype.storage]
        old = store.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found')
        if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{name}": Precondition '
                f"failed: ResourceVersion in precondition: {precondition_rv}, ResourceVersion in "
                f"object meta: {old['metadata']['resourceVersion']}",
            )
        if rtype.kind == "Namespace":
            # Cascade, as the namespace controller does once the namespace is terminating.
            for storage, objs in self.objects.items():
                for obj_key in [k for k in objs if k[0] == name]:
                    gone = objs.pop(obj_key)
                    rv = self._bump()
                    gone["metadata"]["resourceVersion"] = str(rv)
                    self._record(Event(rv, "DELETED", storage, copy.deepcopy(gone), None))
        del store[key]
        rv = self._bump()
        old["metadata"]["resourceVersion"] = str(rv)
        self._record(Event(rv, "DELETED", rtype.storage, copy.deepcopy(old), None))
        return self.present(rtype, old)

    def drop(self, group: str, plural: str) -> None:
        """A CRD removed: its objects go (DELETED to watchers) and its types stop being served."""
        storage = self.objects.get((group, plural), {})
        for key in sorted(storage):
            gone = storage.pop(key)
            rv = self._bump()
            gone["metadata"]["resourceVersion"] = str(rv)
            self._record(Event(rv, "DELETED", (group, plural), copy.deepcopy(gone), None))
        self.unregister(group, plural)

    def namespace_exists(self, namespace: str) -> bool:
        return ("", namespace) in self.objects.get(("", "namespaces"), {})


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """What bumps a custom resource's generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def crd_object(
    group: str, kind: str, plural: str, versions: tuple[str, ...], namespaced: bool
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
            },
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": i == 0,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
                for i, v in enumerate(versions)
            ],
        },
    }


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition object serves."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not (isinstance(group, str) and isinstance(plural, str) and isinstance(kind, str)):
        raise ApiError(
            422, "Invalid", "CustomResourceDefinition: spec.group and spec.names required"
        )
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    out = []
    for version in spec.get("versions") or []:
        if isinstance(version, dict) and version.get("served", True):
            has_status = "status" in (version.get("subresources") or {})
            out.append(
                ResourceType(
                    group, str(version["name"]), plural, kind, namespaced, has_status, False
                )
            )
    return out
