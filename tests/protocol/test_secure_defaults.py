"""Secure defaults of the real server (finding 7): key material crosses the plaintext xDS port
only with `--dev-plaintext-sds`, and then only the Secrets the proxy's own config references;
the /debug/* pages answer loopback clients only unless `--debug-on-http` says otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.discovery.v3 import ads_pb2_grpc

from istiolite import type_urls
from istiolite.server import Istiolite
from istiolite.settings import Settings
from tests.protocol.harness import XdsClient, make_node, resources
from tests.support.certs import CertificateAuthority, tls_secret
from tests.support.netns import Netns, unavailable_reason
from tests.unit.networking.test_credentials import https_gateway

GW_NS = "istio-system"
ROUTER_ID = f"router~10.1.0.200~ingress-1.{GW_NS}~{GW_NS}.svc.cluster.local"
SIDECAR_ID = f"sidecar~10.1.0.9~claims-1.{GW_NS}~{GW_NS}.svc.cluster.local"
WANTED = ["kubernetes://hello-cert", "kubernetes://unreferenced-cert"]

Started = Callable[..., Awaitable[Istiolite]]


def _write_config(tmp_path: Path) -> Path:
    """A config with a Gateway naming `hello-cert` and a second TLS Secret of the same namespace
    that nothing names."""
    config = tmp_path / "config"
    config.mkdir()
    pair = CertificateAuthority("secure defaults CA").issue("hello.example.com")
    raws = [
        https_gateway("hello-cert"),
        tls_secret("hello-cert", GW_NS, pair),
        tls_secret("unreferenced-cert", GW_NS, pair),
    ]
    (config / "gateway.yaml").write_text(yaml.safe_dump_all(raws))
    return config


@contextlib.asynccontextmanager
async def _running(
    config: Path, http_host: str = "127.0.0.1", **options: Any
) -> AsyncIterator[Istiolite]:
    settings = Settings(
        config_dirs=[config],
        grpc_addr="127.0.0.1:0",
        http_addr=f"{http_host}:0",
        monitoring_addr="127.0.0.1:0",
        debounce_quiet=0.02,
        **options,
    )
    app = Istiolite(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not app.http_port:
            assert not task.done(), task
            assert loop.time() < deadline, "istiolite did not start"
            await asyncio.sleep(0.01)
        yield app
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Started]:
    """Starts istiolite (on loopback) on `_write_config`'s config; stops it afterwards."""
    config = _write_config(tmp_path)
    async with contextlib.AsyncExitStack() as stack:

        async def run(**options: Any) -> Istiolite:
            return await stack.enter_async_context(_running(config, **options))

        yield run


# An address inside the test's own network namespace: a peer that is not loopback.
POD_ADDRESS = "10.203.0.5"


@pytest.fixture
def pod_namespace() -> Iterator[Netns]:
    """A namespace this test owns with POD_ADDRESS on an interface of its own: istiolite runs
    inside it, bound to that address, and the client connects from it (a non-loopback peer)
    without touching the host's network."""
    reason = unavailable_reason()
    if reason:
        pytest.fail(f"network-namespace set-up unavailable: {reason}")
    namespace = Netns.unique("debug-peer").create()
    try:
        # Both ends of a veth pair inside (container kernels often lack the dummy driver).
        namespace.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        namespace.ip("addr", "add", f"{POD_ADDRESS}/24", "dev", "eth0")
        namespace.ip("link", "set", "eth0", "up")
        namespace.ip("link", "set", "eth1", "up")
        yield namespace
    finally:
        namespace.delete()


def _statuses_in(
    namespace: Netns, config: Path, pages: list[str], **options: Any
) -> dict[str, tuple[int, str]]:
    """Runs istiolite inside `namespace` on POD_ADDRESS and GETs `pages` from POD_ADDRESS."""

    async def scenario() -> dict[str, tuple[int, str]]:
        async with _running(config, http_host=POD_ADDRESS, **options) as app:
            return {page: await _status(POD_ADDRESS, app.http_port, page) for page in pages}

    return namespace.call(lambda: asyncio.run(scenario()), timeout=60)


async def _secrets(app: Istiolite, node_id: str, labels: dict[str, str]) -> dict[str, Any]:
    """Every Secret a loopback ADS client asking for WANTED receives."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        client = XdsClient(
            stub, delta=False, node=make_node(node_id, namespace=GW_NS, labels=labels)
        )
        try:
            client.request(type_urls.SECRET, WANTED)
            got: dict[str, Any] = {}
            for response in await client.collect(quiet=0.5):
                if response.type_url == type_urls.SECRET:
                    got.update(resources(response))
            return got
        finally:
            await client.aclose()


INGRESS = {"istio": "ingressgateway"}


async def test_without_the_dev_flag_a_loopback_gateway_gets_no_key(start: Started) -> None:
    app = await start()
    assert await _secrets(app, ROUTER_ID, INGRESS) == {}


async def test_with_the_dev_flag_a_gateway_gets_only_what_its_gateway_names(
    start: Started,
) -> None:
    app = await start(dev_plaintext_sds=True)
    got = await _secrets(app, ROUTER_ID, INGRESS)
    assert set(got) == {"kubernetes://hello-cert"}, "the unreferenced Secret must never appear"
    assert b"PRIVATE KEY" in got["kubernetes://hello-cert"].tls_certificate.private_key.inline_bytes


async def test_with_the_dev_flag_a_sidecar_claiming_the_namespace_gets_nothing(
    start: Started,
) -> None:
    app = await start(dev_plaintext_sds=True)
    assert await _secrets(app, SIDECAR_ID, {"app": "claims"}) == {}


# -- debug pages -------------------------------------------------------------------------------


def _get(host: str, port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def _status(host: str, port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, host, port, path)


async def test_debug_pages_answer_loopback_by_default(start: Started) -> None:
    app = await start()
    status, body = await _status("127.0.0.1", app.http_port, "/debug/syncz")
    assert status == 200, body


def test_debug_pages_are_refused_to_a_non_loopback_peer(
    pod_namespace: Netns, tmp_path: Path
) -> None:
    got = _statuses_in(
        pod_namespace, _write_config(tmp_path), ["/ready", "/version", "/debug/configz"]
    )
    for page in ("/ready", "/version"):  # the kubelet probes the pod IP
        assert got[page][0] == 200, page
    status, body = got["/debug/configz"]
    assert status == 403
    assert "loopback clients only" in body and POD_ADDRESS in body
    assert body.count("\n") == 1, "a one-line reason"


def test_debug_on_http_true_serves_every_peer(pod_namespace: Netns, tmp_path: Path) -> None:
    got = _statuses_in(
        pod_namespace, _write_config(tmp_path), ["/debug/configz"], debug_on_http="true"
    )
    assert got["/debug/configz"][0] == 200, got


async def test_debug_on_http_false_serves_no_debug_page(start: Started) -> None:
    app = await start(debug_on_http="false")
    for page in ("/debug/syncz", "/debug/configz", "/debug/registryz", "/debug/config_dump"):
        status, _ = await _status("127.0.0.1", app.http_port, page)
        assert status == 404, page
    status, _ = await _status("127.0.0.1", app.http_port, "/ready")
    assert status == 200
