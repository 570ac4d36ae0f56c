"""PushContext: an immutable index over one snapshot of the config store, built once per push."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from istiolite.model.destinationrule import DestinationRule, Subset
from istiolite.model.endpointslice import EndpointSlice
from istiolite.model.gateway import Gateway
from istiolite.model.meta import ObjectKey
from istiolite.model.secret import Secret
from istiolite.model.service import Service, ServicePort
from istiolite.model.serviceentry import ServiceEntry
from istiolite.model.sidecar import ROOT_NAMESPACE, Sidecar
from istiolite.model.virtualservice import VirtualService
from istiolite.model.workload import SUBZONE_LABEL, Namespace, Node, Pod
from istiolite.model.workloadentry import WorkloadEntry


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    object: str
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    @classmethod
    def parse(cls, text: str) -> Locality:
        """Istio's `region/zone/subzone` string (any part may be missing)."""
        region, _, rest = text.partition("/")
        zone, _, sub_zone = rest.partition("/")
        return cls(region, zone, sub_zone)


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """One ready address:port that serves one port of a Service."""

    address: str
    port: int
    locality: Locality
    labels: Mapping[str, str]
    service_account: str
    pod: str  # "ns/name" when the endpoint points at a Pod, else ""


class PushContext:
    """Everything translation reads, indexed for the generators. Never mutated after build.

    `cache` holds serialized resources that many proxies share; it lives and dies with this push.
    """

    def __init__(self, objects: Mapping[ObjectKey, Any], *, domain: str, version: str) -> None:
        self.domain = domain
        self.version = version
        self.cache: dict[Hashable, Any] = {}
        services: list[Service] = []
        slices: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
        self.pods: dict[tuple[str, str], Pod] = {}
        self.nodes: dict[str, Node] = {}
        self.namespaces: dict[str, Namespace] = {}
        virtual_services: list[VirtualService] = []
        destination_rules: list[DestinationRule] = []
        entries: list[ServiceEntry] = []
        sidecars: list[Sidecar] = []
        self.workload_entries: list[WorkloadEntry] = []
        gateways: list[Gateway] = []
        self.secrets: dict[tuple[str, str], Secret] = {}
        for key, obj in objects.items():
            match key.kind:
                case "Service":
                    services.append(obj)
                case "EndpointSlice":
                    slices[(obj.namespace, obj.service_name)].append(obj)
                case "Pod":
                    self.pods[(key.namespace, key.name)] = obj
                case "Node":
                    self.nodes[key.name] = obj
                case "Namespace":
                    self.namespaces[key.name] = obj
                case "VirtualService":
                    virtual_services.append(obj)
                case "DestinationRule":
                    destination_rules.append(obj)
                case "ServiceEntry":
                    entries.append(obj)
                case "Sidecar":
                    sidecars.append(obj)
                case "WorkloadEntry":
                    self.workload_entries.append(obj)
                case "Gateway":
                    gateways.append(obj)
                case "Secret":
                    self.secrets[(key.namespace, key.name)] = obj
        # ServiceEntry hosts join the registry; a Kubernetes Service keeps a host both declare,
        # and among entries the first by namespace/name wins.
        self._entry_endpoints: dict[str, ServiceEntry] = {}
        taken = {s.hostname(domain) for s in services}
        for entry in sorted(entries, key=lambda e: (e.namespace, e.meta.name)):
            for service in entry.services():
                if service.host not in taken:
                    taken.add(service.host)
                    services.append(service)
                    self._entry_endpoints[service.host] = entry
        self.services: tuple[Service, ...] = tuple(
            sorted(services, key=lambda s: s.hostname(domain))
        )
        self.services_by_host: dict[str, Service] = {s.hostname(domain): s for s in self.services}
        by_namespace: dict[str, list[Service]] = defaultdict(list)
        for service in self.services:
            if service.selector:
                by_namespace[service.namespace].append(service)
        self._selecting_by_namespace = dict(by_namespace)
        # For sidecars, the first VirtualService for a host wins (istiod: the oldest; files carry
        # no creation time, so namespace/name order stands in for it).
        self.virtual_services: dict[str, VirtualService] = {}
        for vs in sorted(virtual_services, key=lambda v: (v.namespace, v.meta.name)):
            if not vs.applies_to_sidecars:
                continue
            for host in vs.hosts:
                self.virtual_services.setdefault(self.resolve_host(host, vs.namespace), vs)
        self._sidecars = sorted(sidecars, key=lambda c: (c.namespace, c.meta.name))
        self._all_virtual_services = sorted(
            virtual_services, key=lambda v: (v.namespace, v.meta.name)
        )
        self.source_matched = any(vs.uses_source_match for vs in self.virtual_services.values())
        self.destination_rules: dict[str, DestinationRule] = {}
        for dr in sorted(destination_rules, key=lambda d: (d.namespace, d.meta.name)):
            self.destination_rules.setdefault(self.resolve_host(dr.host, dr.namespace), dr)
        self._slices = {k: sorted(v, key=lambda s: s.meta.name) for k, v in slices.items()}
        self.gateways: tuple[Gateway, ...] = tuple(sorted(gateways, key=lambda g: g.key))
        # Gateway "ns/name" -> the VirtualServices bound to it, oldest (here: ns/name) first.
        self.gateway_virtual_services: dict[str, list[VirtualService]] = defaultdict(list)
        for vs in self._all_virtual_services:
            for ref in vs.gateways:
                if ref != "mesh":
                    self.gateway_virtual_services[self.gateway_ref(ref, vs.namespace)].append(vs)

    def hostname(self, service: Service) -> str:
        return service.hostname(self.domain)

    def resolve_host(self, host: str, namespace: str) -> str:
        """As Istio: a short name (no dot) is a service in the object's own namespace."""
        if "." in host or host == "*":
            return host
        return f"{host}.{namespace}.svc.{self.domain}"

    @staticmethod
    def gateway_ref(ref: str, namespace: str) -> str:
        """A VirtualService's `gateways` entry as "ns/name" (a bare name is in its namespace)."""
        return ref if "/" in ref else f"{namespace}/{ref}"

    def gateways_for(self, labels: Mapping[str, str]) -> tuple[Gateway, ...]:
        """The Gateways whose selector matches a gateway proxy's labels (any namespace, as
        istiod without PILOT_SCOPE_GATEWAY_TO_NAMESPACE)."""
        return tuple(g for g in self.gateways if g.selects(dict(labels)))

    def reference_warnings(self) -> list[ConfigWarning]:
        """Objects that load but refer to something missing: a route to a subset no
        DestinationRule defines answers 503 (a warning on the object, not a broken proxy)."""
        out = []
        for vs in self._all_virtual_services:
            for i, http in enumerate(vs.http):
                for j, dest in enumerate(http.route):
                    subset = dest.destination.subset
                    host = self.resolve_host(dest.destination.host, vs.namespace)
                    if subset and all(s.name != subset for s in self.subsets(host)):
                        out.append(
                            ConfigWarning(
                                f"VirtualService {vs.namespace}/{vs.meta.name}",
                                f"spec.http[{i}].route[{j}].destination.subset",
                                f"subset {subset!r} is not defined by a DestinationRule for "
                                f"{host}; requests routed to it fail with 503",
                            )
                        )
        known_gateways = {g.key for g in self.gateways}
        for vs in self._all_virtual_services:
            for i, ref in enumerate(vs.gateways):
                if ref != "mesh" and self.gateway_ref(ref, vs.namespace) not in known_gateways:
                    out.append(
                        ConfigWarning(
                            f"VirtualService {vs.namespace}/{vs.meta.name}",
                            f"spec.gateways[{i}]",
                            f"gateway {self.gateway_ref(ref, vs.namespace)!r} does not exist; "
                            "no gateway serves these routes",
                        )
                    )
        for gateway in self.gateways:
            for server in gateway.servers:
                name = server.tls.credential_name if server.tls else ""
                if name and (gateway.namespace, name) not in self.secrets:
                    out.append(
                        ConfigWarning(
                            f"Gateway {gateway.key}",
                            f"spec.servers[{server.index}].tls.credentialName",
                            f"Secret {name!r} not found in namespace {gateway.namespace!r} "
                            "(it must be in the gateway proxy's namespace); this server is "
                            "left out of the listener",
                        )
                    )
        # And settings that are valid but not translated yet (DestinationRule.unapplied).
        for dr in sorted(self.destination_rules.values(), key=lambda d: (d.namespace, d.meta.name)):
            for field, message in dr.unapplied():
                out.append(
                    ConfigWarning(f"DestinationRule {dr.namespace}/{dr.meta.name}", field, message)
                )
        return out

    def sidecar_for(self, namespace: str, labels: Mapping[str, str]) -> Sidecar | None:
        """As istiod: a Sidecar in the workload's namespace whose selector matches, else the one
        there without a selector, else the root namespace's default."""
        plain: Sidecar | None = None
        for sidecar in self._sidecars:
            if sidecar.namespace != namespace:
                continue
            if sidecar.workload_selector:
                if sidecar.selects(dict(labels)):
                    return sidecar
            elif plain is None:
                plain = sidecar
        if plain is not None:
            return plain
        return next(
            (
                c
                for c in self._sidecars
                if c.namespace == ROOT_NAMESPACE and not c.workload_selector
            ),
            None,
        )

    def visible_services(self, sidecar: Sidecar | None) -> tuple[Service, ...]:
        """The services a proxy under `sidecar` may reach (all without one); memoized per push."""
        if sidecar is None or not sidecar.egress_hosts:
            return self.services
        key = ("visible", sidecar.namespace, sidecar.meta.name)
        found: tuple[Service, ...] | None = self.cache.get(key)
        if found is None:
            found = tuple(s for s in self.services if sidecar.allows(s.namespace, self.hostname(s)))
            self.cache[key] = found
        return found

    def subsets(self, host: str) -> list[Subset]:
        rule = self.destination_rules.get(host)
        return list(rule.subsets) if rule else []

    def endpoints(
        self, service: Service, port: ServicePort, labels: Mapping[str, str] | None = None
    ) -> list[ServiceEndpoint]:
        """Ready endpoints of one service port (of one subset, when its `labels` are given),
        deduplicated, in a stable order."""
        if service.host in self._entry_endpoints:
            return self._entry_workloads(self._entry_endpoints[service.host], port, labels)
        result: dict[tuple[str, int], ServiceEndpoint] = {}
        for eps in self._slices.get((service.namespace, service.name), ()):
            if eps.address_type == "FQDN":
                continue  # as istiod: EDS carries IPs only
            target = _slice_port(eps, port)
            if target is None:
                continue
            for ep in eps.endpoints:
                if not ep.ready:
                    continue
                pod = None
                if ep.target_ref is not None and ep.target_ref.kind in ("Pod", ""):
                    pod = self.pods.get(
                        (ep.target_ref.namespace or eps.namespace, ep.target_ref.name)
                    )
                locality = self._locality(ep.zone, ep.node_name, pod)
                if labels and not (
                    pod is not None and all(pod.meta.labels.get(k) == v for k, v in labels.items())
                ):
                    continue  # a subset selects pods by their labels
                for address in ep.addresses:
                    result.setdefault(
                        (address, target),
                        ServiceEndpoint(
                            address=address,
                            port=target,
                            locality=locality,
                            labels=pod.meta.labels if pod else {},
                            service_account=pod.service_account if pod else "",
                            pod=f"{pod.meta.namespace}/{pod.meta.name}" if pod else "",
                        ),
                    )
        return [result[k] for k in sorted(result)]

    def _locality(self, zone: str, node_name: str, pod: Pod | None) -> Locality:
        node = self.nodes.get(node_name or (pod.node_name if pod else ""))
        return Locality(
            region=node.region if node else "",
            zone=zone or (node.zone if node else ""),
            sub_zone=pod.meta.labels.get(SUBZONE_LABEL, "") if pod else "",
        )

    def _entry_workloads(
        self, entry: ServiceEntry, port: ServicePort, labels: Mapping[str, str] | None
    ) -> list[ServiceEndpoint]:
        """An entry's endpoints for one port (one subset, with `labels`): its own `endpoints`,
        or the WorkloadEntries of its namespace its workloadSelector picks."""
        if entry.workload_selector is None:
            candidates = [
                (ep.address, ep.ports, ep.labels, ep.locality, "") for ep in entry.endpoints
            ]
        else:
            candidates = [
                (w.address, w.ports, w.labels, w.locality, w.service_account)
                for w in self.workload_entries
                if w.namespace == entry.namespace
            ]
        selector = {**(entry.workload_selector or {}), **(labels or {})}
        out = [
            ServiceEndpoint(
                address=address,
                port=int(ports.get(port.name, port.target_port)),
                locality=Locality.parse(locality),
                labels=workload_labels,
                service_account=account,
                pod="",
            )
            for address, ports, workload_labels, locality, account in candidates
            if all(workload_labels.get(k) == v for k, v in selector.items())
        ]
        return sorted(out, key=lambda e: (e.address, e.port))

    def services_selecting(self, namespace: str, labels: Mapping[str, str]) -> list[Service]:
        """Services in `namespace` whose non-empty selector matches these workload labels."""
        return [
            s
            for s in self._selecting_by_namespace.get(namespace, ())
            if all(labels.get(k) == v for k, v in s.selector.items())
        ]


def _slice_port(eps: EndpointSlice, port: ServicePort) -> int | None:
    """The endpoint port serving `port`: EndpointSlice ports carry the Service port's name."""
    for candidate in eps.ports:
        if candidate.name == port.name:
            return candidate.port
    return None
