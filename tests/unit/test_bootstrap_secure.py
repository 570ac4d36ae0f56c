"""`istiolite bootstrap --token-file --xds-root-cert`: ADS over TLS to the secure port, the
service-account token from a file on every call; real Envoy accepts the result. (That Envoy
really verifies the server and re-reads a rotated token: see
tests/integration/test_secure_bootstrap.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from istiolite import bootstrap
from tests.support.certs import CertificateAuthority
from tests.unit.test_bootstrap import SIDECAR_ID, envoy_validate, run_cli, write

FILE_METADATA = "envoy.grpc_credentials.file_based_metadata"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root-cert.pem"
    root.write_bytes(CertificateAuthority("bootstrap test root").cert_pem)
    token = tmp_path / "token"
    token.write_text("a-token")
    return root, token


def _google_grpc(doc: dict[str, Any]) -> dict[str, Any]:
    (service,) = doc["dynamic_resources"]["ads_config"]["grpc_services"]
    assert "envoy_grpc" not in service
    google: dict[str, Any] = service["google_grpc"]
    return google


def test_secure_ads_verifies_istiod_and_sends_the_token(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    root, token = files
    doc = write(
        tmp_path,
        [
            "--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15012", "--delta",
            "--token-file", str(token), "--xds-root-cert", str(root),
        ],
    )  # fmt: skip
    google = _google_grpc(doc)
    assert google["target_uri"] == "127.0.0.1:15012"
    assert google["channel_credentials"]["ssl_credentials"]["root_certs"] == {"filename": str(root)}
    assert google["channel_args"]["args"]["grpc.ssl_target_name_override"] == {
        "string_value": "istiod.istio-system.svc"
    }
    assert google["credentials_factory_name"] == FILE_METADATA
    (plugin,) = google["call_credentials"]
    config = plugin["from_plugin"]["typed_config"]
    assert plugin["from_plugin"]["name"] == FILE_METADATA
    assert config["secret_data"] == {"filename": str(token)}  # a file: read on every call
    assert config["header_key"] == "authorization"
    assert config["header_prefix"] == "Bearer "
    assert "a-token" not in str(doc), "the token itself is never written into the bootstrap"
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_relative_paths_become_absolute(
    tmp_path: Path, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, token = files
    monkeypatch.chdir(tmp_path)
    doc = bootstrap.build_bootstrap(
        node_id=SIDECAR_ID,
        xds_address="istiod.istio-system.svc:15012",
        token_file=token.name,
        xds_root_cert=root.name,
        xds_server_name="istiolite.mesh.example",
    )
    google = _google_grpc(doc)
    assert google["target_uri"] == "istiod.istio-system.svc:15012"
    assert google["channel_credentials"]["ssl_credentials"]["root_certs"]["filename"] == str(root)
    args = google["channel_args"]["args"]
    assert args["grpc.ssl_target_name_override"]["string_value"] == "istiolite.mesh.example"


def test_ipv6_target(files: tuple[Path, Path]) -> None:
    root, _ = files
    doc = bootstrap.build_bootstrap(
        node_id=SIDECAR_ID, xds_address="[::1]:15012", xds_root_cert=str(root)
    )
    google = _google_grpc(doc)
    assert google["target_uri"] == "[::1]:15012"
    assert "call_credentials" not in google  # TLS alone: the server decides what that is worth


def test_without_the_flags_the_bootstrap_is_plaintext_as_before(tmp_path: Path) -> None:
    doc = write(tmp_path, ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15010"])
    (service,) = doc["dynamic_resources"]["ads_config"]["grpc_services"]
    assert service == {"envoy_grpc": {"cluster_name": "xds-grpc"}}


@pytest.mark.envoy
@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_validates_the_secure_bootstrap(
    tmp_path: Path, files: tuple[Path, Path], delta: bool
) -> None:
    root, token = files
    argv = [
        "--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15012",
        "--token-file", str(token), "--xds-root-cert", str(root),
        "--meta", "SERVICE_ACCOUNT=web",
    ]  # fmt: skip
    write(tmp_path, [*argv, *(["--delta"] if delta else [])])
    result = envoy_validate(tmp_path / "envoy.json")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("extra", "flag", "says"),
    [
        pytest.param(["--token-file", "{token}"], "--token-file", "only over TLS", id="no-root"),
        pytest.param(
            ["--token-file", "{missing}", "--xds-root-cert", "{root}"],
            "--token-file",
            "No such file",
            id="token-missing",
        ),
        pytest.param(
            ["--xds-root-cert", "{missing}"], "--xds-root-cert", "No such file", id="root-missing"
        ),
        pytest.param(
            ["--xds-root-cert", "{token}"], "--xds-root-cert", "no PEM certificate", id="not-pem"
        ),
        pytest.param(
            ["--xds-root-cert", "{dir}"], "--xds-root-cert", "directory", id="root-is-a-dir"
        ),
        pytest.param(
            ["--xds-root-cert", "{root}", "--xds-server-name", "10.0.0.1"],
            "--xds-server-name",
            "not a DNS name",
            id="server-name-ip",
        ),
        pytest.param(
            ["--xds-root-cert", "{root}", "--xds-server-name", "bad name"],
            "--xds-server-name",
            "not a DNS name",
            id="server-name-bad",
        ),
    ],
)
def test_bad_secure_flags_exit_2_naming_the_flag(
    tmp_path: Path,
    files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    flag: str,
    says: str,
) -> None:
    root, token = files
    paths = {"token": token, "root": root, "missing": tmp_path / "nope", "dir": tmp_path}
    out = tmp_path / "envoy.json"
    argv = ["--node-id", SIDECAR_ID, "--xds-address", "127.0.0.1:15012", "-o", str(out)]
    argv += [a.format(**paths) for a in extra]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"istiolite bootstrap: {flag}: "), err
    assert says in err
    assert not out.exists()
