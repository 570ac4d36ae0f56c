"""Secure defaults of the real server (finding 7): key material crosses the plaintext xDS port
only with `--dev-plaintext-sds`, and then only the Secrets the proxy's own config references;
the /debug/* pages answer loopback clients only unless `--debug-on-http` says otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
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
from tests.unit.networking.test_credentials import https_gateway

GW_NS = "istio-system"
ROUTER_ID = f"router~10.1.0.200~ingress-1.{GW_NS}~{GW_NS}.svc.cluster.local"
SIDECAR_ID = f"sidecar~10.1.0.9~claims-1.{GW_NS}~{GW_NS}.svc.cluster.local"
WANTED = ["kubernetes://hello-cert", "kubernetes://unreferenced-cert"]

Started = Callable[..., Awaitable[Istiolite]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Started]:
    """Starts istiolite on a config with a Gateway naming `hello-cert` and a second TLS Secret
    of the same namespace that nothing names; stops it afterwards."""
    config = tmp_path / "config"
    config.mkdir()
    pair = CertificateAuthority("secure defaults CA").issue("hello.example.com")
    raws = [
        https_gateway("hello-cert"),
        tls_secret("hello-cert", GW_NS, pair),
        tls_secret("unreferenced-cert", GW_NS, pair),
    ]
    (config / "gateway.yaml").write_text(yaml.safe_dump_all(raws))
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def run(http_host: str = "127.0.0.1", **options: Any) -> Istiolite:
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
        running.append((stop, task))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not app.http_port:
            assert not task.done(), task
            assert loop.time() < deadline, "istiolite did not start"
            await asyncio.sleep(0.01)
        return app

    try:
        yield run
    finally:
        for stop, task in running:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


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


def _non_loopback_address() -> str | None:
    """An address of this host that is not loopback (a connection to it from here has it as its
    source address too), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent for a UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_debug_pages_answer_loopback_by_default(start: Started) -> None:
    app = await start()
    status, body = await _status("127.0.0.1", app.http_port, "/debug/syncz")
    assert status == 200, body


async def test_debug_pages_are_refused_to_a_non_loopback_peer(start: Started) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    app = await start(http_host=address)
    for page in ("/ready", "/version"):  # the kubelet probes the pod IP
        status, _ = await _status(address, app.http_port, page)
        assert status == 200, page
    status, body = await _status(address, app.http_port, "/debug/configz")
    assert status == 403
    assert "loopback clients only" in body and address in body
    assert body.count("\n") == 1, "a one-line reason"


async def test_debug_on_http_true_serves_every_peer(start: Started) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    app = await start(http_host=address, debug_on_http="true")
    status, body = await _status(address, app.http_port, "/debug/configz")
    assert status == 200, body


async def test_debug_on_http_false_serves_no_debug_page(start: Started) -> None:
    app = await start(debug_on_http="false")
    for page in ("/debug/syncz", "/debug/configz", "/debug/registryz", "/debug/config_dump"):
        status, _ = await _status("127.0.0.1", app.http_port, page)
        assert status == 404, page
    status, _ = await _status("127.0.0.1", app.http_port, "/ready")
    assert status == 200
