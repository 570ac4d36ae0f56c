"""`istiolite iptables`: with the injector's arguments it writes exactly the rules the e2e tests
prove with real iptables, Envoy and traffic (tests/support/netns.istio_iptables_rules), and the
envoy flavour's init container passes those arguments."""

from __future__ import annotations

import pytest

from istiolite import cli
from istiolite.webhooks.sidecar_template import InjectionConfig, iptables_init
from tests.support.netns import istio_iptables_rules

INJECTOR_ARGS = iptables_init(InjectionConfig(flavor="envoy"))["args"]


def _dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main([*args, "--dry-run"]) == 0
    return capsys.readouterr().out


def test_the_envoy_flavour_runs_this_command() -> None:
    config = InjectionConfig(flavor="envoy", istiolite_image="istiolite:dev")
    assert iptables_init(config)["image"] == "istiolite:dev"
    assert INJECTOR_ARGS[0] == "iptables"


def test_the_injectors_arguments_give_istio_inits_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert _dry_run(capsys, *INJECTOR_ARGS) == istio_iptables_rules()


def test_ranges_and_ports_narrow_the_capture(capsys: pytest.CaptureFixture[str]) -> None:
    out = _dry_run(
        capsys, "iptables", "-i", "10.96.0.0/12", "-x", "10.96.0.10/32", "-b", "8080,9090"
    )
    lines = out.splitlines()
    assert "-A ISTIO_OUTPUT -d 10.96.0.10/32 -j RETURN" in lines
    assert "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT" in lines
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" not in lines
    assert lines.index("-A ISTIO_OUTPUT -d 10.96.0.10/32 -j RETURN") < lines.index(
        "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT"
    )
    assert "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT" in lines
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" not in lines


def test_no_inbound_ports_means_no_inbound_capture(capsys: pytest.CaptureFixture[str]) -> None:
    out = _dry_run(capsys, "iptables", "-b", "")
    assert "PREROUTING" not in out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-p", "http"], "-p: 'http' is not a port"),
        (["-x", "10.0.0.300/8"], "-x: '10.0.0.300/8' is not an IP range"),
        (["-m", "TPROXY"], "-m: 'TPROXY': only REDIRECT"),
        (["-d", "15090,x"], "-d: 'x' is not a port"),
    ],
)
def test_bad_values_name_the_flag(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    assert cli.main(["iptables", *args, "--dry-run"]) == 2
    assert named in capsys.readouterr().err
