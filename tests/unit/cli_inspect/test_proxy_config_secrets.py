"""`istiolite proxy-config secrets` shows a proxy's workload certificate (serial, SAN, validity)
and ROOTCA from what istiolite serves that stream, and never its key: the key is redacted in
/debug/config_dump, which the command reads."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from istiolite import cli, type_urls
from istiolite.cli_inspect import proxy_config
from istiolite.debug import pages
from istiolite.xds.ads import Connection
from istiolite.xds.protocol import SotwStream
from istiolite.xds.stream_secrets import PortPolicy, StreamSecrets
from istiolite.xds.workload_certs import WorkloadCerts
from tests.protocol.harness import make_node
from tests.support.workload_ca import SimpleCA
from tests.unit.cli_inspect.conftest import Served
from tests.unit.debug import state

NODE_ID = "sidecar~10.0.0.7~web-1.shop~shop.svc.cluster.local"


async def _connect_with_certificate(served: Served, ca: SimpleCA) -> WorkloadCerts:
    """A loopback stream in the development mode that asked for default and ROOTCA."""
    app = served.app
    certs = WorkloadCerts(ca)
    conn_id = "conn-secrets-1"
    secrets = StreamSecrets(
        peer="ipv4:127.0.0.1:40001",
        policy=PortPolicy(None, dev_plaintext_sds=True),
        authenticated=None,
        certs=certs,
        shared=app.generator,
        key=conn_id,
        on_change=lambda: None,
    )
    stream = SotwStream(secrets.generate)
    request = discovery_pb2.DiscoveryRequest(
        node=make_node(NODE_ID, namespace="shop", service_account="web"),
        type_url=type_urls.SECRET,
        resource_names=["default", "ROOTCA"],
    )
    secrets.identify(stream.identify(request))
    await secrets.prepare(request)
    responses = stream.on_request(request, app.ads.context)
    assert responses and responses[0].names == ("ROOTCA", "default")
    conn = Connection(id=conn_id, peer=secrets.peer, delta=False, stream=stream, secrets=secrets)
    app.ads.connections[conn.id] = conn
    return certs


async def _run(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_the_table_shows_the_chain_and_rootca_never_the_key(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = SimpleCA()
    certs = await _connect_with_certificate(served, ca)
    issued = certs.certificate(certs.identities()[0])
    assert issued is not None
    capsys.readouterr()  # the log lines of the issue
    assert await _run("proxy-config", "secrets", "web-1.shop", "--istiolite", served.url) == 0
    out = capsys.readouterr().out
    lines = out[out.index("RESOURCE NAME") :].splitlines()
    assert "SAN" in lines[0] and "SERIAL NUMBER" in lines[0]
    default = next(line for line in lines if line.startswith("default"))
    assert format(issued.serial, "x") in default
    assert "spiffe://cluster.local/ns/shop/sa/web" in default
    assert any(line.startswith("ROOTCA") and "CA" in line for line in lines)
    _assert_no_key(out, issued.key_pem)
    for output in ("json", "yaml"):
        assert (
            await _run("proxy-config", "secrets", NODE_ID, "--istiolite", served.url, "-o", output)
            == 0
        )
        text = capsys.readouterr().out
        assert "[redacted]" in text and "certificate_chain" in text and "ROOTCA" in text
        _assert_no_key(text, issued.key_pem)
    await certs.close()


async def test_the_config_dump_redacts_the_workload_key(served: Served) -> None:
    ca = SimpleCA()
    certs = await _connect_with_certificate(served, ca)
    issued = certs.certificate(certs.identities()[0])
    assert issued is not None
    status = state.status(served.app)
    conn = pages.find_connection(status, NODE_ID)
    assert conn is not None
    body = pages.config_dump_response(pages.proxy_config_dump(status, conn)).body.decode()
    secrets = proxy_config.extract(json.loads(body), "secrets")
    assert [s["name"] for s in secrets] == ["ROOTCA", "default"]
    default = secrets[1]["tls_certificate"]
    assert default["private_key"] == {"inline_string": "[redacted]"}
    _assert_no_key(body, issued.key_pem)
    await certs.close()


def _assert_no_key(text: str, key_pem: bytes) -> None:
    body = b"".join(line for line in key_pem.splitlines() if not line.startswith(b"-----"))
    assert key_pem.decode() not in text
    assert "PRIVATE KEY" not in text
    assert body.decode() not in text.replace("\\n", "").replace("\n", "")
    assert base64.b64encode(key_pem).decode() not in text
