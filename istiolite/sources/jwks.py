"""The JWKS fetcher: istiolite fetches every `jwksUri` a RequestAuthentication names and keeps
the key sets in the store, so generation inlines them (as istiod's JwksResolver does) and a
proxy never has to reach the key server itself.

One `JwksKeySet` per URI, in the store under the source id `jwks`. Fetching is asynchronous
(aiohttp on the one event loop), bounded (per-rule timeout, a size cap, a cap on concurrent
fetches, no redirects, no link-local or cloud-metadata addresses — istiod blocks those too) and
checked (a valid JWK set, reduced to public members). A key set is refreshed every
`refresh_interval` (istiod: 20 minutes); a failed fetch is retried with exponential backoff
(from `retry_initial` up to `retry_max`) and keeps the last good set, and the failure is
reported: a log line, a metric, the key set's `error` (shown as a config warning). A changed
key set (or error) changes the store object, and so pushes the listeners that inline it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.jwks import JWKS_KIND, MAX_FETCHED_BYTES, JwksKeySet, parse_jwks
from istiolite.model.meta import ObjectKey, ObjectMeta
from istiolite.model.requestauthentication import RequestAuthentication
from istiolite.model.store import ChangeSet, ConfigStore
from istiolite.model.validation import ValidationError

log = get_logger("sources.jwks")

SOURCE = "jwks"
DEFAULT_REFRESH_INTERVAL = 20 * 60.0  # istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL
DEFAULT_RETRY_INITIAL = 1.0
DEFAULT_RETRY_MAX = 60.0  # istiod's refresh interval on failure
MAX_CONCURRENT_FETCHES = 8
# The longest the startup push waits for the first round (a jwksUri that never answers must not
# hold up the whole control plane; its tokens get 401 until it does).
MAX_STARTUP_WAIT = 10.0
_ERROR_TEXT = 200

# istiod's names.
FETCH_SUCCESS = metrics.CounterVec(
    "pilot_jwks_resolver_network_fetch_success_total",
    "Total number of successfully network fetch by pilot jwks resolver",
    (),
)
FETCH_FAIL = metrics.CounterVec(
    "pilot_jwks_resolver_network_fetch_fail_total",
    "Total number of failed network fetch by pilot jwks resolver",
    (),
)


class FetchError(Exception):
    """A fetch that gave no usable key set; the message says why (bounded, no body quoted)."""


def wanted_uris(objects: Mapping[ObjectKey, Any]) -> dict[str, float]:
    """Every jwksUri the RequestAuthentications name, with the longest timeout asked for it."""
    out: dict[str, float] = {}
    for key, obj in objects.items():
        if key.kind != "RequestAuthentication" or not isinstance(obj, RequestAuthentication):
            continue
        for rule in obj.jwt_rules:
            if rule.jwks_uri and rule.jwks is None:
                out[rule.jwks_uri] = max(out.get(rule.jwks_uri, 0.0), rule.timeout)
    return out


def blocked_address(address: str) -> str | None:
    """Why istiolite will not fetch keys from this IP (None: it may), as istiod's
    jwksBlockedIP: link-local addresses and the known cloud metadata ones."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip in _METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    return None


_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "169.254.169.254")
)


class _GuardedResolver(AbstractResolver):
    """Resolves as usual, then refuses a host that resolves to a blocked address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for result in found:
            why = blocked_address(result["host"])
            if why:
                raise OSError(f"connection blocked: {host} resolves to {why}")
        return found

    async def close(self) -> None:
        await self._inner.close()


async def fetch_key_set(
    session: aiohttp.ClientSession, uri: str, limit: float, max_bytes: int = MAX_FETCHED_BYTES
) -> str:
    """GET `uri` and return its key set as Envoy gets it (public members, canonical JSON)."""
    host = urlsplit(uri).hostname or ""
    why = blocked_address(host)
    if why:
        raise FetchError(f"connection blocked: {why}")
    try:
        async with session.get(
            uri,
            timeout=aiohttp.ClientTimeout(total=limit),
            allow_redirects=False,  # a redirect could lead anywhere, past the address check
            headers={"Accept": "application/json"},
        ) as response:
            if not 200 <= response.status < 300:
                raise FetchError(f"status {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise FetchError(f"response larger than {max_bytes} bytes")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"response larger than {max_bytes} bytes")
    except TimeoutError:
        raise FetchError(f"no answer within {limit:g}s") from None
    except (aiohttp.ClientError, OSError) as err:
        raise FetchError(_short(f"{type(err).__name__}: {err}")) from None
    try:
        return parse_jwks(body.decode("utf-8"), "response", max_bytes=max_bytes).text
    except UnicodeDecodeError:
        raise FetchError("response is not UTF-8 text") from None
    except ValidationError as err:
        raise FetchError(_short(f"not a valid JWKS: {err.message}")) from None


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT else text[: _ERROR_TEXT - 3] + "..."


@dataclass(slots=True)
class _State:
    timeout: float
    keys: str = ""
    error: str = ""
    failures: int = 0
    next_due: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class JwksFetcher:
    """Keeps a `JwksKeySet` in the store for every jwksUri the store's policies name."""

    def __init__(
        self,
        store: ConfigStore,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
        max_bytes: int = MAX_FETCHED_BYTES,
        clock: Any = time.monotonic,
    ) -> None:
        self._store = store
        self._refresh = max(0.1, refresh_interval)
        self._retry_initial = max(0.05, retry_initial)
        self._retry_max = max(self._retry_initial, min(retry_max, self._refresh))
        self._max_bytes = max_bytes
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self._session: aiohttp.ClientSession | None = None

    def on_change(self, changes: ChangeSet) -> None:
        """Store listener: policies changed, so the URIs to fetch may have."""
        if "RequestAuthentication" in changes.kinds:
            self._wake.set()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per URI: whether keys are known, the last error, consecutive failures."""
        return {
            uri: {"keys": bool(s.keys), "error": s.error, "failures": s.failures}
            for uri, s in sorted(self._states.items())
        }

    async def first_round(self, limit: float = MAX_STARTUP_WAIT) -> None:
        """Fetch what the store names now, waiting at most `limit` (or the longest rule
        timeout, if shorter) so the startup push already carries the keys."""
        self._reconcile()
        tasks = [t for t in (self._start(uri) for uri in list(self._states)) if t is not None]
        if tasks:
            longest = max(s.timeout for s in self._states.values())
            await asyncio.wait(tasks, timeout=min(limit, longest + 0.5))

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._reconcile()
                now = self._clock()
                for uri, state in list(self._states.items()):
                    if state.task is None and state.next_due <= now:
                        self._start(uri)
                idle = [s.next_due - now for s in self._states.values() if s.task is None]
                delay = max(0.05, min(idle, default=self._refresh))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            await self.close()

    async def close(self) -> None:
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _reconcile(self) -> None:
        """Track exactly the URIs the policies name; forget (and unpublish) the others."""
        wanted = wanted_uris(self._store.snapshot())
        gone = [uri for uri in self._states if uri not in wanted]
        for uri in gone:
            dropped = self._states.pop(uri)
            if dropped.task is not None:
                dropped.task.cancel()
        for uri, timeout in wanted.items():
            state = self._states.get(uri)
            if state is None:
                self._states[uri] = _State(timeout=timeout)
            else:
                state.timeout = timeout
        if gone:
            self._publish()

    def _start(self, uri: str) -> asyncio.Task[None] | None:
        state = self._states.get(uri)
        if state is None or state.task is not None:
            return None
        task = asyncio.get_running_loop().create_task(self._fetch(uri, state), name="jwks")
        state.task = task
        return task

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=_GuardedResolver(), limit=16)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _fetch(self, uri: str, state: _State) -> None:
        try:
            async with self._limit:
                keys = await fetch_key_set(self._client(), uri, state.timeout, self._max_bytes)
        except FetchError as err:
            FETCH_FAIL.inc()
            state.failures += 1
            delay = min(self._retry_initial * 2 ** min(state.failures - 1, 30), self._retry_max)
            state.next_due = self._clock() + delay * random.uniform(0.9, 1.1)
            changed = state.error != str(err)
            state.error = str(err)
            log.warning(
                "jwks fetch failed",
                uri=uri,
                error=state.error,
                failures=state.failures,
                retry_in=round(delay, 2),
                using="last good keys" if state.keys else "no keys: its tokens are rejected",
            )
        else:
            FETCH_SUCCESS.inc()
            changed = keys != state.keys or bool(state.error)
            if keys != state.keys:
                log.info("jwks updated", uri=uri, first=not state.keys)
            state.keys, state.error, state.failures = keys, "", 0
            state.next_due = self._clock() + self._refresh
        finally:
            state.task = None
            self._wake.set()
        if changed and self._states.get(uri) is state:
            self._publish()

    def _publish(self) -> None:
        objects = {
            ObjectKey(JWKS_KIND, "", uri): JwksKeySet(
                meta=ObjectMeta(name=uri, namespace=""), uri=uri, keys=s.keys, error=s.error
            )
            for uri, s in self._states.items()
            if s.keys or s.error
        }
        self._store.replace_source(SOURCE, objects)
