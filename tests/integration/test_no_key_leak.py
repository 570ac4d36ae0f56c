"""No private key leaves istiolite except inside the SDS response to its own proxy: a real
server (its gRPC, HTTP and monitoring ports, debug logging on) serves a proxy its `default`,
and then its logs, every debug page, CSDS, `istiolite proxy-config` in every output format and
/metrics are searched for the key in PEM, for the key's base64 body, and for the base64 of the
whole PEM (as protobuf JSON would render bytes)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import json_format

from istiolite import cli, type_urls
from istiolite.logs import configure_logging
from istiolite.server import Istiolite
from istiolite.settings import Settings
from istiolite.xds.workload_certs import WorkloadCerts
from tests.protocol.harness import XdsClient, make_node, resources
from tests.support import mesh
from tests.support import objects as obj
from tests.support.workload_ca import SimpleCA

NODE_ID = "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local"
DEBUG_PAGES = [
    "/debug/syncz",
    "/debug/configz",
    "/debug/registryz",
    "/debug/push_status",
    f"/debug/config_dump?proxyID={NODE_ID}",
]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Istiolite]:
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(config / "web.yaml", obj.service("web", "shop"))
    settings = Settings(
        config_dirs=[config],
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        monitoring_addr="127.0.0.1:0",
        debounce_quiet=0.02,
        dev_plaintext_sds=True,  # loopback: the development mode serves key material here
        log_level="debug",
    )
    server = Istiolite(settings)
    server.ads.workload_certs = WorkloadCerts(SimpleCA())
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not server.http_port:
        assert not task.done(), task
        assert loop.time() < deadline, "istiolite did not start"
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await server.ads.workload_certs.close()


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return str(reply.read().decode())


async def _cli(*argv: str) -> str:
    def run() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(list(argv)) == 0
        return out.getvalue()

    return await asyncio.to_thread(run)


def _forms(key_pem: bytes) -> list[str]:
    body = b"".join(line for line in key_pem.splitlines() if not line.startswith(b"-----"))
    return [
        key_pem.decode(),
        body.decode(),  # the base64 DER, as one line
        body.decode()[:40],  # a fragment of it (a line of the PEM)
        base64.b64encode(key_pem).decode(),  # bytes fields in protobuf JSON
        base64.b64encode(key_pem).decode()[:40],
        "PRIVATE KEY",
    ]


async def test_the_key_is_nowhere_but_in_its_proxys_sds_response(
    app: Istiolite, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    saved = structlog.get_config()
    configure_logging("json", "debug")  # every line istiolite logs goes to the captured stderr
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            client = XdsClient(
                ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel),
                delta=True,
                node=make_node(NODE_ID, namespace="shop", service_account="web"),
            )
            try:
                await client.fetch(type_urls.CLUSTER)
                got = resources(await client.fetch(type_urls.SECRET, ["default", "ROOTCA"]))
                key_pem = got["default"].tls_certificate.private_key.inline_bytes
                assert b"PRIVATE KEY" in key_pem, "the proxy itself does get its key"

                texts: dict[str, str] = {}
                for page in DEBUG_PAGES:
                    texts[page] = await asyncio.to_thread(_get, app.http_port, page)
                assert "default" in texts[DEBUG_PAGES[-1]], "the dump does show the secret"
                texts["/metrics"] = await asyncio.to_thread(_get, app.monitoring_port, "/metrics")
                csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
                status = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
                texts["CSDS"] = json_format.MessageToJson(status) + str(status)
                url = f"http://127.0.0.1:{app.http_port}"
                for output in ("table", "json", "yaml"):
                    texts[f"proxy-config secrets -o {output}"] = await _cli(
                        "proxy-config", "secrets", NODE_ID, "--istiolite", url, "-o", output
                    )
                texts["proxy-status"] = await _cli("proxy-status", "--istiolite", url)
                assert "[redacted]" in texts["proxy-config secrets -o json"]
            finally:
                await client.aclose()
    finally:
        structlog.configure(**saved)
    captured = capsys.readouterr()
    texts["logs"] = captured.err + captured.out
    assert "workload certificate issued" in texts["logs"], "the logs were captured"
    for where, text in texts.items():
        for form in _forms(key_pem):
            assert form not in text, f"{where} shows the private key ({form[:20]}...)"
    print(
        f"searched {len(texts)} outputs, {sum(map(len, texts.values()))} characters",
        file=sys.stderr,
    )
