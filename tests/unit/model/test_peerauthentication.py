"""PeerAuthentication: parsing with named errors, and istiod's precedence between levels."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.kinds import parse_object
from istiolite.model.peerauthentication import MtlsMode, PeerAuthentication
from istiolite.model.validation import ValidationError
from tests.support.objects import context


def policy(
    name: str, namespace: str, mode: str | None = None, *, selector: Any = None, ports: Any = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports is not None:
        spec["portLevelMtls"] = ports
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


SELECTOR = {"matchLabels": {"a": "b"}}


def test_parses_v1_and_v1beta1() -> None:
    for version in ("v1", "v1beta1"):
        raw = policy("strict", "shop", "STRICT", selector={"app": "web"}, ports={8080: None})
        raw["apiVersion"] = f"security.istio.io/{version}"
        raw["spec"]["portLevelMtls"] = {"8080": {"mode": "DISABLE"}}
        _, parsed = parse_object(raw)
        assert isinstance(parsed, PeerAuthentication)
        assert parsed.mode == MtlsMode.STRICT
        assert parsed.port_modes == {8080: MtlsMode.DISABLE}


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"mtls": {"mode": "STRICTER"}}, "spec.mtls.mode", "is not one of UNSET"),
        ({"portLevelMtls": {"8080": {"mode": "STRICT"}}}, "spec.portLevelMtls", "selector"),
        (
            {
                "selector": {"matchLabels": {"a": "b"}},
                "portLevelMtls": {"http": {"mode": "STRICT"}},
            },
            "spec.portLevelMtls.http",
            "not a port number",
        ),
        (
            {
                "selector": {"matchLabels": {"a": "b"}},
                "portLevelMtls": {"70000": {"mode": "STRICT"}},
            },
            "spec.portLevelMtls.70000",
            "",
        ),
        ({"mtls": {"mod": "STRICT"}}, "spec.mtls.mod", "unknown field"),
    ],
)
def test_bad_input_is_a_named_error(spec: dict[str, Any], field: str, says: str) -> None:
    raw = policy("bad", "shop")
    raw["spec"] = spec
    with pytest.raises(ValidationError) as caught:
        parse_object(raw)
    assert caught.value.field == field
    assert says in str(caught.value)


WEB = {"app": "web"}


def mode_of(*raws: dict[str, Any], labels: dict[str, str] = WEB, port: int = 8080) -> MtlsMode:
    return context(*raws).effective_mtls("shop", labels).for_port(port)


def test_nothing_applies_means_permissive() -> None:
    assert mode_of() == MtlsMode.PERMISSIVE


def test_workload_beats_namespace_beats_mesh() -> None:
    mesh = policy("default", "istio-system", "STRICT")
    namespace = policy("default", "shop", "DISABLE")
    workload = policy("web", "shop", "PERMISSIVE", selector=WEB)
    assert mode_of(mesh) == MtlsMode.STRICT
    assert mode_of(mesh, namespace) == MtlsMode.DISABLE
    assert mode_of(mesh, namespace, workload) == MtlsMode.PERMISSIVE
    assert mode_of(mesh, namespace, workload, labels={"app": "other"}) == MtlsMode.DISABLE
    # Another namespace's policies never apply.
    assert mode_of(policy("default", "bank", "STRICT")) == MtlsMode.PERMISSIVE


def test_unset_inherits_and_port_level_overrides_within_the_workload_policy() -> None:
    mesh = policy("default", "istio-system", "STRICT")
    workload = policy(
        "web", "shop", None, selector=WEB, ports={"9090": {"mode": "DISABLE"}, "9091": {}}
    )
    assert mode_of(mesh, workload) == MtlsMode.STRICT  # UNSET: the mesh's
    assert mode_of(mesh, workload, port=9090) == MtlsMode.DISABLE
    assert mode_of(mesh, workload, port=9091) == MtlsMode.STRICT  # port UNSET: the workload's


def test_a_selector_in_the_root_namespace_is_not_a_workload_policy() -> None:
    assert mode_of(policy("web", "istio-system", "STRICT", selector=WEB)) == MtlsMode.PERMISSIVE


def test_the_oldest_of_a_level_wins() -> None:
    # Files carry no creation time: namespace/name order stands in for it.
    first = policy("a", "shop", "STRICT")
    second = policy("b", "shop", "DISABLE")
    assert mode_of(second, first) == MtlsMode.STRICT


def test_namespace_mode_is_the_auto_mtls_hint() -> None:
    ctx = context(policy("default", "istio-system", "DISABLE"), policy("default", "shop"))
    assert ctx.namespace_mtls_mode("shop") == MtlsMode.DISABLE  # UNSET inherits the mesh's
    assert ctx.namespace_mtls_mode("bank") == MtlsMode.DISABLE
    assert context().namespace_mtls_mode("shop") == MtlsMode.UNSET
