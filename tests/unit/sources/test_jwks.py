"""The JWKS fetcher against a real HTTP server on loopback: key sets land in the store, failures
keep the last good set and are reported, everything a key server controls is bounded."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from istiolite.model.jwks import JWKS_KIND, JwksKeySet
from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.model.store import ConfigStore
from istiolite.sources.jwks import FETCH_FAIL, JwksFetcher, blocked_address
from tests.support.jwt import JwksServer, SigningKey, jwks
from tests.support.net import free_port, loopback_ip


def policy(uri: str, name: str = "jwt", timeout: str = "1s") -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"jwtRules": [{"issuer": "issuer", "jwksUri": uri, "timeout": timeout}]},
    }


def put(store: ConfigStore, *raws: dict[str, Any]) -> None:
    store.replace_source("files", dict(parse_object(raw) for raw in raws))


def key_set(store: ConfigStore, uri: str) -> JwksKeySet | None:
    found = store.snapshot().get(ObjectKey(JWKS_KIND, "", uri))
    assert found is None or isinstance(found, JwksKeySet)
    return found


async def until(condition: Callable[[], Any], limit: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        result = condition()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {condition}")


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., JwksFetcher]]:
    """Starts fetchers on the test's loop; stops them all afterwards."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(store: ConfigStore, **options: Any) -> JwksFetcher:
        fetcher = JwksFetcher(store, **options)
        store.subscribe(fetcher.on_change)
        tasks.append(asyncio.create_task(fetcher.run(stop)))
        return fetcher

    yield start
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def server() -> Any:
    servers: list[JwksServer] = []

    def start(body: str, host: str = "127.0.0.1", port: int = 0) -> JwksServer:
        servers.append(JwksServer(host, port, body))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


async def test_first_round_fetches_before_the_startup_push(server: Any) -> None:
    key = SigningKey("ES256")
    jwks_server = server(jwks(key))
    store = ConfigStore()
    put(store, policy(jwks_server.url))
    fetcher = JwksFetcher(store)
    try:
        await fetcher.first_round()
    finally:
        await fetcher.close()
    found = key_set(store, jwks_server.url)
    assert found is not None and found.error == ""
    assert json.loads(found.keys) == {"keys": [key.jwk()]}


async def test_private_members_never_reach_the_store(server: Any) -> None:
    key = SigningKey("RS256")
    leaked = {**key.jwk(), "d": "c2VjcmV0", "p": "cA", "q": "cQ"}
    jwks_server = server(json.dumps({"keys": [leaked]}))
    store = ConfigStore()
    put(store, policy(jwks_server.url))
    fetcher = JwksFetcher(store)
    try:
        await fetcher.first_round()
    finally:
        await fetcher.close()
    found = key_set(store, jwks_server.url)
    assert found is not None
    assert json.loads(found.keys)["keys"] == [key.jwk()]
    assert "c2VjcmV0" not in found.keys


async def test_failure_keeps_the_last_good_keys_and_rotation_is_picked_up(
    server: Any, running: Callable[..., JwksFetcher]
) -> None:
    first, second = SigningKey("ES256"), SigningKey("RS256")
    jwks_server = server(jwks(first))
    store = ConfigStore()
    put(store, policy(jwks_server.url))
    running(store, refresh_interval=0.2, retry_initial=0.05)
    await until(lambda: (k := key_set(store, jwks_server.url)) and k.keys)
    failures = FETCH_FAIL.value()
    jwks_server.status = 503
    found = await until(lambda: (k := key_set(store, jwks_server.url)) and k.error and k)
    assert found.error == "status 503"
    assert json.loads(found.keys) == {"keys": [first.jwk()]}  # still the last good set
    assert FETCH_FAIL.value() > failures
    # Rotation at the server: the next refresh brings the new key, the error is gone.
    jwks_server.body, jwks_server.status = jwks(second), 200
    found = await until(
        lambda: (k := key_set(store, jwks_server.url)) and second.kid in k.keys and k
    )
    assert found.error == ""
    assert json.loads(found.keys) == {"keys": [second.jwk()]}


async def test_server_down_at_start_then_up(
    server: Any, running: Callable[..., JwksFetcher]
) -> None:
    host, port = loopback_ip(), free_port()
    uri = f"http://{host}:{port}/jwks"
    store = ConfigStore()
    put(store, policy(uri))
    running(store, refresh_interval=5, retry_initial=0.05, retry_max=0.2)
    found = await until(lambda: key_set(store, uri))
    assert found.keys == "" and found.error  # refused: reported, no keys
    key = SigningKey("ES256")
    server(jwks(key), host, port)
    found = await until(lambda: (k := key_set(store, uri)) and k.keys and k)
    assert json.loads(found.keys) == {"keys": [key.jwk()]}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("x" * (2 * 1024 * 1024), "larger than"),
        ("<html>not json</html>", "not a valid JWKS"),
        ('{"keys": []}', "no keys"),
    ],
)
async def test_bad_responses_are_refused_with_a_reason(server: Any, body: str, reason: str) -> None:
    jwks_server = server(body)
    store = ConfigStore()
    put(store, policy(jwks_server.url))
    fetcher = JwksFetcher(store)
    try:
        await fetcher.first_round()
    finally:
        await fetcher.close()
    found = key_set(store, jwks_server.url)
    assert found is not None and found.keys == ""
    assert reason in found.error


async def test_a_server_that_never_answers_times_out() -> None:
    # Accepts connections (the kernel's backlog) but never answers.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks"
        store = ConfigStore()
        put(store, policy(uri, timeout="200ms"))
        fetcher = JwksFetcher(store)
        try:
            await asyncio.wait_for(fetcher.first_round(), timeout=5)
        finally:
            await fetcher.close()
        found = key_set(store, uri)
        assert found is not None and found.error == "no answer within 0.2s"
    finally:
        silent.close()


async def test_link_local_and_metadata_addresses_are_never_fetched() -> None:
    uri = "http://169.254.169.254/latest/meta-data/jwks"
    store = ConfigStore()
    put(store, policy(uri))
    fetcher = JwksFetcher(store)
    try:
        await fetcher.first_round()
    finally:
        await fetcher.close()
    found = key_set(store, uri)
    assert found is not None and "link-local" in found.error
    assert blocked_address("fe80::1") and blocked_address("100.100.100.200")
    assert blocked_address("::ffff:169.254.1.1")
    assert blocked_address("127.0.0.1") is None and blocked_address("10.0.0.1") is None


async def test_a_uri_no_policy_names_any_more_is_dropped(
    server: Any, running: Callable[..., JwksFetcher]
) -> None:
    a, b = server(jwks(SigningKey("ES256"))), server(jwks(SigningKey("ES256")))
    store = ConfigStore()
    put(store, policy(a.url, "a"), policy(b.url, "b"))
    running(store, refresh_interval=60)
    await until(lambda: key_set(store, a.url) and key_set(store, b.url))
    put(store, policy(b.url, "b"))
    await until(lambda: key_set(store, a.url) is None)
    assert key_set(store, b.url) is not None
