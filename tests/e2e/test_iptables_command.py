"""`istiolite iptables` inside a pod's network namespace, as the envoy flavour's init container
runs it: the nat table then holds istio-init's rules, loaded by the real iptables."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from istiolite.webhooks.sidecar_template import InjectionConfig, iptables_init
from tests.support.netns import Netns, unavailable_reason

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def pod_netns() -> Iterator[Netns]:
    reason = unavailable_reason()
    if reason:
        pytest.fail(f"e2e set-up unavailable: {reason} (deselect with -m 'not e2e')")
    ns = Netns.unique("iptables-cmd").create()
    try:
        yield ns
    finally:
        ns.delete()


def test_the_init_containers_command_loads_istio_inits_rules(pod_netns: Netns) -> None:
    args = iptables_init(InjectionConfig(flavor="envoy"))["args"]
    out = pod_netns.run(sys.executable, "-m", "istiolite.cli", *args)
    assert "rules loaded with iptables" in out
    saved = ""
    for tool in ("iptables-save", "iptables-legacy-save"):
        saved = pod_netns.run(tool, "-t", "nat")
        if "ISTIO_OUTPUT" in saved:
            break
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in saved
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in saved
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in saved
    assert "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN" in saved
