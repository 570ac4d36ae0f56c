"""`istiolite proxy-config` over a real Istiolite's /debug/config_dump, served over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from istiolite import cli
from istiolite.cli_inspect import proxy_config
from istiolite.debug import pages
from tests.support.net import free_port
from tests.unit.cli_inspect.conftest import Served
from tests.unit.debug import state
from tests.unit.debug.state import DETAILS, NODE_ID, REVIEWS


def _dump(served: Served) -> dict[str, Any]:
    conn = pages.find_connection(state.status(served.app), NODE_ID)
    assert conn is not None
    response = pages.config_dump_response(pages.proxy_config_dump(state.status(served.app), conn))
    return json.loads(response.body)


async def _run(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


def test_extract_takes_the_resources_out_of_their_sections(served: Served) -> None:
    state.synced(served.app)
    dump = _dump(served)
    clusters = proxy_config.extract(dump, "clusters")
    assert [c["name"] for c in clusters] == [
        "BlackHoleCluster",
        "InboundPassthroughCluster",
        "PassthroughCluster",
        REVIEWS,  # outbound|9080|... sorts before outbound|9081|...
        DETAILS,
    ]
    assert all("@type" not in c for c in clusters)
    assert [e["cluster_name"] for e in proxy_config.extract(dump, "endpoints")] == [
        REVIEWS,
        DETAILS,
    ]
    assert [r["name"] for r in proxy_config.extract(dump, "routes")] == ["9080", "9081"]
    assert "virtualOutbound" in [x["name"] for x in proxy_config.extract(dump, "listeners")]
    assert proxy_config.extract(dump, "secrets") == []


def test_cluster_table(served: Served) -> None:
    state.synced(served.app)
    rows = proxy_config.cluster_rows(proxy_config.extract(_dump(served), "clusters"))
    assert rows == [
        ["BlackHoleCluster", "-", "-", "-", "STATIC"],
        ["InboundPassthroughCluster", "-", "-", "-", "ORIGINAL_DST"],
        ["PassthroughCluster", "-", "-", "-", "ORIGINAL_DST"],
        ["details.default.svc.cluster.local", "9081", "-", "outbound", "EDS"],
        ["reviews.default.svc.cluster.local", "9080", "-", "outbound", "EDS"],
    ]
    assert proxy_config.cluster_parts("inbound|8080||") == ("", "8080", "-", "inbound")
    assert proxy_config.cluster_parts("outbound|80|v1|a.b.svc.cluster.local") == (
        "a.b.svc.cluster.local",
        "80",
        "v1",
        "outbound",
    )


def test_listener_table_has_a_row_per_filter_chain(served: Served) -> None:
    state.synced(served.app)
    rows = proxy_config.listener_rows(proxy_config.extract(_dump(served), "listeners"))
    assert ["0.0.0.0_9080", "0.0.0.0", "9080", "ALL", "Route: 9080"] in rows
    assert [
        "virtualOutbound",
        "0.0.0.0",
        "15001",
        "Addr: *:15001",
        "Cluster: BlackHoleCluster",
    ] in rows
    assert ["virtualOutbound", "0.0.0.0", "15001", "ALL", "Cluster: PassthroughCluster"] in rows
    assert [
        "virtualInbound", "0.0.0.0", "15006", "DEFAULT", "Cluster: InboundPassthroughCluster",
    ] in rows  # fmt: skip


def test_chain_match_summaries() -> None:
    assert proxy_config.chain_match(None) == "ALL"
    assert (
        proxy_config.chain_match(
            {
                "destination_port": 8080,
                "application_protocols": ["http/1.1", "h2c"],
                "transport_protocol": "raw_buffer",
            }
        )
        == "Trans: raw_buffer; App: http/1.1,h2c; Addr: *:8080"
    )
    assert (
        proxy_config.chain_match(
            {
                "server_names": ["a.example"],
                "prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}],
            }
        )
        == "SNI: a.example; Addr: 10.0.0.0/8:*"
    )


def test_route_table(served: Served) -> None:
    state.synced(served.app)
    rows = proxy_config.route_rows(proxy_config.extract(_dump(served), "routes"))
    assert [
        "9080",
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc.cluster.local + 9 more...",
        "/*",
        "-",
    ] in rows
    assert {r[0] for r in rows} == {"9080", "9081"}
    assert proxy_config.route_match({"path": "/exact"}) == "/exact"
    assert proxy_config.route_match({"prefix": "/api/"}) == "/api/*"
    assert proxy_config.route_match({"safe_regex": {"regex": "/v[0-9]+"}}) == "/v[0-9]+"
    istio_route = {
        "metadata": {
            "filter_metadata": {
                "istio": {
                    "config": "/apis/networking.istio.io/v1/namespaces/shop/virtual-service/cart"
                }
            }
        }
    }
    assert proxy_config.virtual_service(istio_route) == "cart.shop"


def test_endpoint_table(served: Served) -> None:
    state.synced(served.app)
    rows = proxy_config.endpoint_rows(proxy_config.extract(_dump(served), "endpoints"))
    assert rows == [["10.1.0.1:8080", "HEALTHY", REVIEWS]]


def _certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0xABC123)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_secret_table_reads_the_certificates() -> None:
    pem = _certificate()
    secrets = [
        {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"inline_string": pem},
                "private_key": {"inline_string": "[redacted]"},
            },
        },
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": pem}}},
    ]
    rows = proxy_config.secret_rows(secrets)
    assert [r[:5] for r in rows] == [
        ["default", "Cert Chain", "ACTIVE", "true", "abc123"],
        ["ROOTCA", "CA", "ACTIVE", "true", "abc123"],
    ]
    assert rows[0][5] > rows[0][6]  # NOT AFTER later than NOT BEFORE


def _args(**values: Any) -> argparse.Namespace:
    defaults = {
        "fqdn": None, "port": None, "subset": None, "direction": None,
        "address": None, "name": None, "cluster": None,
    }  # fmt: skip
    return argparse.Namespace(**{**defaults, **values})


def test_filters(served: Served) -> None:
    state.synced(served.app)
    dump = _dump(served)

    def names(kind: str, **values: Any) -> list[str]:
        chosen = proxy_config.select(kind, proxy_config.extract(dump, kind), _args(**values))
        return [r.get("name") or r.get("cluster_name") for r in chosen]

    assert names("clusters", fqdn="reviews") == [REVIEWS]
    assert names("clusters", port=9081) == [DETAILS]
    assert names("clusters", direction="outbound") == [REVIEWS, DETAILS]
    assert names("listeners", port=15006) == ["virtualInbound"]
    assert names("routes", name="9081") == ["9081"]
    assert names("endpoints", cluster=REVIEWS) == [REVIEWS]


@pytest.mark.parametrize("output", ["json", "yaml"])
async def test_json_and_yaml_are_the_resources(
    served: Served, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state.synced(served.app)
    for kind in ("clusters", "listeners", "routes", "endpoints", "secrets"):
        argv = ["proxy-config", kind, "app-1.default", "--istiolite", served.url, "-o", output]
        code = await _run(*argv)
        out = capsys.readouterr().out
        assert code == 0
        parsed = json.loads(out) if output == "json" else yaml.safe_load(out)
        assert parsed == proxy_config.extract(_dump(served), kind)


async def test_table_output_and_empty_secrets(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    state.synced(served.app)
    assert await _run("proxy-config", "clusters", NODE_ID, "--istiolite", served.url) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]
    assert out[-1].split() == ["reviews.default.svc.cluster.local", "9080", "-", "outbound", "EDS"]
    assert await _run("proxy-config", "secrets", "app-1.default", "--istiolite", served.url) == 0
    captured = capsys.readouterr()
    assert captured.out.split()[:2] == ["RESOURCE", "NAME"]
    assert len(captured.out.splitlines()) == 1
    assert "no secrets for app-1.default" in captured.err


async def test_unknown_proxy_and_unreachable_istiolite_exit_1(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    state.synced(served.app)
    assert await _run("proxy-config", "routes", "ghost.default", "--istiolite", served.url) == 1
    err = capsys.readouterr().err
    assert "proxy 'ghost.default' is not connected" in err and "HTTP 404" in err
    address = f"127.0.0.1:{free_port()}"
    assert await _run("proxy-config", "routes", "app-1.default", "--istiolite", address) == 1
    assert "cannot reach istiolite" in capsys.readouterr().err
