"""WorkloadEntries as endpoints, as istiod treats them: selected by Kubernetes Services of their
namespace (cross-registry selection, port mapped through the targetPort or the entry's named
ports) and by ServiceEntries; their health, weight and labels; which pushes their changes need.
Also the ServiceEntry fields the generators read: every address, subjectAltNames."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite import type_urls
from istiolite.model.kinds import parse_object
from istiolite.model.validation import ValidationError
from istiolite.model.workloadentry import HEALTH_CHECKS_ANNOTATION, WorkloadEntry
from istiolite.networking.generator import generate
from istiolite.push.context import Locality, PushContext
from tests.support.objects import (
    context,
    endpoint,
    endpoint_slice,
    hostname,
    outbound_cluster,
    parse,
    pod,
    service,
    service_port,
)
from tests.support.pushes import push_for, sidecar_proxy
from tests.unit.networking.helpers import endpoint_addresses, load_assignments, sidecar

Raw = dict[str, Any]


def workload_entry(
    name: str,
    address: str,
    labels: dict[str, str] | None = None,
    *,
    namespace: str = "default",
    ports: dict[str, int] | None = None,
    **spec: Any,
) -> Raw:
    body: Raw = {"address": address, "labels": labels if labels is not None else {"app": "web"}}
    if ports:
        body["ports"] = ports
    body.update(spec)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def service_entry(name: str, namespace: str = "default", **spec: Any) -> Raw:
    body: Raw = {
        "hosts": [f"{name}.example.com"],
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "STATIC",
    }
    body.update(spec)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def destination_rule(host: str, subsets: dict[str, dict[str, str]]) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "host": host,
            "subsets": [{"name": n, "labels": labels} for n, labels in subsets.items()],
        },
    }


def web_with_pod(**svc: Any) -> list[Raw]:
    """Service web (port 80 -> 8080) with one ready Pod endpoint 10.0.0.1."""
    svc.setdefault("ports", [service_port("http", 80, target_port=8080)])
    return [
        service("web", **svc),
        pod("web-0", ip="10.0.0.1", labels={"app": "web", "version": "v1"}),
        endpoint_slice(
            "web",
            endpoints=[endpoint("10.0.0.1", pod="web-0")],
            ports=[("http", 8080)],
        ),
    ]


def addresses(ctx: PushContext, name: str = "web", labels: dict[str, str] | None = None) -> list:
    svc = ctx.services_by_host[hostname(name)]
    return [(e.address, e.port) for e in ctx.endpoints(svc, svc.ports[0], labels)]


def parse_we(raw: Raw) -> WorkloadEntry:
    _, obj = parse_object(raw)
    return obj


# --- WorkloadEntry parsing ----------------------------------------------------------------------


def test_metadata_labels_join_spec_labels_and_win() -> None:
    raw = workload_entry("vm", "10.1.0.1", {"app": "web", "version": "v1"})
    raw["metadata"]["labels"] = {"version": "v2", "team": "a"}
    assert parse_we(raw).labels == {"app": "web", "version": "v2", "team": "a"}


def test_weight_zero_or_unset_is_one_and_negative_is_rejected() -> None:
    assert parse_we(workload_entry("vm", "10.1.0.1")).weight == 1
    assert parse_we(workload_entry("vm", "10.1.0.1", weight=0)).weight == 1
    assert parse_we(workload_entry("vm", "10.1.0.1", weight=7)).weight == 7
    with pytest.raises(ValidationError) as err:
        parse_we(workload_entry("vm", "10.1.0.1", weight=-1))
    assert err.value.field == "spec.weight"


@pytest.mark.parametrize(
    ("address", "ports", "field"),
    [
        ("not an address!", None, "spec.address"),
        ("unix://relative", None, "spec.address"),
        ("unix:///tmp/sock/", None, "spec.address"),
        ("unix:///tmp/sock", {"http": 80}, "spec.address"),
        ("10.1.0.1", {"@": 80}, "spec.ports.@"),
        ("10.1.0.1", {"http": 99999}, "spec.ports.http"),
    ],
)
def test_invalid_addresses_and_ports_are_rejected(
    address: str, ports: dict[str, int] | None, field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        parse_we(workload_entry("vm", address, ports=ports))
    assert err.value.field == field


@pytest.mark.parametrize("address", ["vm-1.example.com", "unix:///var/run/app.sock", "unix://@x"])
def test_hostnames_and_unix_sockets_are_valid_addresses(address: str) -> None:
    entry = parse_we(workload_entry("vm", address))
    assert entry.address == address and not entry.is_ip


def test_health_counts_only_with_the_health_checks_annotation() -> None:
    raw = workload_entry("vm", "10.1.0.1")
    assert parse_we(raw).healthy  # no annotation: always healthy
    raw["metadata"]["annotations"] = {HEALTH_CHECKS_ANNOTATION: "true"}
    assert not parse_we(raw).healthy  # not proven healthy yet
    raw["status"] = {"conditions": [{"type": "Healthy", "status": "True"}]}
    assert parse_we(raw).healthy
    raw["status"] = {"conditions": [{"type": "Healthy", "status": "False"}]}
    assert not parse_we(raw).healthy


# --- Kubernetes Services selecting WorkloadEntries ------------------------------------------------


def test_service_selector_adds_workload_entries_of_its_namespace() -> None:
    ctx = context(
        *web_with_pod(),
        workload_entry("vm-a", "10.1.0.1"),
        workload_entry("vm-other-app", "10.1.0.2", {"app": "api"}),
        workload_entry("vm-no-labels", "10.1.0.3", {}),
        workload_entry("vm-elsewhere", "10.1.0.4", namespace="other"),
        workload_entry("vm-dns", "vm.example.com"),
    )
    assert addresses(ctx) == [("10.0.0.1", 8080), ("10.1.0.1", 8080)]


def test_endpoint_carries_the_entry_weight_locality_labels_and_identity() -> None:
    ctx = context(
        *web_with_pod(),
        workload_entry(
            "vm-a",
            "10.1.0.1",
            {"app": "web", "version": "v2"},
            weight=5,
            locality="eu/eu-1a/rack-1",
            serviceAccount="vm-sa",
        ),
    )
    svc = ctx.services_by_host[hostname("web")]
    ep = next(e for e in ctx.endpoints(svc, svc.ports[0]) if e.address == "10.1.0.1")
    assert ep.weight == 5
    assert ep.locality == Locality("eu", "eu-1a", "rack-1")
    assert ep.labels == {"app": "web", "version": "v2"}
    assert ep.service_account == "vm-sa"
    assert ep.workload_entry == "default/vm-a" and ep.pod == ""
    pod_ep = next(e for e in ctx.endpoints(svc, svc.ports[0]) if e.address == "10.0.0.1")
    assert pod_ep.weight == 1 and pod_ep.workload_entry == ""


def test_entry_port_named_like_the_service_port_beats_the_numeric_target_port() -> None:
    ctx = context(*web_with_pod(), workload_entry("vm-a", "10.1.0.1", ports={"http": 9090}))
    assert addresses(ctx) == [("10.0.0.1", 8080), ("10.1.0.1", 9090)]


def test_named_target_port_is_looked_up_in_the_entry_ports() -> None:
    ctx = context(
        *web_with_pod(ports=[service_port("http", 80, target_port="web-port")]),
        workload_entry("vm-a", "10.1.0.1", ports={"web-port": 7070}),
        workload_entry("vm-b", "10.1.0.2", ports={"http": 9090}),  # no web-port: left out
    )
    assert addresses(ctx) == [("10.0.0.1", 8080), ("10.1.0.1", 7070)]


def test_unset_target_port_is_the_service_port() -> None:
    raw_port = {"name": "http", "port": 80}
    ctx = context(service("web", ports=[raw_port]), workload_entry("vm-a", "10.1.0.1"))
    assert addresses(ctx) == [("10.1.0.1", 80)]


@pytest.mark.parametrize(
    "svc",
    [
        {"selector": {}},  # selects nothing, as istiod (labels.Match of an empty selector)
        {"cluster_ip": "None"},  # headless: clients dial pods directly
    ],
    ids=["no-selector", "headless"],
)
def test_services_that_take_no_workload_entries(svc: dict[str, Any]) -> None:
    ctx = context(service("web", **svc), workload_entry("vm-a", "10.1.0.1"))
    assert addresses(ctx) == []


def test_unhealthy_entry_is_left_out() -> None:
    sick = workload_entry("vm-sick", "10.1.0.2")
    sick["metadata"]["annotations"] = {HEALTH_CHECKS_ANNOTATION: "true"}
    sick["status"] = {"conditions": [{"type": "Healthy", "status": "False"}]}
    ctx = context(*web_with_pod(), workload_entry("vm-a", "10.1.0.1"), sick)
    assert addresses(ctx) == [("10.0.0.1", 8080), ("10.1.0.1", 8080)]


def test_destination_rule_subsets_select_entries_by_their_labels() -> None:
    ctx = context(
        *web_with_pod(),
        workload_entry("vm-v2", "10.1.0.1", {"app": "web", "version": "v2"}),
        destination_rule("web", {"v1": {"version": "v1"}, "v2": {"version": "v2"}}),
    )
    assert addresses(ctx, labels={"version": "v1"}) == [("10.0.0.1", 8080)]
    assert addresses(ctx, labels={"version": "v2"}) == [("10.1.0.1", 8080)]
    cla = load_assignments(ctx, sidecar())
    host = hostname("web")
    assert endpoint_addresses(cla[f"outbound|80|v2|{host}"]) == [("10.1.0.1", 8080)]
    assert endpoint_addresses(cla[outbound_cluster("web", 80)]) == [
        ("10.0.0.1", 8080),
        ("10.1.0.1", 8080),
    ]


def test_workload_entry_services_lists_who_selects_an_entry() -> None:
    ctx = context(
        service("web"),
        service("web-all", selector={"tier": "front"}),
        service("api"),
        service_entry("legacy", workloadSelector={"labels": {"app": "web"}}),
    )
    entry = parse_we(workload_entry("vm", "10.1.0.1", {"app": "web", "tier": "front"}))
    found = sorted(ctx.hostname(s) for s in ctx.workload_entry_services(entry))
    assert found == sorted(["legacy.example.com", hostname("web"), hostname("web-all")])


# --- ServiceEntries selecting WorkloadEntries ---------------------------------------------------


def test_service_entry_endpoints_carry_weight_and_identity() -> None:
    ctx = context(
        service_entry(
            "legacy",
            endpoints=[{"address": "10.2.0.1", "weight": 3, "serviceAccount": "legacy"}],
        )
    )
    svc = ctx.services_by_host["legacy.example.com"]
    [ep] = ctx.endpoints(svc, svc.ports[0])
    assert (ep.address, ep.port, ep.weight, ep.service_account) == ("10.2.0.1", 80, 3, "legacy")


def test_empty_workload_selector_selects_nothing() -> None:
    ctx = context(service_entry("legacy", workloadSelector={}), workload_entry("vm", "10.1.0.1"))
    svc = ctx.services_by_host["legacy.example.com"]
    assert ctx.endpoints(svc, svc.ports[0]) == []


def test_hostname_entries_join_dns_service_entries_only() -> None:
    ctx = context(
        service_entry("static", workloadSelector={"labels": {"app": "web"}}),
        service_entry("dns", resolution="DNS", workloadSelector={"labels": {"app": "web"}}),
        workload_entry("vm-ip", "10.1.0.1", weight=2),
        workload_entry("vm-name", "vm.example.com"),
    )
    static = ctx.services_by_host["static.example.com"]
    dns = ctx.services_by_host["dns.example.com"]
    assert [e.address for e in ctx.endpoints(static, static.ports[0])] == ["10.1.0.1"]
    assert [e.address for e in ctx.endpoints(dns, dns.ports[0])] == ["10.1.0.1", "vm.example.com"]
    assert ctx.endpoints(static, static.ports[0])[0].weight == 2


# --- ServiceEntry addresses and subjectAltNames -------------------------------------------------


def test_every_address_is_exposed_and_the_first_is_the_cluster_ip() -> None:
    given = ["240.0.0.1", "240.0.0.2/32", "10.8.0.0/16"]
    ctx = context(service_entry("multi", resolution="NONE", addresses=given))
    svc = ctx.services_by_host["multi.example.com"]
    assert svc.addresses == ("240.0.0.1", "240.0.0.2", "10.8.0.0/16")
    assert svc.cluster_ip == "240.0.0.1"


def test_single_address_entry_is_unchanged() -> None:
    ctx = context(service_entry("one", resolution="NONE", addresses=["240.0.0.9"]))
    svc = ctx.services_by_host["one.example.com"]
    assert (svc.cluster_ip, svc.addresses) == ("240.0.0.9", ("240.0.0.9",))


def test_cidr_addresses_need_resolution_none_or_static() -> None:
    with pytest.raises(ValidationError) as err:
        parse(service_entry("dns", resolution="DNS", addresses=["10.8.0.0/16"]))
    assert "CIDR" in err.value.message
    parse(service_entry("none", resolution="NONE", addresses=["10.8.0.0/16"]))


def test_subject_alt_names_reach_every_host_service() -> None:
    ctx = context(
        service_entry(
            "tls",
            resolution="DNS",
            hosts=["a.example.com", "b.example.com"],
            subjectAltNames=["spiffe://cluster.local/ns/default/sa/backend", "b.example.com"],
        )
    )
    for host in ("a.example.com", "b.example.com"):
        assert ctx.services_by_host[host].subject_alt_names == (
            "spiffe://cluster.local/ns/default/sa/backend",
            "b.example.com",
        )


@pytest.mark.parametrize(
    ("value", "field"),
    [("just-a-string", "spec.subjectAltNames"), ([""], "spec.subjectAltNames[0]")],
)
def test_invalid_subject_alt_names_are_rejected(value: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse(service_entry("tls", resolution="DNS", subjectAltNames=value))
    assert err.value.field == field


def test_endpoint_ports_must_be_ports_of_the_entry() -> None:
    with pytest.raises(ValidationError) as err:
        parse(service_entry("legacy", endpoints=[{"address": "10.2.0.1", "ports": {"grpc": 1}}]))
    assert err.value.field == "spec.endpoints[0].ports.grpc"


# --- which push a WorkloadEntry change needs ------------------------------------------------------


def _push_kind(before: list[Raw], after: list[Raw]) -> frozenset[str] | None:
    """The EDS clusters an endpoint-only push sends; None: a full push."""
    request = push_for(before, after)
    return None if request.full else request.eds_clusters


def test_workload_entry_change_of_a_kubernetes_service_is_eds_only() -> None:
    base = web_with_pod()
    assert _push_kind(base, [*base, workload_entry("vm", "10.1.0.1")]) == frozenset(
        {outbound_cluster("web", 80)}
    )


def test_relabelled_entry_pushes_the_clusters_it_left_and_joined() -> None:
    base = [service("web"), service("api")]
    before = [*base, workload_entry("vm", "10.1.0.1", {"app": "web"})]
    after = [*base, workload_entry("vm", "10.1.0.1", {"app": "api"})]
    assert _push_kind(before, after) == frozenset(
        {outbound_cluster("web", 80), outbound_cluster("api", 80)}
    )


def test_workload_entry_of_a_static_service_entry_is_eds_only() -> None:
    entry = service_entry("legacy", workloadSelector={"labels": {"app": "web"}})
    assert _push_kind([entry], [entry, workload_entry("vm", "10.1.0.1")]) == frozenset(
        {"outbound|80||legacy.example.com"}
    )


TCP_PORT = [{"number": 5432, "name": "tcp-db", "protocol": "TCP"}]


@pytest.mark.parametrize(
    "selecting",
    [
        service_entry("dns", resolution="DNS", workloadSelector={"labels": {"app": "web"}}),
        service_entry(
            "none", resolution="NONE", ports=TCP_PORT, workloadSelector={"labels": {"app": "web"}}
        ),
    ],
    ids=["dns-entry", "none-entry-tcp"],
)
def test_entries_that_shape_clusters_or_listeners_need_a_full_push(selecting: Raw) -> None:
    # A TCP port of an entry with resolution NONE gets a listener per endpoint; DNS clusters
    # carry their endpoints.
    assert _push_kind([selecting], [selecting, workload_entry("vm", "10.1.0.1")]) is None


def test_endpoints_of_a_headless_tcp_service_need_a_full_push() -> None:
    # Clients dial pod IPs directly: a listener per endpoint catches them.
    web = service("web", cluster_ip="None", ports=[service_port("tcp-db", 5432)])

    def endpoints(*ips: str) -> Raw:
        return endpoint_slice(
            "web", endpoints=[endpoint(ip) for ip in ips], ports=[("tcp-db", 5432)]
        )

    assert (
        _push_kind([web, endpoints("10.0.0.1")], [web, endpoints("10.0.0.1", "10.0.0.2")]) is None
    )


@pytest.mark.parametrize(
    "selecting",
    [
        service("web", cluster_ip="None"),
        service_entry("none", resolution="NONE", workloadSelector={"labels": {"app": "web"}}),
    ],
    ids=["headless-http", "none-entry-http"],
)
def test_entries_of_http_passthrough_services_change_no_config(selecting: Raw) -> None:
    # HTTP ports listen on 0.0.0.0:<port> and pass through to the original destination: no
    # generated resource reads the endpoints, so none is rebuilt and nothing is pushed in full.
    before, after = [selecting], [selecting, workload_entry("vm", "10.1.0.1")]
    assert _push_kind(before, after) is not None
    proxy = sidecar_proxy()
    for type_url in type_urls.PUSH_ORDER:
        old = generate(context(*before), proxy, type_url)
        new = generate(context(*after), proxy, type_url)
        assert {n: r.version for n, r in old.items()} == {n: r.version for n, r in new.items()}


def test_entry_change_beside_another_kind_is_a_full_push() -> None:
    before = web_with_pod()
    after = [*before, workload_entry("vm", "10.1.0.1"), service("api")]
    assert _push_kind(before, after) is None


def test_entry_nobody_selects_is_endpoint_only_and_changes_no_assignment() -> None:
    # The services of its namespace that take WorkloadEntries recompute their endpoints (and
    # find them unchanged, so no proxy is sent anything); nothing else is rebuilt.
    base = web_with_pod()
    after = [*base, workload_entry("vm", "10.1.0.1", {"app": "x"})]
    assert _push_kind(base, after) == frozenset({outbound_cluster("web", 80)})
    proxy = sidecar_proxy()
    before_eds = generate(context(*base), proxy, type_urls.ENDPOINT)
    after_eds = generate(context(*after), proxy, type_urls.ENDPOINT)
    assert {n: r.version for n, r in before_eds.items()} == {
        n: r.version for n, r in after_eds.items()
    }


def test_service_accounts_join_entry_sans_and_endpoint_identities() -> None:
    ctx = context(
        *web_with_pod(),
        workload_entry("vm-a", "10.1.0.1", serviceAccount="vm-sa"),
        service_entry(
            "ext",
            resolution="DNS",
            subjectAltNames=["spiffe://cluster.local/ns/ext/sa/backend"],
        ),
    )
    web = ctx.services_by_host[hostname("web")]
    assert ctx.service_accounts(web, "cluster.local") == (
        "spiffe://cluster.local/ns/default/sa/default",  # the pod's
        "spiffe://cluster.local/ns/default/sa/vm-sa",
    )
    ext = ctx.services_by_host["ext.example.com"]
    assert ctx.service_accounts(ext, "td") == ("spiffe://cluster.local/ns/ext/sa/backend",)
