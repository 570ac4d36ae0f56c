"""Manifest text read as Kubernetes reads it: plain scalars typed as sigs.k8s.io/yaml types them,
with line numbers kept for errors."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.kinds import parse_object
from istiolite.model.serviceentry import ServiceEntry
from istiolite.sources import yaml_documents
from istiolite.sources.yaml_documents import ManifestSyntaxError, read_objects

# Istio's own valid ServiceEntry test data writes an IPv6 address this way.
SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: full
  namespace: default
spec:
  hosts: ["example.com"]
  addresses: [1.2.3.4, 001:db8::]
  ports:
    - name: foo
      protocol: HTTP
      number: 1234
  resolution: DNS
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: bad}]
"""


def test_ipv6_address_in_a_flow_list_reads_and_keeps_the_other_objects() -> None:
    entry, service = read_objects(SERVICE_ENTRY)
    assert entry.raw["spec"]["addresses"] == ["1.2.3.4", "001:db8::"]
    _, model = parse_object(entry.raw)
    assert isinstance(model, ServiceEntry)
    assert model.addresses == ("1.2.3.4", "1:db8::")
    # Line numbers still come from the text as written.
    assert (entry.line, service.line) == (1, 15)
    assert entry.line_of("spec.addresses") == 8
    assert service.line_of("spec.ports[0].port") == 19


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("[a::, b:]", ["a::", "b:"]),
        ("{k: v:}", {"k": "v:"}),
        ("12:30", "12:30"),  # YAML 1.1: the integer 750
        ("1:20:30", "1:20:30"),
        ("190:20:30.15", "190:20:30.15"),
        ("2024-01-01", "2024-01-01"),  # YAML 1.1: a date
        ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
        ("=", "="),  # YAML 1.1: a `value` tag PyYAML cannot construct
        ("0o17", 15),
        ("017", 15),
        ("0x1F", 31),
        ("1_000", 1000),
        ("1e3", 1000.0),
        ("1.5E+2", 150.0),
        ("-.5", -0.5),
        (".inf", float("inf")),
        ("true", True),
        ("on", True),  # as sigs.k8s.io/yaml (YAML 1.1 booleans)
        ("~", None),
        ("'12:30'", "12:30"),
    ],
)
def test_plain_scalars_are_typed_as_kubernetes_types_them(text: str, value: Any) -> None:
    (obj,) = read_objects(f"kind: X\nvalue: {text}\n")
    assert obj.raw["value"] == value
    assert type(obj.raw["value"]) is type(value)


def test_flow_colon_text_still_reports_syntax_errors_with_their_line() -> None:
    with pytest.raises(ManifestSyntaxError) as err:
        read_objects("kind: X\nspec:\n  a: [1:, 2\n  b: c\n")
    assert err.value.line is not None and err.value.line >= 3


def test_block_value_ending_in_colon_is_still_refused() -> None:
    # `a: 001:db8::` at the end of a line is a mapping indicator for kubectl too.
    with pytest.raises(ManifestSyntaxError) as err:
        read_objects("kind: X\naddress: 001:db8::\n")
    assert err.value.line == 2


def test_the_slower_reading_is_bounded_in_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only text libyaml refuses for such a `:` is read by the pure-Python loader (~10x slower),
    and only up to MAX_FLOW_COLON_BYTES: past it, the error says where the `:` is."""
    text = "kind: X\naddresses: [1.2.3.4, 001:db8::]\n"
    monkeypatch.setattr(yaml_documents, "MAX_FLOW_COLON_BYTES", len(text) - 1)
    with pytest.raises(ManifestSyntaxError) as err:
        read_objects(text)
    assert err.value.line == 2 and "':'" in err.value.message
    monkeypatch.setattr(yaml_documents, "MAX_FLOW_COLON_BYTES", len(text))
    assert read_objects(text)[0].raw["addresses"] == ["1.2.3.4", "001:db8::"]
