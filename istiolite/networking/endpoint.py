"""EDS: a ClusterLoadAssignment per outbound cluster, endpoints grouped by locality.

Assignments are the same for every proxy, except for clusters with a locality-aware policy
(DestinationRule `localityLbSetting`, or istiod's mesh default with `outlierDetection`): those
get priorities (failover) or locality weights (distribute) relative to the proxy's own locality,
as istiod's ApplyLocalityLoadBalancer sets them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from istiolite.model.destinationrule import DestinationRule, LocalityDistribute, LocalityFailover
from istiolite.model.protocol import Protocol
from istiolite.model.proxy import Proxy
from istiolite.model.service import Service, ServicePort
from istiolite.model.workload import REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL
from istiolite.networking.mtls import endpoint_mtls_metadata
from istiolite.networking.names import Direction, cluster_name
from istiolite.networking.traffic_policy import LocalityPolicy, locality_policy, policy_for
from istiolite.networking.typed import socket_address, uint32
from istiolite.push.cache import memoized
from istiolite.push.context import Locality, PushContext, ServiceEndpoint

ClusterLoadAssignment: TypeAlias = endpoint_pb2.ClusterLoadAssignment

# Istio's locality override label: "region.zone.subzone" (Kubernetes label values have no "/").
LOCALITY_LABEL = "istio-locality"


@dataclass(slots=True)
class _Group:
    """One LocalityLbEndpoints while it is being shaped."""

    locality: Locality
    endpoints: list[ServiceEndpoint]
    weight: int
    priority: int = 0


def _groups(endpoints: Sequence[ServiceEndpoint]) -> list[_Group]:
    by_locality: dict[Locality, list[ServiceEndpoint]] = defaultdict(list)
    for ep in endpoints:
        by_locality[ep.locality].append(ep)
    return [
        # A locality weighs what its endpoints weigh (WorkloadEntry `weight`; 1 otherwise).
        _Group(locality, by_locality[locality], sum(ep.weight for ep in by_locality[locality]))
        for locality in sorted(by_locality, key=lambda loc: (loc.region, loc.zone, loc.sub_zone))
    ]


def _assignment(name: str, groups: list[_Group]) -> ClusterLoadAssignment:
    return ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(
                    region=g.locality.region, zone=g.locality.zone, sub_zone=g.locality.sub_zone
                ),
                load_balancing_weight=uint32(g.weight),
                priority=g.priority,
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=socket_address(ep.address, ep.port)
                        ),
                        health_status=health_check_pb2.HealthStatus.HEALTHY,
                        load_balancing_weight=uint32(ep.weight),
                        metadata=endpoint_mtls_metadata() if ep.mesh_mtls else None,
                    )
                    for ep in g.endpoints
                ],
            )
            for g in groups
        ],
    )


def load_assignment(name: str, endpoints: list[ServiceEndpoint]) -> ClusterLoadAssignment:
    """Every locality carries a weight (the sum of its endpoints): proxyless gRPC requires it."""
    # An empty assignment is still sent: without one Envoy leaves the cluster warming.
    return _assignment(name, _groups(endpoints))


# --- locality load balancing (istiod's loadbalancer.ApplyLocalityLoadBalancer) -----------------


@dataclass(frozen=True, slots=True)
class LocalityView:
    """What a locality-aware assignment depends on besides the endpoints: the proxy's locality
    and, for `failoverPriority`, its values of the labels named there (part of the cache key)."""

    locality: Locality
    labels: tuple[tuple[str, str], ...] = ()
    has_labels: bool = False  # istiod skips failoverPriority for a proxy with no labels at all


@dataclass(frozen=True, slots=True)
class LocalizedCluster:
    """An EDS cluster whose assignment depends on the proxy's locality."""

    service: Service
    port: ServicePort
    subset_labels: Mapping[str, str] | None
    policy: LocalityPolicy


@dataclass(frozen=True, slots=True)
class LocalizedClusters:
    """The locality-aware EDS clusters proxies of one namespace view see, by name, and the label
    keys their `failoverPriority` lists compare (the part of a proxy's labels that matters)."""

    clusters: Mapping[str, LocalizedCluster] = field(default_factory=dict)
    priority_keys: tuple[str, ...] = ()


NONE_LOCALIZED = LocalizedClusters()


def _split_locality(text: str) -> tuple[str, str, str]:
    parts = [*text.split("/"), "", ""]
    return parts[0], parts[1], parts[2]


def locality_matches(locality: Locality, rule: str) -> bool:
    """istiod's LocalityMatch: a rule `region[/zone[/subzone]]`, where `*` or a missing part
    matches anything (the region must be given or `*`)."""
    region, zone, sub_zone = _split_locality(rule)
    return (
        (region == "*" or locality.region == region)
        and (zone in ("*", "") or locality.zone == zone)
        and (sub_zone in ("*", "") or locality.sub_zone == sub_zone)
    )


def _closeness(proxy: Locality, endpoints: Locality) -> int:
    """istiod's LbPriority: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere."""
    if proxy.region != endpoints.region:
        return 3
    if proxy.zone != endpoints.zone:
        return 2
    return 0 if proxy.sub_zone == endpoints.sub_zone else 1


def _compact(groups: list[_Group]) -> None:
    """Priorities must run 0..N without gaps: renumber, keeping their order."""
    rank = {p: i for i, p in enumerate(sorted({g.priority for g in groups}))}
    for g in groups:
        g.priority = rank[g.priority]


def _apply_weights(
    groups: list[_Group], locality: Locality, distribute: Sequence[LocalityDistribute]
) -> None:
    """The first `distribute` rule whose `from` matches the proxy: each `to` locality gets its
    weight (split over the groups it matches, in proportion to theirs, rounded up); groups no
    `to` matches keep no endpoints."""
    for rule in distribute:
        if not locality_matches(locality, rule.origin):
            continue
        unmatched = set(range(len(groups)))
        for target, weight in rule.weights:
            chosen = [
                i
                for i in range(len(groups))
                if i in unmatched and locality_matches(groups[i].locality, target)
            ]
            unmatched.difference_update(chosen)
            total = sum(groups[i].weight for i in chosen)
            for i in chosen:
                share = groups[i].weight * weight
                if share > 0:
                    groups[i].weight = math.ceil(share / total)
        for i in unmatched:
            groups[i].endpoints = []
        return


def _apply_failover(
    groups: list[_Group], locality: Locality, failover: Sequence[LocalityFailover]
) -> None:
    """Priorities by closeness to the proxy; with a `failover` rule for the proxy's region, the
    other regions except its `to` drop below that one. Existing priorities (from
    failoverPriority) stay the major order."""
    for g in groups:
        closeness = _closeness(locality, g.locality)
        if closeness == 3:
            for rule in failover:
                if rule.origin == locality.region:
                    if g.locality.region != rule.target:
                        closeness = 4
                    break
        g.priority = g.priority * 5 + closeness
    _compact(groups)


def _topology_labels(labels: Mapping[str, str], locality: Locality) -> dict[str, str]:
    """Labels with the locality's topology labels added, as istiod's AugmentLabels."""
    out = dict(labels)
    for key, value in (
        (REGION_LABEL, locality.region),
        (ZONE_LABEL, locality.zone),
        (SUBZONE_LABEL, locality.sub_zone),
    ):
        if value:
            out[key] = value
    return out


def _priority_labels(priorities: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """failoverPriority entries as label keys, and the fixed values of `key=value` entries."""
    keys, fixed = [], {}
    for entry in priorities:
        parts = entry.split("=")
        keys.append(parts[0])
        if len(parts) == 2:
            fixed[parts[0]] = parts[1]
    return keys, fixed


def _apply_failover_priority(
    groups: list[_Group], view: LocalityView, priorities: Sequence[str]
) -> list[_Group]:
    """Each locality split by how many leading failoverPriority labels an endpoint shares with
    the proxy (all: priority 0; none of the first: the lowest)."""
    if not view.has_labels or not groups:
        return groups
    proxy_labels = dict(view.labels)
    keys, fixed = _priority_labels(priorities)
    wanted = [(key, fixed.get(key, proxy_labels.get(key, ""))) for key in keys]
    lowest = len(keys)
    out: list[_Group] = []
    for g in groups:
        by_priority: dict[int, list[ServiceEndpoint]] = defaultdict(list)
        for ep in g.endpoints:
            labels = _topology_labels(ep.labels, ep.locality)
            priority = 0
            for j, (key, value) in enumerate(wanted):
                if labels.get(key, "") != value:
                    priority = lowest - j
                    break
            by_priority[priority].append(ep)
        out += [
            _Group(g.locality, by_priority[p], len(by_priority[p]), p) for p in sorted(by_priority)
        ]
    _compact(out)
    return out


def localized_assignment(
    name: str, endpoints: Sequence[ServiceEndpoint], policy: LocalityPolicy, view: LocalityView
) -> ClusterLoadAssignment:
    """The assignment of one cluster for proxies at `view`: istiod's ApplyLocalityLoadBalancer.
    `distribute` weights apply whatever the outlier detection; otherwise, with outlier
    detection, priorities by failoverPriority labels (then `failover`, if also given) or by
    locality closeness and `failover`."""
    groups = _groups(endpoints)
    setting = policy.setting
    if setting.distribute:
        _apply_weights(groups, view.locality, setting.distribute)
    elif policy.failover and groups:
        if setting.failover_priority:
            groups = _apply_failover_priority(groups, view, setting.failover_priority)
            if setting.failover:
                _apply_failover(groups, view.locality, setting.failover)
        else:
            _apply_failover(groups, view.locality, setting.failover)
    return _assignment(name, groups)


def _may_localize(rule: DestinationRule) -> bool:
    """Whether some policy of the rule could make endpoints depend on the proxy's locality
    (outlier detection or `distribute` anywhere in it; merging is left to the exact per-cluster
    check): a quick test that keeps the common case, no such rule, free."""
    for policy in (rule.traffic_policy, *(s.traffic_policy for s in rule.subsets)):
        if policy is None:
            continue
        for lb, outlier in [
            (policy.load_balancer, policy.outlier_detection),
            *((p.load_balancer, p.outlier_detection) for p in policy.port_level_settings),
        ]:
            setting = lb.locality_lb_setting if lb else None
            if outlier is not None or (setting is not None and setting.distribute):
                return True
    return False


def localized_clusters(ctx: PushContext, namespace: str | None) -> LocalizedClusters:
    """The EDS clusters whose assignment depends on the proxy's locality, for proxies in
    `namespace` (their DestinationRules, as the cluster generator resolves them)."""
    if not any(_may_localize(rule) for rule in ctx.all_destination_rules()):
        return NONE_LOCALIZED
    found: dict[str, LocalizedCluster] = {}
    keys: set[str] = set()
    for service in ctx.services:
        host = ctx.hostname(service)
        if ctx.destination_rule(host, namespace) is None:
            continue
        for name, port, labels in eds_clusters(ctx, service):
            subset = name.split("|")[2]
            policy = locality_policy(policy_for(ctx, host, subset, port.port, namespace))
            if policy is None:
                continue
            found[name] = LocalizedCluster(service, port, labels, policy)
            if policy.failover and not policy.setting.distribute:
                keys.update(_priority_labels(policy.setting.failover_priority)[0])
    if not found:
        return NONE_LOCALIZED
    return LocalizedClusters(found, tuple(sorted(keys)))


def _label_locality(labels: Mapping[str, str]) -> Locality | None:
    """istiod's localityFromProxyLabels: topology labels, else the istio-locality label."""
    if REGION_LABEL in labels or ZONE_LABEL in labels or SUBZONE_LABEL in labels:
        return Locality(
            labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, ""), labels.get(SUBZONE_LABEL, "")
        )
    return _override_locality(labels)


def _override_locality(labels: Mapping[str, str]) -> Locality | None:
    value = labels.get(LOCALITY_LABEL, "")
    if not value:
        return None
    return Locality.parse(value if "/" in value else value.replace(".", "/"))


def proxy_locality(ctx: PushContext, proxy: Proxy) -> Locality:
    """Where a proxy runs, as istiod decides: its Pod (the `istio-locality` label, else its
    Node's region and zone and the Pod's subzone label), else the topology or `istio-locality`
    labels it sends, else the node.locality of its bootstrap."""
    pod = ctx.pod(proxy.namespace, proxy.pod_name)
    if pod is not None:
        found = _override_locality(pod.meta.labels)
        if found is None:
            node = ctx.node(pod.node_name)
            found = Locality(
                node.region if node else "",
                node.zone if node else "",
                pod.meta.labels.get(SUBZONE_LABEL, ""),
            )
        if found != Locality():
            return found
    return _label_locality(proxy.labels) or Locality.parse(proxy.locality)


def locality_view(
    ctx: PushContext, proxy: Proxy, labels: Mapping[str, str], localized: LocalizedClusters
) -> LocalityView:
    """The proxy's LocalityView; `labels`: its workload labels (metadata, else its Pod's)."""
    locality = proxy_locality(ctx, proxy)
    if not localized.priority_keys:
        return LocalityView(locality)
    augmented = _topology_labels(labels, locality)
    return LocalityView(
        locality,
        tuple((key, augmented[key]) for key in localized.priority_keys if key in augmented),
        bool(augmented),
    )


EdsCluster = tuple[str, ServicePort, Mapping[str, str] | None]


def eds_clusters(ctx: PushContext, service: Service) -> list[EdsCluster]:
    """(cluster name, port, subset labels) of every EDS cluster of a service: one per port, and
    one per port and DestinationRule subset (not headless, not ExternalName). They depend on
    Services and DestinationRules only, so an endpoint change keeps them."""
    return memoized(("eds-clusters", ctx.hostname(service)), lambda: _eds_clusters(ctx, service))


def _eds_clusters(ctx: PushContext, service: Service) -> list[EdsCluster]:
    if service.headless or service.type == "ExternalName":
        return []
    if service.type == "ServiceEntry" and service.resolution != "STATIC":
        return []  # DNS clusters carry their own addresses; NONE passes through
    host = ctx.hostname(service)
    subsets = ctx.all_subsets(host)  # shared by all proxies: every namespace's subsets
    out: list[EdsCluster] = []
    for port in service.ports:
        if port.protocol == Protocol.UDP:
            continue
        out.append((cluster_name(Direction.OUTBOUND, port.port, "", host), port, None))
        for subset in subsets:
            name = cluster_name(Direction.OUTBOUND, port.port, subset.name, host)
            out.append((name, port, subset.labels))
    return out


def eds_ports(ctx: PushContext, service: Service) -> list[tuple[str, ServicePort]]:
    """(cluster name, port) of every EDS cluster of a service, subsets included."""
    return [(name, port) for name, port, _ in eds_clusters(ctx, service)]
