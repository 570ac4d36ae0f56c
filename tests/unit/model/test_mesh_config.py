"""The mesh config file's fields: those istiolite honours parsed and checked, bad values named
by field, Istio's other fields noted as not applied, unknown fields named."""

from __future__ import annotations

import pytest

from istiolite.model.mesh_config import MeshConfig, parse_mesh_config
from istiolite.model.validation import ValidationError

ISTIOD_DEFAULTS = """\
trustDomain: example.org
rootNamespace: istio-system
enableAutoMtls: true
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  proxyMetadata:
    ISTIO_DELTA_XDS: "true"
outboundTrafficPolicy:
  mode: REGISTRY_ONLY
accessLogFile: /dev/stdout
"""


def test_the_fields_istiolite_honours() -> None:
    parsed = parse_mesh_config(ISTIOD_DEFAULTS)
    assert parsed.config == MeshConfig(
        trust_domain="example.org",
        outbound_mode="REGISTRY_ONLY",
        discovery_address="istiod.istio-system.svc:15012",
        root_namespace="istio-system",
        enable_auto_mtls=True,
    )
    assert parsed.notes == ("accessLogFile: accepted, not applied by istiolite",)


@pytest.mark.parametrize("text", ["", "{}", "# only a comment\n"])
def test_an_empty_file_is_istios_defaults(text: str) -> None:
    parsed = parse_mesh_config(text)
    assert parsed.config == MeshConfig()
    assert parsed.config.outbound_mode == "ALLOW_ANY"
    assert parsed.notes == ()


def test_unknown_and_unapplied_fields_are_named() -> None:
    parsed = parse_mesh_config(
        "outboundTraficPolicy: {mode: REGISTRY_ONLY}\n"
        "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress}}\n"
        "enableAutoMtls: false\n"
    )
    assert parsed.config.outbound_mode == "ALLOW_ANY"
    assert parsed.notes == (
        "outboundTraficPolicy: unknown field, ignored",
        "outboundTrafficPolicy.egressProxy: not applied by istiolite",
        "enableAutoMtls: false is not applied, istiolite always uses auto mTLS",
    )


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("outboundTrafficPolicy: {mode: DENY}", "outboundTrafficPolicy.mode", "'DENY'"),
        ("outboundTrafficPolicy: REGISTRY_ONLY", "outboundTrafficPolicy", "mapping"),
        ("trustDomain: Example/Org", "trustDomain", "not a trust domain"),
        ("trustDomain: 7", "trustDomain", "string"),
        (
            "defaultConfig: {discoveryAddress: istiod}",
            "defaultConfig.discoveryAddress",
            "HOST:PORT",
        ),
        ("rootNamespace: mesh-root", "rootNamespace", "istio-system"),
        ("enableAutoMtls: 'yes'", "enableAutoMtls", "true or false"),
        ("- a list", "mesh", "mapping"),
        ("trustDomain: [unclosed", "mesh", "line 1"),
    ],
)
def test_bad_values_are_named(text: str, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_mesh_config(text)
    assert err.value.field == field
    assert words in str(err.value)


def test_an_oversized_file_is_refused() -> None:
    with pytest.raises(ValidationError, match="larger than"):
        parse_mesh_config("accessLogFile: " + "x" * (1024 * 1024))
