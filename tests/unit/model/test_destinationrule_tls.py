"""DestinationRule `trafficPolicy.tls`: parsing, istiod's validation rules (each failure names its
field), merging across subsets and port-level settings, and ISTIO_MUTUAL reported as unapplied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from istiolite.cli import main
from istiolite.model.destinationrule import ClientTls, parse_destination_rule
from istiolite.model.validation import ValidationError

WHERE = "spec.trafficPolicy.tls"


def rule(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"host": "db", **spec},
    }


def tls_of(tls: dict[str, Any]) -> ClientTls | None:
    policy = parse_destination_rule(rule({"trafficPolicy": {"tls": tls}})).traffic_policy
    assert policy is not None
    return policy.tls


def test_parses_every_field() -> None:
    assert tls_of(
        {
            "mode": "MUTUAL",
            "clientCertificate": "/etc/certs/client.pem",
            "privateKey": "/etc/certs/client.key",
            "caCertificates": "/etc/certs/ca.pem",
            "caCrl": "/etc/certs/ca.crl",
            "subjectAltNames": ["db.example.com", "spiffe://example/db"],
            "sni": "db.example.com",
        }
    ) == ClientTls(
        mode="MUTUAL",
        client_certificate="/etc/certs/client.pem",
        private_key="/etc/certs/client.key",
        ca_certificates="/etc/certs/ca.pem",
        ca_crl="/etc/certs/ca.crl",
        subject_alt_names=("db.example.com", "spiffe://example/db"),
        sni="db.example.com",
    )


def test_defaults_and_accepted_combinations() -> None:
    assert tls_of({}) == ClientTls(mode="DISABLE")
    assert tls_of({"mode": "SIMPLE"}) == ClientTls(mode="SIMPLE")
    assert tls_of({"mode": "SIMPLE", "insecureSkipVerify": True}) == ClientTls(
        mode="SIMPLE", insecure_skip_verify=True
    )
    # credentialName stands in for the files (MUTUAL needs no clientCertificate then) ...
    assert tls_of({"mode": "MUTUAL", "credentialName": "db-client"}) == ClientTls(
        mode="MUTUAL", credential_name="db-client"
    )
    # ... and may go with insecureSkipVerify in MUTUAL (the secret's key and cert are still used).
    found = tls_of({"mode": "MUTUAL", "credentialName": "c", "insecureSkipVerify": True})
    assert found is not None and found.insecure_skip_verify
    # ISTIO_MUTUAL takes SNI and SANs (istiod uses them), and DISABLE ignores whatever else is set.
    assert tls_of({"mode": "ISTIO_MUTUAL", "sni": "x", "subjectAltNames": ["spiffe://a/b"]})
    assert tls_of({"mode": "DISABLE", "caCertificates": "/ca.pem"}) == ClientTls(
        mode="DISABLE", ca_certificates="/ca.pem"
    )


@pytest.mark.parametrize(
    ("tls", "field"),
    [
        ({"mode": "STRICT"}, "mode"),
        ({"mode": "simple"}, "mode"),
        ({"mode": "SIMPLE", "verify": True}, "verify"),
        ({"mode": "MUTUAL", "privateKey": "/k.pem"}, "clientCertificate"),
        ({"mode": "MUTUAL", "clientCertificate": "/c.pem"}, "privateKey"),
        ({"mode": "SIMPLE", "credentialName": "cred", "caCertificates": "/ca"}, "caCertificates"),
        ({"mode": "SIMPLE", "credentialName": "cred", "caCrl": "/crl"}, "caCrl"),
        (
            {
                "mode": "MUTUAL",
                "credentialName": "c",
                "clientCertificate": "/c",
                "privateKey": "/k",
            },
            "clientCertificate",
        ),
        ({"mode": "MUTUAL", "credentialName": "cred", "privateKey": "/k"}, "privateKey"),
        ({"mode": "SIMPLE", "insecureSkipVerify": True, "caCertificates": "/ca"}, "caCertificates"),
        ({"mode": "SIMPLE", "insecureSkipVerify": True, "credentialName": "c"}, "credentialName"),
        (
            {"mode": "SIMPLE", "insecureSkipVerify": True, "subjectAltNames": ["a"]},
            "subjectAltNames",
        ),
        (
            {
                "mode": "MUTUAL",
                "insecureSkipVerify": True,
                "clientCertificate": "/c",
                "privateKey": "/k",
                "caCertificates": "/ca",
            },
            "caCertificates",
        ),
        ({"mode": "ISTIO_MUTUAL", "clientCertificate": "/c"}, "clientCertificate"),
        ({"mode": "ISTIO_MUTUAL", "privateKey": "/k"}, "privateKey"),
        ({"mode": "ISTIO_MUTUAL", "caCertificates": "/ca"}, "caCertificates"),
        ({"mode": "ISTIO_MUTUAL", "credentialName": "c"}, "credentialName"),
        ({"mode": "SIMPLE", "insecureSkipVerify": "yes"}, "insecureSkipVerify"),
        ({"mode": "SIMPLE", "insecureSkipVerify": {"value": True}}, "insecureSkipVerify"),
        ({"mode": "SIMPLE", "sni": 443}, "sni"),
        ({"mode": "SIMPLE", "subjectAltNames": "a.example"}, "subjectAltNames"),
        ({"mode": "SIMPLE", "subjectAltNames": ["a", 7]}, "subjectAltNames[1]"),
        ({"mode": "SIMPLE", "subjectAltNames": ["a", ""]}, "subjectAltNames[1]"),
        ({"mode": "SIMPLE", "caCertificates": ["/ca"]}, "caCertificates"),
    ],
)
def test_invalid_settings_name_the_field(tls: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        tls_of(tls)
    assert err.value.field == f"{WHERE}.{field}", str(err.value)


def test_tls_that_is_not_a_mapping() -> None:
    with pytest.raises(ValidationError) as err:
        tls_of("SIMPLE")  # type: ignore[arg-type]
    assert err.value.field == WHERE


def test_errors_at_port_and_subset_level_name_their_path() -> None:
    port = {"portLevelSettings": [{"port": {"number": 5432}, "tls": {"mode": "MUTUAL"}}]}
    with pytest.raises(ValidationError) as err:
        parse_destination_rule(rule({"trafficPolicy": port}))
    assert err.value.field == "spec.trafficPolicy.portLevelSettings[0].tls.clientCertificate"
    subset = {"name": "v1", "labels": {"v": "1"}, "trafficPolicy": {"tls": {"mode": "BOTH"}}}
    with pytest.raises(ValidationError) as err:
        parse_destination_rule(rule({"subsets": [subset]}))
    assert err.value.field == "spec.subsets[0].trafficPolicy.tls.mode"


def test_key_material_never_appears_in_errors_or_reprs() -> None:
    secret = "-----BEGIN PRIVATE KEY-----MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
    for tls in (
        {"mode": "SIMPLE", "credentialName": "cred", "privateKey": secret},
        {"mode": "ISTIO_MUTUAL", "privateKey": secret},
        {"mode": "MUTUAL", "clientCertificate": "/c", "privateKey": {"inline": secret}},
        {"mode": "MUTUAL", "clientCertificate": "/c", "privateKey": [secret]},
    ):
        with pytest.raises(ValidationError) as err:
            tls_of(tls)
        assert "BEGIN" not in str(err.value) and "MIGH" not in str(err.value)
    parsed = tls_of({"mode": "MUTUAL", "clientCertificate": "/c", "privateKey": secret})
    assert "BEGIN" not in repr(parsed) and "private_key='<set>'" in repr(parsed)


MERGE: dict[str, Any] = {
    "trafficPolicy": {
        "tls": {"mode": "SIMPLE", "caCertificates": "/ca.pem", "sni": "top"},
        "portLevelSettings": [
            {"port": {"number": 8443}, "tls": {"mode": "SIMPLE", "sni": "port"}},
            {"port": {"number": 9000}, "loadBalancer": {"simple": "RANDOM"}},
        ],
    },
    "subsets": [
        {"name": "plain", "labels": {"v": "0"}},
        {
            "name": "v1",
            "labels": {"v": "1"},
            "trafficPolicy": {
                "tls": {"mode": "DISABLE"},
                "portLevelSettings": [
                    {
                        "port": {"number": 7000},
                        "tls": {
                            "mode": "MUTUAL",
                            "clientCertificate": "/c.pem",
                            "privateKey": "/k.pem",
                        },
                    }
                ],
            },
        },
        {
            "name": "v2",
            "labels": {"v": "2"},
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
        },
    ],
}


def sni(subset: str, port: int) -> str | None:
    policy = parse_destination_rule(rule(MERGE)).policy_for(subset, port)
    if policy is None or policy.tls is None:
        return None
    return policy.tls.sni if policy.tls.mode != "DISABLE" else "DISABLE"


def test_merge_as_istio() -> None:
    assert sni("", 80) == "top"
    # A port-level tls replaces the whole tls (nothing inherited: no CA from the top level) ...
    port = parse_destination_rule(rule(MERGE)).policy_for("", 8443)
    assert port is not None and port.tls == ClientTls(mode="SIMPLE", sni="port")
    # ... and a port-level entry without tls means no tls for that port.
    assert sni("", 9000) is None
    # Subsets: their own tls wins; without one they inherit the (port-resolved) top level.
    assert sni("plain", 80) == "top"
    assert sni("v2", 80) == "top"
    assert sni("v2", 8443) == "port"
    assert sni("v1", 80) == "DISABLE"
    assert sni("v1", 8443) == "DISABLE"
    v1_port = parse_destination_rule(rule(MERGE)).policy_for("v1", 7000)
    assert v1_port is not None and v1_port.tls is not None and v1_port.tls.mode == "MUTUAL"


def test_istio_mutual_is_applied_so_not_listed_as_unapplied() -> None:
    dr = parse_destination_rule(
        rule(
            {
                "trafficPolicy": {
                    "tls": {"mode": "ISTIO_MUTUAL"},
                    "portLevelSettings": [
                        {"port": {"number": 80}, "tls": {"mode": "SIMPLE"}},
                        {"port": {"number": 81}, "tls": {"mode": "ISTIO_MUTUAL"}},
                    ],
                },
                "subsets": [
                    {"name": "a", "labels": {"v": "a"}},
                    {
                        "name": "b",
                        "labels": {"v": "b"},
                        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL", "sni": "b"}},
                    },
                ],
            }
        )
    )
    assert dr.unapplied() == []
    assert (
        parse_destination_rule(rule({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}})).unapplied()
        == []
    )


def test_validate_accepts_istio_mutual_without_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: db, namespace: shop}\n"
        "spec:\n  host: db\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n"
    )
    assert main(["validate", str(path)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_validate_rejects_mutual_without_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: db, namespace: shop}\n"
        "spec:\n  host: db\n  trafficPolicy:\n"
        "    tls: {mode: MUTUAL, clientCertificate: /c.pem}\n"
    )
    assert main(["validate", str(path)]) == 1
    assert "spec.trafficPolicy.tls.privateKey: is required" in capsys.readouterr().err
