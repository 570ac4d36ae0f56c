"""`istiolite proxy-status` against the debug pages of a real Istiolite served over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from istiolite import cli
from istiolite.cli_inspect import proxy_status
from istiolite.debug import pages
from tests.support.net import free_port
from tests.unit.cli_inspect.conftest import Served
from tests.unit.debug import state
from tests.unit.debug.state import CDS, EDS, LDS, OTHER_NODE_ID, REVIEWS


def _columns(line: str) -> list[str]:
    return line.split()


async def test_table_shows_synced_and_rejected_proxies(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    state.synced(served.app)
    bad = state.connect(served.app, OTHER_NODE_ID, delta=True)
    bad.subscribe(CDS)
    bad.ack(CDS)
    bad.subscribe(EDS, [REVIEWS])
    bad.subscribe(LDS)
    rejected = bad.state(LDS).version_sent
    bad.nack(LDS, "Error adding/updating listener(s) 0.0.0.0_9080: bad filter")
    code = await asyncio.to_thread(cli.main, ["proxy-status", "--istiolite", served.url])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert _columns(lines[0]) == [
        "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION",
    ]  # fmt: skip
    instance = pages.instance_name()
    assert _columns(lines[1]) == [
        "app-1.default", "-", "SYNCED", "SYNCED", "SYNCED", "SYNCED", instance, "-",
    ]  # fmt: skip
    assert _columns(lines[2]) == [
        "web-1.shop", "-", "SYNCED", "ERROR", "STALE", "IGNORED", instance, "-",
    ]  # fmt: skip
    assert (
        f"web-1.shop LDS rejected version {rejected}: "
        "Error adding/updating listener(s) 0.0.0.0_9080: bad filter"
    ) in out


def test_not_sent_is_spelled_as_istioctl_does() -> None:
    syncz = [
        {
            "name": "a.default",
            "cluster_id": "Kubernetes",
            "istio_version": "1.22.0",
            "istiod": "istiolite-0",
            "types": {"CDS": {"status": "NOT_SENT", "nack": None}},
        }
    ]
    [row] = proxy_status.rows(syncz)
    assert row == [
        "a.default", "Kubernetes", "NOT SENT", "IGNORED", "IGNORED", "IGNORED",
        "istiolite-0", "1.22.0",
    ]  # fmt: skip
    assert proxy_status.errors(syncz) == []


def test_empty_mesh_prints_only_the_header() -> None:
    assert proxy_status.format_status([]).split() == list(proxy_status.HEADERS)


def test_unreachable_istiolite_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert cli.main(["proxy-status", "--istiolite", address]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach istiolite at http://{address}" in err
    assert "ISTIOLITE_ADDR" in err


async def test_address_comes_from_the_environment(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTIOLITE_ADDR", served.url.removeprefix("http://"))
    state.synced(served.app)
    assert await asyncio.to_thread(cli.main, ["proxy-status"]) == 0
    assert "app-1.default" in capsys.readouterr().out


async def test_a_wrong_address_is_reported(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(cli.main, ["proxy-status", "--istiolite", served.url + "/x"])
    assert code == 1
    err = capsys.readouterr().err
    assert "no such page: /x/debug/syncz" in err and "HTTP 404" in err
