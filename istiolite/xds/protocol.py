"""Sans-I/O state of one xDS stream: node, subscriptions, nonces, versions, ACK/NACK, deliveries.

The gRPC handler feeds requests and pushes in; this module decides what to send. It never does
I/O and reads time only through the injected clock, so the protocol tests drive it directly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
import sys
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeAlias, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from istiolite import metrics, type_urls
from istiolite.logs import get_logger
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.model.validation import ValidationError
from istiolite.networking.credentials import is_file_secret
from istiolite.networking.resource import Resource
from istiolite.push.request import PushRequest

DiscoveryRequest: TypeAlias = discovery_pb2.DiscoveryRequest
DiscoveryResponse: TypeAlias = discovery_pb2.DiscoveryResponse
DeltaDiscoveryRequest: TypeAlias = discovery_pb2.DeltaDiscoveryRequest
DeltaDiscoveryResponse: TypeAlias = discovery_pb2.DeltaDiscoveryResponse

_log = get_logger("xds")
# Node ids are client-supplied: only this much of one goes into a log line.
MAX_LOGGED_ID = 200

Resources = Mapping[str, Resource]
Ctx = TypeVar("Ctx")
# (config snapshot, proxy, type URL) -> every resource of that type the proxy may see.
Generate = Callable[[Any, Proxy, str], Resources]

WILDCARD = "*"
# Limits on what a client says about itself (istiod keeps node ids short too): checked before
# anything is parsed or logged.
NODE_ID_MAX_BYTES = 1024
NODE_METADATA_MAX_BYTES = 64 * 1024
# NACK messages (Envoy's rejection reasons) are kept and logged cut to this many characters.
NACK_MESSAGE_MAX = 1024
# Type URLs one stream may subscribe to (Envoy uses a handful): each holds state on the server.
TYPES_PER_STREAM_MAX = 100


def bounded(value: str, limit: int = NACK_MESSAGE_MAX) -> str:
    """A client-supplied string fit for a log line or a status page: cut, saying how long it was."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"


@dataclass(frozen=True, slots=True)
class WireResponse:
    """A serialized (Delta)DiscoveryResponse ready for the wire, with what it carries."""

    type_url: str
    nonce: str
    version: str
    data: bytes
    names: tuple[str, ...]
    removed: tuple[str, ...] = ()


def _one_per_response(type_url: str, names: Iterable[str]) -> bool:
    """Secrets that name certificate files go one per response: Envoy refuses a response as a
    whole when one secret names a file it lacks, and the others in it would be lost with it."""
    names = tuple(names)
    return type_url == type_urls.SECRET and len(names) > 1 and any(map(is_file_secret, names))


class _Versions(Mapping[str, str]):
    """name -> version over a shared name -> Resource map (restricted to `names` when given),
    so that a thousand proxies holding the same config do not each copy it."""

    __slots__ = ("names", "resources")

    def __init__(
        self, resources: Mapping[str, Resource], names: frozenset[str] | None = None
    ) -> None:
        self.resources = resources
        self.names = names

    def __getitem__(self, name: str) -> str:
        if self.names is not None and name not in self.names:
            raise KeyError(name)
        return self.resources[name].version

    def __iter__(self) -> Iterator[str]:
        if self.names is None:
            return iter(self.resources)
        return (n for n in self.resources if n in self.names)

    def __len__(self) -> int:
        if self.names is None:
            return len(self.resources)
        return sum(1 for n in self.resources if n in self.names)


class ProtocolError(Exception):
    """The client broke the protocol (e.g. no node on the first request); the stream is closed."""


@dataclass(slots=True)
class Nack:
    nonce: str
    rejected_version: str
    message: str
    at: float


class SyncStatus(StrEnum):
    SYNCED = "SYNCED"  # the last response sent was ACKed
    STALE = "STALE"  # a response was sent and is not ACKed (or NACKed) yet
    NOT_SENT = "NOT_SENT"  # subscribed, but nothing has been sent
    ERROR = "ERROR"  # the last response sent was NACKed


@dataclass(slots=True)
class TypeState:
    """What one stream knows about one type URL."""

    type_url: str
    wildcard: bool = False
    # The client has named resources (or "*") for this type on this stream: from then on an
    # empty list means "nothing", no longer the legacy wildcard (xDS spec, resource hints).
    explicit: bool = False
    names: frozenset[str] = frozenset()
    nonce_sent: str = ""
    version_sent: str = ""
    sent_at: float | None = None
    version_acked: str = ""
    acked_nonce: str = ""
    acked_at: float | None = None
    nack: Nack | None = None
    # name -> version the client has (Delta) or was last sent (SotW).
    sent: Mapping[str, str] = field(default_factory=dict)
    # SotW: the resources last sent (often a map shared by many proxies; never mutated).
    sent_resources: Mapping[str, Resource] = field(default_factory=dict)
    # The generated map this state was last compared with: the same object means no change.
    seen: Mapping[str, Resource] | None = None
    # Delta: deletions found by the changes pass of a push, sent by its removals pass.
    pending_removal: tuple[str, ...] = ()
    pushes: int = 0

    def sync_status(self) -> SyncStatus:
        """Where the client stands on the last response of this type."""
        if not self.nonce_sent:
            return SyncStatus.NOT_SENT
        if self.nack is not None and self.nack.nonce == self.nonce_sent:
            return SyncStatus.ERROR
        if self.acked_nonce == self.nonce_sent:
            return SyncStatus.SYNCED
        return SyncStatus.STALE

    def visible(self, resources: Mapping[str, Resource]) -> list[str]:
        if self.wildcard:
            return list(resources)  # generated maps are already sorted by name
        return sorted(n for n in self.names if n in resources)


NackObserver = Callable[[Proxy, str, Nack], None]


def _set_version(names_and_versions: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for name, version in names_and_versions:
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(version.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class PushMemo(dict[Hashable, Any]):
    """Results of comparisons that many streams repeat within one push (the same generated maps
    are shared by many proxies), keyed by the ids of the maps compared. Owned by the ADS server
    and emptied at every push, so it never outlives the maps it refers to."""


def _diff(
    memo: PushMemo | None, old: Mapping[str, Resource], new: Mapping[str, Resource]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """(names added or changed, names removed) from `old` to `new`, computed once per push for
    every proxy whose state is exactly `old` (maps are shared, so this is the common case)."""
    cache = memo
    key = ("diff", id(old), id(new))
    if cache is not None:
        hit = cache.get(key)
        if hit is not None and hit[0] is old and hit[1] is new:
            return hit[2], hit[3]
    changed = frozenset(
        n for n, r in new.items() if (was := old.get(n)) is None or was.version != r.version
    )
    removed = tuple(n for n in old if n not in new)
    if cache is not None:
        cache[key] = (old, new, changed, removed)  # keeps both alive: their ids stay unique
    return changed, removed


# hash -> the one live interned set with that hash, held weakly so that a set goes with its last
# stream (a hash collision simply goes uninterned).
_NAME_SETS: dict[int, weakref.ref[frozenset[str]]] = {}


def _forget(key: int, ref: weakref.ref[frozenset[str]]) -> None:
    if _NAME_SETS.get(key) is ref:
        del _NAME_SETS[key]


def _shared_names(names: frozenset[str]) -> frozenset[str]:
    """One frozenset object for identical subscriptions (most proxies subscribe alike)."""
    key = hash(names)
    ref = _NAME_SETS.get(key)
    found = ref() if ref is not None else None
    if found is not None and found == names:
        return found
    if found is not None:
        return names  # a different set with the same hash: keep the first one interned
    _NAME_SETS[key] = weakref.ref(names, functools.partial(_forget, key))
    return names


def interned_name_sets() -> int:
    """How many subscription name sets the intern table holds (for tests and debugging)."""
    return sum(1 for ref in list(_NAME_SETS.values()) if ref() is not None)


class XdsStream(Generic[Ctx]):
    """State shared by both protocol variants."""

    def __init__(
        self,
        generate: Generate,
        *,
        clock: Callable[[], float] = time.monotonic,
        nonce_prefix: str | None = None,
        on_nack: NackObserver | None = None,
        memo: PushMemo | None = None,
    ) -> None:
        self._generate = generate
        self.memo = memo
        self._clock = clock
        self._nonce_prefix = nonce_prefix or secrets.token_hex(4)
        self._nonce_counter = 0
        self._on_nack = on_nack
        self.proxy: Proxy | None = None
        self.types: dict[str, TypeState] = {}
        self.stale_requests = 0
        self.connected_at = clock()
        self._failing: set[str] = set()  # types whose generation raised last time

    def _next_nonce(self) -> str:
        self._nonce_counter += 1
        return f"{self._nonce_prefix}-{self._nonce_counter}"

    def _ensure_node(self, node: base_pb2.Node, has_node: bool) -> Proxy:
        if self.proxy is not None:
            return self.proxy
        if not has_node or not node.id:
            raise ProtocolError("the first request on a stream must carry node.id")
        id_size = len(node.id.encode())
        if id_size > NODE_ID_MAX_BYTES:
            raise ProtocolError(
                f"node.id is {id_size} bytes, over the limit of {NODE_ID_MAX_BYTES} bytes"
            )
        metadata_size = node.metadata.ByteSize()
        if metadata_size > NODE_METADATA_MAX_BYTES:
            raise ProtocolError(
                f"node.metadata is {metadata_size} bytes serialized, over the limit of "
                f"{NODE_METADATA_MAX_BYTES} bytes"
            )
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        try:
            proxy = parse_proxy(node.id, metadata)
        except ValidationError as err:
            raise ProtocolError(f"invalid node: {err}") from None
        build = node.user_agent_build_version.version
        envoy_version = (
            f"{build.major_number}.{build.minor_number}.{build.patch}"
            if (node.HasField("user_agent_build_version"))
            else node.user_agent_version
        )
        loc = node.locality
        locality = f"{loc.region}/{loc.zone}/{loc.sub_zone}" if node.HasField("locality") else ""
        self.proxy = dataclasses.replace(
            proxy, cluster=node.cluster, envoy_version=envoy_version, locality=locality
        )
        return self.proxy

    def identify(self, request: Any) -> Proxy:
        """The proxy this stream serves, from the node of its first request (ProtocolError if
        it has none or an invalid one). Lets the server check who the node claims to be before
        anything is generated for it."""
        return self._ensure_node(request.node, request.HasField("node"))

    def _record_ack_or_nack(self, state: TypeState, error: Any | None, acked_version: str) -> None:
        if error is not None:
            nack = Nack(
                nonce=state.nonce_sent,
                rejected_version=state.version_sent,
                message=bounded(error.message),
                at=self._clock(),
            )
            state.nack = nack
            if self._on_nack is not None and self.proxy is not None:
                self._on_nack(self.proxy, state.type_url, nack)
        else:
            state.version_acked = acked_version
            state.acked_nonce = state.nonce_sent
            state.acked_at = self._clock()
            state.nack = None

    def on_request(self, request: Any, ctx: Any) -> list[WireResponse]:
        """A request from the client: what to send in answer (maybe nothing)."""
        raise NotImplementedError

    def _check_new_type(self, type_url: str) -> None:
        if len(self.types) >= TYPES_PER_STREAM_MAX:
            raise ProtocolError(
                f"type URL {bounded(type_url, 200)!r} would be this stream's "
                f"{len(self.types) + 1}th; the limit is {TYPES_PER_STREAM_MAX}"
            )

    def on_push(self, ctx: Any, request: PushRequest | None = None) -> list[WireResponse]:
        """The config changed to `ctx`: what to send (changes, then removals)."""
        raise NotImplementedError

    def _resources(self, ctx: Any, type_url: str) -> Resources | None:
        """What the proxy should have of `type_url`. If generating it raises (generators leave
        out objects that fail to translate, so this is a bug), the stream must not die and
        reconnect in a loop: the proxy keeps what it was last given of this type (None: nothing
        yet, so nothing is sent), and other types are served."""
        assert self.proxy is not None
        try:
            resources = self._generate(ctx, self.proxy, type_url)
        except Exception as err:
            if type_url not in self._failing:
                self._failing.add(type_url)  # logged once until it works again
                metrics.GENERATION_FAILURES.inc(type_urls.short_name(type_url))
                _log.exception(
                    "generation failed; the proxy keeps its previous resources of this type",
                    proxy=self.proxy.id[:MAX_LOGGED_ID],
                    type=type_urls.short_name(type_url),
                    error=f"{type(err).__name__}: {err}"[:300],
                )
            state = self.types.get(type_url)
            return None if state is None else state.seen
        self._failing.discard(type_url)
        return resources

    def ordered_types(self, request: PushRequest | None = None) -> list[str]:
        ordered = sorted(self.types, key=lambda t: (type_urls.push_rank(t), t))
        if request is not None and not request.full:
            return [t for t in ordered if t == type_urls.ENDPOINT]
        return ordered

    @staticmethod
    def _touches(state: TypeState, request: PushRequest | None) -> bool:
        """Whether an endpoint-only push concerns this subscription at all."""
        if request is None or request.full:
            return True
        return state.wildcard or not state.names.isdisjoint(request.eds_clusters)


class SotwStream(XdsStream[Any]):
    """State-of-the-world ADS: every response carries the whole (subscribed) set of a type."""

    def on_request(self, request: DiscoveryRequest, ctx: Any) -> list[WireResponse]:
        self._ensure_node(request.node, request.HasField("node"))
        type_url = request.type_url
        names = set(request.resource_names)
        state = self.types.get(type_url)
        if state is None:
            self._check_new_type(type_url)
        if state is None or not request.response_nonce:
            # A new subscription (or the client starting over): answer at once, even if unchanged.
            explicit = state.explicit if state is not None else False
            state = TypeState(type_url, explicit=explicit)
            self._apply_names(state, names)
            self.types[type_url] = state
            return self._respond(state, ctx, force=True)
        if request.response_nonce != state.nonce_sent:
            # An answer to a response we have since replaced; its successor's answer will follow.
            self.stale_requests += 1
            return []
        error = request.error_detail if request.HasField("error_detail") else None
        self._record_ack_or_nack(state, error, request.version_info)
        before = state.names
        self._apply_names(state, names)
        added = state.names - before
        if added:
            return self._respond(state, ctx, force=False, extra=added)
        return []

    @staticmethod
    def _apply_names(state: TypeState, names: set[str]) -> None:
        if names:
            state.explicit = True
        state.wildcard = WILDCARD in names or (
            not state.explicit and state.type_url in type_urls.FULL_STATE_TYPES
        )
        wanted = frozenset(names - {WILDCARD})
        if wanted != state.names:
            # Interned: a thousand proxies subscribing to the same names share the strings.
            state.names = _shared_names(frozenset(sys.intern(n) for n in wanted))
            state.seen = None

    def on_push(self, ctx: Any, request: PushRequest | None = None) -> list[WireResponse]:
        """Send every subscribed type whose content changed, CDS → EDS → LDS → RDS → others.

        Full-state types that lose resources first go out with the old ones still present, and
        only after listeners and routes have moved away are they sent without them.
        """
        out: list[WireResponse] = []
        shrink_later: list[tuple[TypeState, Resources]] = []
        changed_clusters: frozenset[str] = frozenset()
        for type_url in self.ordered_types(request):
            state = self.types[type_url]
            extra = changed_clusters if type_url == type_urls.ENDPOINT else frozenset()
            if not extra and not self._touches(state, request):
                continue
            resources = self._resources(ctx, type_url)
            if resources is None:
                continue  # generation failed and the client has nothing yet: send nothing
            if resources is state.seen and not extra:
                continue  # the very map compared last time: nothing can have changed
            if type_url in type_urls.FULL_STATE_TYPES:
                removed = {n: r for n, r in state.sent_resources.items() if n not in resources}
                if removed:
                    shrink_later.append((state, resources))
                    resources = dict(sorted({**resources, **removed}.items()))
            before = state.sent_resources
            sent = self._respond(state, ctx, force=False, resources=resources, extra=extra)
            if type_url == type_urls.CLUSTER and sent:
                # A changed or new cluster warms until it gets its endpoints again.
                changed_clusters = frozenset(
                    n
                    for n, r in state.sent_resources.items()
                    if (old := before.get(n)) is None or old.version != r.version
                )
            out += sent
        for state, resources in reversed(shrink_later):
            out += self._respond(state, ctx, force=False, resources=resources)
        return out

    def _respond(
        self,
        state: TypeState,
        ctx: Any,
        *,
        force: bool,
        resources: Resources | None = None,
        extra: frozenset[str] = frozenset(),
    ) -> list[WireResponse]:
        """`force`: answer even if unchanged (a new subscription). `extra`: names to include
        even if unchanged (endpoints of re-sent clusters, newly subscribed names)."""
        if resources is None:
            resources = self._resources(ctx, state.type_url)
            if resources is None:
                return []  # generation failed and the client has nothing yet
        state.seen = resources
        chosen, version, body = _sotw_selection(self.memo, state, resources)
        wanted_extra = [n for n in extra if n in chosen]
        if not force and not wanted_extra and version == state.version_sent:
            # Unchanged, or exactly what the client already rejected: do not send it again.
            return []
        if force or state.type_url in type_urls.FULL_STATE_TYPES:
            names: tuple[str, ...] = tuple(chosen)
        else:
            # EDS, RDS and the rest may carry a subset: Envoy updates only what is present.
            previous = state.sent
            if isinstance(previous, _Versions):
                changed, _ = _diff(self.memo, previous.resources, chosen)
                names = tuple(n for n in chosen if n in extra or n in changed)
            else:
                names = tuple(
                    n for n, r in chosen.items() if n in extra or previous.get(n) != r.version
                )
            if not names:
                return []  # only unsubscriptions: nothing for the client to learn
            if len(names) != len(chosen):
                body = b"".join(chosen[n].sotw_entry for n in names)
        state.sent_at = self._clock()
        state.sent_resources = chosen
        state.sent = _Versions(chosen)
        state.version_sent = version
        if _one_per_response(state.type_url, names):
            # SDS is not full-state: each response may carry one secret of the set.
            return [self._sotw_response(state, version, chosen[n].sotw_entry, (n,)) for n in names]
        return [self._sotw_response(state, version, body, names)]

    def _sotw_response(
        self, state: TypeState, version: str, body: bytes, names: tuple[str, ...]
    ) -> WireResponse:
        nonce = self._next_nonce()
        tail = DiscoveryResponse(
            version_info=version, type_url=state.type_url, nonce=nonce
        ).SerializeToString()
        state.nonce_sent = nonce
        state.pushes += 1
        return WireResponse(state.type_url, nonce, version, body + tail, names)


def _sotw_selection(
    memo: PushMemo | None, state: TypeState, resources: Resources
) -> tuple[Mapping[str, Resource], str, bytes]:
    """What a SotW subscription gets from `resources`: the map, its version and its wire bytes.

    Proxies with the same subscription over the same generated map share one result per push.
    """
    cache = memo
    key = ("sotw", state.type_url, id(resources), None if state.wildcard else state.names)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None and hit[0] is resources:
            return hit[1], hit[2], hit[3]
    if state.wildcard:
        chosen: Mapping[str, Resource] = resources
    else:
        chosen = {n: resources[n] for n in state.visible(resources)}
    version = _set_version((r.name, r.version) for r in chosen.values())
    body = b"".join(r.sotw_entry for r in chosen.values())
    if cache is not None:
        # `resources` is kept in the entry so its id cannot be reused while the entry lives.
        cache[key] = (resources, chosen, version, body)
    return chosen, version, body


class DeltaStream(XdsStream[Any]):
    """Incremental ADS: only changed resources travel; deletions are named in removed_resources."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Clusters sent on this stream before its first EDS request: on a reconnect the client's
        # initial_resource_versions may list their endpoints, yet a re-sent cluster warms until
        # it gets them again.
        self._clusters_before_eds: set[str] = set()

    def on_request(self, request: DeltaDiscoveryRequest, ctx: Any) -> list[WireResponse]:
        self._ensure_node(request.node, request.HasField("node"))
        type_url = request.type_url
        # Interned: a thousand proxies subscribing to the same names share the strings.
        subscribe = {sys.intern(n) for n in request.resource_names_subscribe}
        unsubscribe = set(request.resource_names_unsubscribe)
        state = self.types.get(type_url)
        first = state is None
        if state is None:
            self._check_new_type(type_url)
            state = TypeState(type_url)
            # An empty first subscription to CDS/LDS is the legacy way of asking for everything.
            state.wildcard = not subscribe and type_url in type_urls.FULL_STATE_TYPES
            # On reconnect the client says what it already has; send only what differs.
            state.sent = dict(request.initial_resource_versions)
            self.types[type_url] = state
        elif request.response_nonce:
            if request.response_nonce == state.nonce_sent:
                error = request.error_detail if request.HasField("error_detail") else None
                self._record_ack_or_nack(state, error, state.version_sent)
            else:
                self.stale_requests += 1
        # Subscription changes apply whatever the nonce.
        if WILDCARD in subscribe:
            state.wildcard = True
        if WILDCARD in unsubscribe:
            state.wildcard = False
        subscribe.discard(WILDCARD)
        unsubscribe.discard(WILDCARD)
        dropped = unsubscribe & state.names
        if subscribe or unsubscribe:
            # What the client holds is read through the old names: fix it before they change.
            sent = self._sent(state)
            for name in unsubscribe:
                sent.pop(name, None)
            state.names = _shared_names((state.names | subscribe) - unsubscribe)
            state.seen = None
        # A name dropped while the wildcard still holds: the client cannot tell whether to keep
        # it, so say which (sent again if the wildcard covers it, else removed).
        recheck = dropped if state.wildcard else set()
        if first:
            # Names the client already holds (initial_resource_versions on a reconnect) are not
            # new to it: they travel only if their version differs, or their cluster was re-sent.
            force = subscribe - set(request.initial_resource_versions)
            if type_url == type_urls.ENDPOINT:
                force |= subscribe & self._clusters_before_eds
                self._clusters_before_eds.clear()
            return self._respond(state, ctx, force=force, announce_missing=subscribe, always=True)
        if subscribe or recheck:
            asked = subscribe | recheck
            return self._respond(state, ctx, force=asked, announce_missing=asked)
        return []

    @staticmethod
    def _sent(state: TypeState) -> dict[str, str]:
        """The client's versions as this stream's own dict (copied from a shared map the first
        time it diverges)."""
        if not isinstance(state.sent, dict):
            state.sent = dict(state.sent)
        return state.sent

    def on_push(self, ctx: Any, request: PushRequest | None = None) -> list[WireResponse]:
        """Changes in CDS → EDS → LDS → RDS order, then removals in the reverse order."""
        out: list[WireResponse] = []
        resent_clusters: set[str] = set()
        only = None if request is None or request.full else request.eds_clusters
        ordered = self.ordered_types(request)
        for type_url in ordered:
            state = self.types[type_url]
            force = resent_clusters if type_url == type_urls.ENDPOINT else set()
            if not force and not self._touches(state, request):
                continue
            sent = self._respond(state, ctx, force=force, removals=False, only=only)
            if type_url == type_urls.CLUSTER:
                resent_clusters = {n for resp in sent for n in resp.names}
            out += sent
        for type_url in reversed(ordered):
            state = self.types[type_url]
            if self._touches(state, request):
                out += self._respond(state, ctx, changes=False, only=only)
        return out

    def _respond(
        self,
        state: TypeState,
        ctx: Any,
        *,
        force: set[str] | frozenset[str] = frozenset(),
        announce_missing: set[str] | frozenset[str] = frozenset(),
        always: bool = False,
        changes: bool = True,
        removals: bool = True,
        only: frozenset[str] | None = None,
    ) -> list[WireResponse]:
        resources = self._resources(ctx, state.type_url)
        if resources is None:
            return []  # generation failed and the client has nothing yet
        quiet = not (force or announce_missing or always or state.pending_removal)
        if resources is state.seen and quiet:
            return []  # the very map already diffed against, in both passes
        shared = state.sent.resources if isinstance(state.sent, _Versions) else None
        if shared is not None:
            changed_names, removed_names = self._shared_diff(
                state, shared, resources, force, only, changes=changes, removals=removals
            )
        else:
            changed_names, removed_names = self._own_diff(
                state, resources, force, only, changes=changes, removals=removals
            )
        if removals:
            # A name asked for that does not exist: say so, so the client stops waiting.
            missing = [n for n in announce_missing if n not in resources]
            if missing:
                removed_names = sorted({*removed_names, *missing})
        changed = [resources[n] for n in changed_names]
        if not changed and not removed_names and not always:
            return []
        if state.type_url == type_urls.CLUSTER and type_urls.ENDPOINT not in self.types:
            self._clusters_before_eds.update(r.name for r in changed)
        state.sent_at = self._clock()
        if _one_per_response(state.type_url, changed_names):
            out = [self._delta_response(state, ctx, [r], []) for r in changed]
            if removed_names:
                out.append(self._delta_response(state, ctx, [], list(removed_names)))
            return out
        return [self._delta_response(state, ctx, changed, list(removed_names))]

    def _delta_response(
        self, state: TypeState, ctx: Any, changed: list[Resource], removed: list[str]
    ) -> WireResponse:
        nonce = self._next_nonce()
        # Unique per response, so "ACKed version == sent version" means the last send was ACKed.
        version = f"{getattr(ctx, 'version', '')}/{nonce}"
        tail = DeltaDiscoveryResponse(
            system_version_info=version,
            type_url=state.type_url,
            nonce=nonce,
            removed_resources=removed,
        ).SerializeToString()
        state.nonce_sent = nonce
        state.version_sent = version
        state.pushes += 1
        data = b"".join(r.delta_entry for r in changed) + tail
        names = tuple(r.name for r in changed)
        return WireResponse(state.type_url, nonce, version, data, names, tuple(removed))

    def _shared_diff(
        self,
        state: TypeState,
        shared: Mapping[str, Resource],
        resources: Resources,
        force: set[str] | frozenset[str],
        only: frozenset[str] | None,
        *,
        changes: bool,
        removals: bool,
    ) -> tuple[list[str], list[str]]:
        """The client holds exactly `shared` (a map many proxies share): diff the two maps once
        per push, not per proxy. On an endpoint-only push they differ only in `only` (pending
        pushes merge their cluster sets, so nothing a proxy missed falls outside it)."""
        if only is None:
            added, gone = _diff(self.memo, shared, resources)
            if not state.wildcard:
                # The client holds (and gets) only the names it subscribed to.
                added = added & state.names
                gone = tuple(n for n in gone if n in state.names)
        else:
            added = frozenset(
                n
                for n in only
                if n in resources
                and (state.wildcard or n in state.names)
                and ((was := shared.get(n)) is None or was.version != resources[n].version)
            )
            gone = tuple(
                n
                for n in only
                if n in shared and n not in resources and (state.wildcard or n in state.names)
            )
        forced = {n for n in force if n in resources and (state.wildcard or n in state.names)}
        changed_names = sorted(added | forced) if changes else []
        pending = state.pending_removal
        if removals:
            removed_names = sorted({*pending, *gone})
            state.pending_removal = ()
            if only is None:
                state.seen = resources
        else:
            removed_names = []
            state.pending_removal = tuple({*pending, *gone})
        # What the client holds once this push is done: the new map, shared again.
        state.sent = _Versions(resources, None if state.wildcard else state.names)
        return changed_names, removed_names

    def _own_diff(
        self,
        state: TypeState,
        resources: Resources,
        force: set[str] | frozenset[str],
        only: frozenset[str] | None,
        *,
        changes: bool,
        removals: bool,
    ) -> tuple[list[str], list[str]]:
        sent = self._sent(state)
        if only is not None:
            # Endpoint-only push: just the named clusters can differ from what was sent.
            candidates = sorted(only | force)
            visible = [
                n for n in candidates if n in resources and (state.wildcard or n in state.names)
            ]
            consider_removed: list[str] = [n for n in candidates if n in sent]
        else:
            visible = state.visible(resources)
            consider_removed = list(sent)
        changed_names: list[str] = []
        if changes:
            changed_names = [
                n for n in visible if n in force or sent.get(n) != resources[n].version
            ]
            for name in changed_names:
                sent[name] = resources[name].version
        removed_names: list[str] = []
        if removals:
            shown = set(visible)
            removed_names = sorted({n for n in consider_removed if n not in shown})
            for name in removed_names:
                sent.pop(name, None)
            if only is None:
                state.seen = resources  # both passes done against this map
                # Now exactly the visible part of `resources`: share the map again.
                state.sent = _Versions(resources, None if state.wildcard else state.names)
        return changed_names, removed_names
