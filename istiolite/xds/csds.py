"""CSDS: envoy.service.status.v3.ClientStatusDiscoveryService over istiolite's view of proxies.

One `ClientConfig` per connected stream (that has sent its node) matching the request's
`node_matchers`, with one `GenericXdsConfig` per resource of every subscribed type:

- `config_status` is the server's view (as istiod's syncz): SYNCED (the client ACKed the last
  response and the resource is still what istiolite would send now), STALE (a response is in
  flight, or the config changed since the ACK and the push has not gone out yet), ERROR (the last
  response of its type was NACKed), NOT_SENT (subscribed but never sent).
- `client_status` is what the client said (admin.v3.ClientResourceStatus, as Envoy and gRPC
  report it): ACKED, NACKED (with `error_state.details` = the client's message), REQUESTED (sent,
  not answered yet; or subscribed and about to be sent), DOES_NOT_EXIST (subscribed to a name
  istiolite does not have).
- `xds_config` is the resource itself when istiolite still has the exact bytes it sent; for a
  NACKed resource the rejected bytes go in `error_state.failed_configuration` instead. Secrets
  never carry a body.

A NACK is per response, not per resource: every resource of the rejected type shows NACKED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2, struct_pb2, value_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf import struct_pb2 as pb_struct

from istiolite import type_urls
from istiolite.model.regex import compile_re2
from istiolite.networking.generator import generate
from istiolite.networking.resource import Resource
from istiolite.xds.protocol import SyncStatus, TypeState

if TYPE_CHECKING:
    from istiolite.model.proxy import Proxy
    from istiolite.xds.ads import AdsService, Connection

ClientStatusRequest: TypeAlias = csds_pb2.ClientStatusRequest
ClientStatusResponse: TypeAlias = csds_pb2.ClientStatusResponse
ClientConfig: TypeAlias = csds_pb2.ClientConfig
GenericXdsConfig: TypeAlias = csds_pb2.ClientConfig.GenericXdsConfig

SYNCED = csds_pb2.SYNCED
STALE = csds_pb2.STALE
ERROR = csds_pb2.ERROR
NOT_SENT = csds_pb2.NOT_SENT
ACKED = config_dump_shared_pb2.ACKED
NACKED = config_dump_shared_pb2.NACKED
REQUESTED = config_dump_shared_pb2.REQUESTED
DOES_NOT_EXIST = config_dump_shared_pb2.DOES_NOT_EXIST

Generate = Callable[[Any, "Proxy", str], Mapping[str, Resource]]


# Bounds the work one request can ask for (each matcher is evaluated against every proxy).
MAX_NODE_MATCHERS = 64


class MatcherError(ValueError):
    """A node matcher istiolite cannot evaluate (bad regex, custom matcher...)."""


# -- node matching -----------------------------------------------------------------------------


def string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind == "safe_regex":
        # RE2, as Envoy: linear time, so a hostile pattern cannot pin the event loop.
        try:
            compiled = compile_re2(matcher.safe_regex.regex, ignore_case=matcher.ignore_case)
        except ValueError as err:
            raise MatcherError(
                f"invalid safe_regex {matcher.safe_regex.regex[:100]!r}: {err}"
            ) from None
        return compiled.fullmatch(value) is not None
    if kind is None:
        raise MatcherError("a StringMatcher needs one of exact, prefix, suffix, contains, regex")
    if kind == "custom":
        raise MatcherError("custom string matchers are not supported")
    pattern: str = getattr(matcher, kind)
    if matcher.ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if kind == "exact":
        return value == pattern
    if kind == "prefix":
        return value.startswith(pattern)
    if kind == "suffix":
        return value.endswith(pattern)
    return pattern in value  # contains


_MISSING = object()


def _lookup(
    metadata: Mapping[str, Any], path: Iterable[struct_pb2.StructMatcher.PathSegment]
) -> Any:
    value: Any = metadata
    for segment in path:
        if not isinstance(value, Mapping) or segment.key not in value:
            return _MISSING
        value = value[segment.key]
    return value


def value_matches(matcher: value_pb2.ValueMatcher, value: Any) -> bool:
    """Envoy's ValueMatcher over a JSON-like value (`_MISSING` when the path is absent)."""
    kind = matcher.WhichOneof("match_pattern")
    if kind == "present_match":
        # As Envoy's PresentMatcher: true matches any value at the path (null included),
        # false matches nothing.
        return matcher.present_match and value is not _MISSING
    if value is _MISSING:
        return False
    if kind == "null_match":
        return value is None
    if kind == "bool_match":
        return isinstance(value, bool) and value == matcher.bool_match
    if kind == "string_match":
        return isinstance(value, str) and string_matches(matcher.string_match, value)
    if kind == "double_match":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        double = matcher.double_match
        if double.WhichOneof("match_pattern") == "exact":
            return bool(float(value) == double.exact)
        return bool(double.range.start <= value < double.range.end)
    if kind == "list_match":
        return isinstance(value, list) and any(
            value_matches(matcher.list_match.one_of, item) for item in value
        )
    if kind == "or_match":
        return any(value_matches(m, value) for m in matcher.or_match.value_matchers)
    raise MatcherError("a ValueMatcher needs a match pattern")


def node_matches(matcher: node_pb2.NodeMatcher, node_id: str, metadata: Mapping[str, Any]) -> bool:
    """One NodeMatcher: its node id matcher (if set) and every metadata matcher (AND)."""
    if matcher.HasField("node_id") and not string_matches(matcher.node_id, node_id):
        return False
    return all(value_matches(m.value, _lookup(metadata, m.path)) for m in matcher.node_metadatas)


def request_matches(
    request: ClientStatusRequest, node_id: str, metadata: Mapping[str, Any]
) -> bool:
    """No matchers: every node. Several: any of them (CSDS: OR semantics)."""
    if not request.node_matchers:
        return True
    count = len(request.node_matchers)
    if count > MAX_NODE_MATCHERS:
        raise MatcherError(f"node_matchers has {count} entries, over the limit {MAX_NODE_MATCHERS}")
    return any(node_matches(m, node_id, metadata) for m in request.node_matchers)


# -- status ------------------------------------------------------------------------------------


def _timestamp(monotonic: float | None, offset: float) -> timestamp_pb2.Timestamp | None:
    if monotonic is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int((monotonic + offset) * 1e9))
    return stamp


def _confidential(type_url: str) -> bool:
    return type_url == type_urls.SECRET or type_url.endswith(".Secret")


def _phase(state: TypeState) -> int | None:
    """The client's answer to the last response of this type: ACKED, NACKED, REQUESTED or None
    (nothing sent). The server records an ACK or NACK only for the nonce it sent last, so an ACK
    newer than the last send is the ACK of that send."""
    return _PHASES[state.sync_status()]


_PHASES: dict[SyncStatus, int | None] = {
    SyncStatus.NOT_SENT: None,
    SyncStatus.ERROR: NACKED,
    SyncStatus.SYNCED: ACKED,
    SyncStatus.STALE: REQUESTED,
}


def type_configs(
    state: TypeState,
    current: Mapping[str, Resource],
    *,
    contents: bool = True,
    clock_offset: float = 0.0,
) -> list[GenericXdsConfig]:
    """One GenericXdsConfig per resource of this subscription, by name.

    `current` is what istiolite would send this proxy now; `clock_offset` turns the stream's
    monotonic stamps into wall-clock time.
    """
    type_url = state.type_url
    phase = _phase(state)
    secret = _confidential(type_url)
    out: list[GenericXdsConfig] = []
    sent = state.sent
    for name in sorted(set(sent) | set(state.names)):
        entry = GenericXdsConfig(type_url=type_url, name=name)
        version = sent.get(name)
        if version is None or phase is None:
            # Subscribed, never sent: either istiolite has nothing by that name, or it is about
            # to send it.
            entry.config_status = NOT_SENT
            entry.client_status = REQUESTED if name in current else DOES_NOT_EXIST
            out.append(entry)
            continue
        entry.version_info = version
        body: Resource | None = None
        now = current.get(name)
        if now is not None and now.version == version:
            body = now
        else:
            earlier = state.sent_resources.get(name)
            if earlier is not None and earlier.version == version:
                body = earlier
        if secret or not contents:
            body = None
        payload = any_pb2.Any(type_url=body.type_url, value=body.payload) if body else None
        entry.client_status = phase
        if phase == NACKED:
            assert state.nack is not None
            entry.config_status = ERROR
            failure = entry.error_state
            failure.details = state.nack.message
            failure.version_info = state.nack.rejected_version
            stamp = _timestamp(state.nack.at, clock_offset)
            if stamp is not None:
                failure.last_update_attempt.CopyFrom(stamp)
            if payload is not None:
                failure.failed_configuration.CopyFrom(payload)
        else:
            if phase == ACKED:
                up_to_date = now is not None and now.version == version
                entry.config_status = SYNCED if up_to_date else STALE
                stamp = _timestamp(state.acked_at, clock_offset)
            else:
                entry.config_status = STALE
                stamp = _timestamp(state.sent_at, clock_offset)
            if stamp is not None:
                entry.last_updated.CopyFrom(stamp)
            if payload is not None:
                entry.xds_config.CopyFrom(payload)
        out.append(entry)
    return out


def node_of(proxy: Proxy) -> base_pb2.Node:
    node = base_pb2.Node(id=proxy.id)
    if proxy.metadata:
        metadata = pb_struct.Struct()
        metadata.update(proxy.metadata)
        node.metadata.CopyFrom(metadata)
    return node


def client_config(
    conn: Connection,
    ctx: Any,
    generator: Generate = generate,
    *,
    contents: bool = True,
    clock_offset: float | None = None,
) -> ClientConfig | None:
    """What istiolite knows about one stream's proxy; None before the stream sent its node."""
    proxy = conn.proxy
    if proxy is None:
        return None
    if clock_offset is None:
        clock_offset = time.time() - time.monotonic()
    config = ClientConfig(node=node_of(proxy))
    stream = conn.stream
    for type_url in stream.ordered_types():
        state = stream.types[type_url]
        current = generator(ctx, proxy, type_url)
        config.generic_xds_configs.extend(
            type_configs(state, current, contents=contents, clock_offset=clock_offset)
        )
    return config


# The generated servicer base is Any to mypy: xds-protos ships no stubs.
class CsdsService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    SERVICE_NAME = csds_pb2.DESCRIPTOR.services_by_name["ClientStatusDiscoveryService"].full_name

    def __init__(self, ads: AdsService, *, generator: Generate = generate) -> None:
        self.ads = ads
        self._generate = generator

    async def status(self, request: ClientStatusRequest) -> ClientStatusResponse:
        """The response to one request; yields to the loop between proxies."""
        response = ClientStatusResponse()
        offset = time.time() - time.monotonic()
        connections: list[Connection] = sorted(
            self.ads.connections.values(),
            key=lambda c: (c.proxy.id if c.proxy is not None else "", c.stream.connected_at),
        )
        for conn in connections:
            proxy = conn.proxy
            if proxy is None or not request_matches(request, proxy.id, proxy.metadata):
                continue
            if conn.id not in self.ads.connections:
                continue  # closed while this response was being built
            config = client_config(
                conn,
                self.ads.context,
                self._generate,
                contents=not request.exclude_resource_contents,
                clock_offset=offset,
            )
            if config is not None:
                response.config.append(config)
            await asyncio.sleep(0)
        return response

    async def FetchClientStatus(
        self,
        request: ClientStatusRequest,
        context: grpc.aio.ServicerContext[ClientStatusRequest, ClientStatusResponse],
    ) -> ClientStatusResponse:
        try:
            return await self.status(request)
        except MatcherError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise  # unreachable: abort raises

    async def StreamClientStatus(
        self,
        request_iterator: AsyncIterator[ClientStatusRequest],
        context: grpc.aio.ServicerContext[ClientStatusRequest, ClientStatusResponse],
    ) -> AsyncIterator[ClientStatusResponse]:
        async for request in request_iterator:
            try:
                response = await self.status(request)
            except MatcherError as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
                raise
            yield response
