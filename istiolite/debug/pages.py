"""Debug pages on the HTTP port (/debug/*): read-only JSON views of istiolite's state.

Each page is a pure function of the state it reads (`syncz(status)`, `registryz(ctx)`, ...) plus
a thin handler that serializes it. Pages read a narrow `DebugStatus` (istiolite/debug/status.py),
never the server object. What they read they gather on the event loop, so they see a consistent
state; the costly half, turning protos and big structures into JSON, runs in a worker thread (one
page at a time, see `Renderer`), so a megabyte config dump does not stall pushes. The JSON shapes
are a public contract (README, "Seeing what every proxy has"): `istiolite proxy-status` and
`istiolite proxy-config` read them.

Private key material never leaves through these pages: secrets are rendered with every key,
password and generic secret replaced by "[redacted]", as Envoy's own /config_dump does, and any
such field inlined elsewhere (a TLS context in a listener or cluster) is scrubbed the same way.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from envoy.admin.v3 import config_dump_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, json_format

from istiolite import type_urls
from istiolite.debug.config_dump import config_dump
from istiolite.debug.status import DebugStatus, SourcesState
from istiolite.http_server import Handler, Request, Response
from istiolite.model.store import winner_of
from istiolite.networking.resource import Resource
from istiolite.push.errors import GenerationError
from istiolite.xds.protocol import SyncStatus, TypeState

if TYPE_CHECKING:
    from istiolite.push.context import ConfigWarning, PushContext
    from istiolite.xds.ads import Connection

T = TypeVar("T")

JSON = "application/json"

SYNCED = SyncStatus.SYNCED.value
STALE = SyncStatus.STALE.value
NOT_SENT = SyncStatus.NOT_SENT.value
ERROR = SyncStatus.ERROR.value

REDACTED = "[redacted]"


def instance_name() -> str:
    """Which istiolite answered: the pod name in Kubernetes (as istiod), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def type_key(type_url: str) -> str:
    """CDS, EDS, LDS, RDS, SDS for Envoy's types; any other type by its full URL."""
    return type_urls.SHORT_NAMES.get(type_url, type_url)


def sync_status(state: TypeState) -> str:
    return str(state.sync_status())


class WallClock:
    """Turns time.monotonic() stamps into UTC wall-clock strings (one reference per page)."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def __call__(self, monotonic: float | None) -> str | None:
        if monotonic is None:
            return None
        stamp = datetime.fromtimestamp(monotonic + self._offset, UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def proxy_name(proxy_id: str) -> str:
    """`<pod>.<namespace>`, the third part of an Istio node id (istioctl's NAME)."""
    parts = proxy_id.split("~")
    return parts[2] if len(parts) == 4 else proxy_id


# -- /debug/syncz ------------------------------------------------------------------------------


def _type_status(state: TypeState, wall: WallClock) -> dict[str, Any]:
    nack = state.nack
    return {
        "type_url": state.type_url,
        "status": sync_status(state),
        "wildcard": state.wildcard,
        "subscribed": len(state.names),
        "resources": len(state.sent),
        "sent_version": state.version_sent,
        "sent_nonce": state.nonce_sent,
        "sent_at": wall(state.sent_at),
        "acked_version": state.version_acked,
        "acked_at": wall(state.acked_at),
        "pushes": state.pushes,
        "nack": None
        if nack is None
        else {
            "message": nack.message,
            "rejected_version": nack.rejected_version,
            "nonce": nack.nonce,
            "at": wall(nack.at),
        },
    }


def syncz(status: DebugStatus) -> list[dict[str, Any]]:
    """Per connected proxy (streams that have sent their node), per subscribed type."""
    wall = WallClock()
    istiod = instance_name()
    out = []
    for conn in status.connections():
        proxy = conn.proxy
        if proxy is None:
            continue
        stream = conn.stream
        out.append(
            {
                "proxy": proxy.id,
                "name": proxy_name(proxy.id),
                "proxy_type": str(proxy.type),
                "cluster_id": proxy.cluster_id,
                "istio_version": proxy.istio_version,
                "connection": conn.id,
                "peer": conn.peer,
                "delta": conn.delta,
                "connected_at": wall(stream.connected_at),
                "istiod": istiod,
                "types": {
                    type_key(t): _type_status(stream.types[t], wall) for t in stream.ordered_types()
                },
            }
        )
    out.sort(key=lambda entry: (entry["name"], entry["proxy"], entry["connection"]))
    return out


# -- /debug/config_dump ------------------------------------------------------------------------


class AmbiguousProxy(LookupError):
    pass


def find_connection(status: DebugStatus, wanted: str) -> Connection | None:
    """The stream of the proxy named by a full node id, `<pod>.<namespace>` or a lone pod name
    (when only one proxy has it). With several streams of one proxy, the newest wins."""
    exact: list[Connection] = []
    by_name: list[Connection] = []
    by_pod: list[Connection] = []
    for conn in status.connections():
        proxy = conn.proxy
        if proxy is None:
            continue
        if proxy.id == wanted:
            exact.append(conn)
        elif wanted in (proxy_name(proxy.id), f"{proxy.pod_name}.{proxy.namespace}"):
            by_name.append(conn)
        elif wanted == proxy.pod_name:
            by_pod.append(conn)
    for found in (exact, by_name, by_pod):
        if found:
            ids = {c.proxy.id for c in found if c.proxy is not None}
            if len(ids) > 1:
                raise AmbiguousProxy(f"{wanted!r} matches several proxies: {sorted(ids)}")
            return max(found, key=lambda c: c.stream.connected_at)
    return None


def _redact(source: Any) -> None:
    """Replace a DataSource's content, whatever its kind, by the redaction marker."""
    source.Clear()
    source.inline_string = REDACTED


def redacted_secret(payload: bytes) -> secret_pb2.Secret:
    """A Secret with its key material replaced; certificates and trust bundles stay visible."""
    secret = secret_pb2.Secret.FromString(payload)
    if secret.HasField("tls_certificate"):
        cert = secret.tls_certificate
        for name in ("private_key", "pkcs12", "password"):
            if cert.HasField(name):
                _redact(getattr(cert, name))
        # A key provider's config may carry key material too: leave it out entirely.
        cert.ClearField("private_key_provider")
    if secret.HasField("session_ticket_keys"):
        for key in secret.session_ticket_keys.keys:
            _redact(key)
    if secret.HasField("generic_secret"):
        generic = secret.generic_secret
        if generic.HasField("secret"):
            _redact(generic.secret)
        for value in generic.secrets.values():
            _redact(value)
    return secret


# Fields that hold key material wherever they appear (TLS contexts inlined in a listener or a
# cluster, secrets): a second line of defence behind the Secret redaction above.
_SECRET_FIELDS = frozenset({"private_key", "pkcs12", "password"})
_SCRUBBED_NAMES = (*_SECRET_FIELDS, "session_ticket_keys")


def _redacted_like(value: Any) -> Any:
    return {"inline_string": REDACTED} if isinstance(value, dict) else REDACTED


def scrub(value: Any) -> Any:
    """A JSON-shaped value with every key-material field replaced by the redaction marker."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _SECRET_FIELDS:
                out[k] = _redacted_like(v)
            elif k == "session_ticket_keys" and isinstance(v, dict):
                out[k] = {**v, "keys": [_redacted_like(key) for key in v.get("keys", [])]}
            else:
                out[k] = scrub(v)
        return out
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def secrets_dump(resources: Mapping[str, Resource]) -> config_dump_pb2.SecretsConfigDump:
    dump = config_dump_pb2.SecretsConfigDump()
    for name, resource in resources.items():
        secret = redacted_secret(resource.payload)
        packed = any_pb2.Any()
        packed.Pack(secret)
        dump.dynamic_active_secrets.add(name=name, version_info=resource.version, secret=packed)
    return dump


def proxy_resources(status: DebugStatus, conn: Connection) -> dict[str, dict[str, Resource]]:
    """What istiolite would send this proxy now: for each type it subscribes to, the resources
    its subscription covers (so EDS lists exactly the clusters it asked endpoints for). Reads the
    stream's live state: call it on the event loop. Cheap: references to the push's resources,
    from the live resource cache."""
    proxy = conn.proxy
    assert proxy is not None
    by_type: dict[str, dict[str, Resource]] = {}
    for type_url, state in conn.stream.types.items():
        resources = status.generate(proxy, type_url)
        if type_url == type_urls.SECRET:
            # The stream's own `default`/`ROOTCA` (per identity, not in the shared cache);
            # secrets_dump redacts the key.
            own = conn.workload_secrets()
            if own:
                resources = dict(sorted({**resources, **own}.items()))
        by_type[type_url] = {n: resources[n] for n in state.visible(resources)}
    return by_type


def resources_config_dump(
    by_type: Mapping[str, Mapping[str, Resource]],
) -> config_dump_pb2.ConfigDump:
    """The ConfigDump of `proxy_resources`; touches only immutable resources, so any thread."""
    by_type = dict(by_type)
    secrets = by_type.pop(type_urls.SECRET, {})
    dump = config_dump(by_type)
    if secrets:
        dump.configs.add().Pack(secrets_dump(secrets))
    return dump


def proxy_config_dump(status: DebugStatus, conn: Connection) -> config_dump_pb2.ConfigDump:
    return resources_config_dump(proxy_resources(status, conn))


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _json_response(status: int, body: Any) -> Response:
    # orjson: a config dump of a thousand services is megabytes, and this runs on the loop.
    text = orjson.dumps(body, default=_default, option=orjson.OPT_INDENT_2)
    return Response(status, text + b"\n", JSON)


class Renderer:
    """Runs the costly, pure half of a page (protos and big structures to JSON) in a worker
    thread, one page at a time: the event loop stays free for pushes, and a burst of dumps waits
    here instead of several threads contending with the loop for the GIL."""

    def __init__(self) -> None:
        self._slot = asyncio.Semaphore(1)

    async def __call__(self, work: Callable[[], T]) -> T:
        async with self._slot:
            return await asyncio.to_thread(work)


async def config_dump_page(status: DebugStatus, request: Request, render: Renderer) -> Response:
    wanted = request.arg("proxyID")
    if not wanted:
        return _json_response(400, {"error": "give the proxy: ?proxyID=<node id or pod.namespace>"})
    try:
        conn = find_connection(status, wanted)
    except AmbiguousProxy as err:
        return _json_response(400, {"error": str(err)})
    if conn is None:
        return _json_response(404, {"error": f"proxy {wanted!r} is not connected"})
    by_type = proxy_resources(status, conn)  # on the loop: the live stream state
    return await render(lambda: config_dump_response(resources_config_dump(by_type)))


def config_dump_response(dump: config_dump_pb2.ConfigDump) -> Response:
    """Envoy's snake_case JSON, key material scrubbed wherever it would appear."""
    body = json_format.MessageToDict(dump, preserving_proto_field_name=True)
    response = _json_response(200, body)
    if any(f'"{name}"'.encode() in response.body for name in _SCRUBBED_NAMES):
        response = _json_response(200, scrub(body))  # rare: only pay for the walk when needed
    return response


# -- /debug/registryz --------------------------------------------------------------------------


def registryz(ctx: PushContext) -> list[dict[str, Any]]:
    """Services of the current push, each port with the ready endpoints that serve it."""
    out = []
    for service in ctx.services:
        ports = []
        for port in service.ports:
            endpoints = [
                {
                    "address": ep.address,
                    "port": ep.port,
                    "locality": {
                        "region": ep.locality.region,
                        "zone": ep.locality.zone,
                        "subZone": ep.locality.sub_zone,
                    },
                    "pod": ep.pod,
                    "serviceAccount": ep.service_account,
                }
                for ep in ctx.endpoints(service, port)
            ]
            ports.append(
                {
                    "name": port.name,
                    "port": port.port,
                    "protocol": str(port.protocol),
                    "targetPort": port.target_port,
                    "endpoints": endpoints,
                }
            )
        out.append(
            {
                "hostname": ctx.hostname(service),
                "name": service.name,
                "namespace": service.namespace,
                "type": service.type,
                "clusterIP": service.cluster_ip,
                "externalName": service.external_name,
                "selector": dict(service.selector),
                "ports": ports,
            }
        )
    return out


# -- /debug/configz ----------------------------------------------------------------------------


def configz(status: DebugStatus) -> dict[str, Any]:
    """Objects in the store (all valid: invalid ones are rejected) and the current problems."""
    return configz_of(status.sources(), list(status.warnings()), status.generation_errors())


def configz_of(
    state: SourcesState, found: Sequence[ConfigWarning], failed: Sequence[GenerationError]
) -> dict[str, Any]:
    """`configz` from what it reads (fresh copies): sorting and shaping run in any thread."""
    objects = []
    for key in sorted(state.objects, key=lambda k: (k.kind, k.namespace, k.name)):
        sources = list(state.objects[key])
        objects.append(
            {
                "kind": key.kind,
                "namespace": key.namespace,
                "name": key.name,
                # The store keeps the object of the source that sorts last (store.winner_of).
                "source": winner_of(sources) if sources else "",
                "sources": sources,
            }
        )
    # Loaded, but referring to something missing (e.g. a subset no DestinationRule defines) or
    # setting something istiolite accepts but does not apply yet.
    warnings = [{"object": w.object, "field": w.field, "message": w.message} for w in found]
    return {
        "loaded": state.loaded,
        "objects": objects,
        "errors": list(state.errors),
        # Read but not translated: these objects have no effect on any proxy.
        "unsupported": list(state.unsupported),
        "warnings": warnings,
        # Objects that passed validation yet failed to translate: left out of what proxies get.
        "generation_errors": [e.as_dict() for e in failed],
    }


# -- /debug/push_status ------------------------------------------------------------------------


def push_status(status: DebugStatus) -> dict[str, Any]:
    out = dict(status.push_status())
    out.setdefault("version", status.push_context().version)
    connections = status.connections()
    out["connected_proxies"] = sum(1 for c in connections if c.proxy is not None)
    out["connections"] = len(connections)
    return out


def debug_routes(status: DebugStatus, render: Renderer | None = None) -> dict[str, Handler]:
    """GET handlers by path. Each gathers its data on the loop and encodes it in `render`'s
    thread (the dicts gathered are fresh copies: nothing the loop changes meanwhile)."""
    render = render or Renderer()

    def page(gather: Callable[[], Any]) -> Handler:
        async def handler(_request: Request) -> Response:
            body = gather()
            return await render(lambda: _json_response(200, body))

        return handler

    def built_off_loop(gather: Callable[[], Callable[[], Any]]) -> Handler:
        """A page whose body is big to build (every service, every object): the loop only
        takes the immutable inputs, and the worker thread builds and encodes the body."""

        async def handler(_request: Request) -> Response:
            build = gather()
            return await render(lambda: _json_response(200, build()))

        return handler

    def registry() -> Callable[[], Any]:
        ctx = status.push_context()  # one push's context: immutable once published
        return lambda: registryz(ctx)

    def config() -> Callable[[], Any]:
        state, found = status.sources(), list(status.warnings())
        failed = list(status.generation_errors())
        return lambda: configz_of(state, found, failed)

    async def dump(request: Request) -> Response:
        return await config_dump_page(status, request, render)

    return {
        "/debug/syncz": page(lambda: syncz(status)),
        "/debug/config_dump": dump,
        "/debug/registryz": built_off_loop(registry),
        "/debug/configz": built_off_loop(config),
        "/debug/push_status": page(lambda: push_status(status)),
    }
