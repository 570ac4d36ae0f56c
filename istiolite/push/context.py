"""PushContext: an immutable index over one snapshot of the config store, built once per push."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from istiolite.model.authorization_policy import AuthorizationPolicy
from istiolite.model.destinationrule import DestinationRule, Subset
from istiolite.model.endpointslice import EndpointSlice
from istiolite.model.gateway import Gateway
from istiolite.model.gatewayapi.convert import (
    GATEWAY_KIND,
    ROUTE_KINDS,
    Conversion,
    Inputs,
    convert,
)
from istiolite.model.gatewayapi.status import problems as gateway_api_problems
from istiolite.model.gatewayapi.status import statuses as gateway_api_statuses
from istiolite.model.jwks import JWKS_KIND, JwksKeySet
from istiolite.model.mesh_config import MeshConfig
from istiolite.model.meta import ObjectKey
from istiolite.model.peerauthentication import (
    EffectiveMtls,
    MtlsMode,
    PeerAuthentication,
    compose,
    namespace_mode,
)
from istiolite.model.requestauthentication import RequestAuthentication
from istiolite.model.secret import Secret
from istiolite.model.server_tls import ServerTLS
from istiolite.model.service import Service, ServicePort
from istiolite.model.serviceentry import ServiceEntry
from istiolite.model.sidecar import ROOT_NAMESPACE, Sidecar
from istiolite.model.virtualservice import VirtualService
from istiolite.model.virtualservice_delegate import merge_delegates
from istiolite.model.visibility import NONE, PRIVATE, exported_to, is_public
from istiolite.model.workload import SUBZONE_LABEL, Namespace, Node, Pod
from istiolite.model.workloadentry import WorkloadEntry
from istiolite.push.dependencies import (
    ANY,
    SERVICE_ACCOUNTS,
    SERVICE_ENDPOINTS,
    record,
    unrecorded,
)

T = TypeVar("T")
# A workload with a sidecar that accepts Istio mTLS carries this label (istiod's TLSModeLabel).
TLS_MODE_LABEL = "security.istio.io/tlsMode"
ISTIO_TLS_MODE = "istio"


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    object: str
    field: str
    message: str
    # A valid setting istiolite does not translate (else: a reference to something missing).
    unapplied: bool = False


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
    weight: int = 1  # a WorkloadEntry's (or ServiceEntry endpoint's) `weight`; pods 1
    workload_entry: str = ""  # "ns/name" when the endpoint is a WorkloadEntry, else ""
    # Takes auto mTLS: its workload has a sidecar (label security.istio.io/tlsMode: istio) and
    # no PeerAuthentication DISABLE on this port (istiod's mtlsChecker).
    mesh_mtls: bool = False


class PushContext:
    """Everything translation reads, indexed for the generators, over one snapshot of the store.

    Immutable: nothing outside writes to it. Some views are built on first use (per-namespace
    exportTo views, DestinationRule lookups); they are pure functions of the snapshot. Results
    shared across pushes live in push.cache, never here. Pods, Nodes, Secrets, WorkloadEntries
    and EndpointSlices are read only through methods that record the read (push.dependencies),
    so a cached result knows which of those objects it depends on.
    """

    def __init__(self, objects: Mapping[ObjectKey, Any], *, domain: str, version: str) -> None:
        self.domain = domain
        self.version = version
        services: list[Service] = []
        slices: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
        self._pods: dict[tuple[str, str], Pod] = {}
        self._nodes: dict[str, Node] = {}
        self.namespaces: dict[str, Namespace] = {}
        # The mesh config (--mesh-config); Istio's defaults without one.
        self.mesh = MeshConfig()
        virtual_services: list[VirtualService] = []
        destination_rules: list[DestinationRule] = []
        entries: list[ServiceEntry] = []
        sidecars: list[Sidecar] = []
        self.workload_entries: list[WorkloadEntry] = []
        gateways: list[Gateway] = []
        self._secrets: dict[tuple[str, str], Secret] = {}
        peer_authentications: list[PeerAuthentication] = []
        authorization_policies: list[AuthorizationPolicy] = []
        # RequestAuthentication by namespace; fetched JWKS by URI (sources/jwks.py).
        request_authns: dict[str, list[RequestAuthentication]] = defaultdict(list)
        self._jwks: dict[str, JwksKeySet] = {}
        # The Gateway API's objects, by kind: converted into Gateways and VirtualServices below.
        gateway_api: dict[str, list[Any]] = defaultdict(list)
        # Fields set but not translated, per object (found by the schema when it was parsed).
        self._unapplied_fields: list[tuple[ObjectKey, tuple[tuple[str, str], ...]]] = []
        for key, obj in objects.items():
            unapplied = getattr(getattr(obj, "meta", None), "unapplied", ())
            if unapplied:
                self._unapplied_fields.append((key, unapplied))
            match key.kind:
                case "Service":
                    services.append(obj)
                case "EndpointSlice":
                    slices[(obj.namespace, obj.service_name)].append(obj)
                case "Pod":
                    self._pods[(key.namespace, key.name)] = obj
                case "Node":
                    self._nodes[key.name] = obj
                case "Namespace":
                    self.namespaces[key.name] = obj
                case "MeshConfig":
                    self.mesh = obj
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
                    self._secrets[(key.namespace, key.name)] = obj
                case "PeerAuthentication":
                    peer_authentications.append(obj)
                case "AuthorizationPolicy":
                    authorization_policies.append(obj)
                case "RequestAuthentication":
                    request_authns[key.namespace].append(obj)
                case "JwksKeySet":
                    self._jwks[key.name] = obj
                case "GatewayClass" | "ReferenceGrant" | "KubernetesGateway":
                    gateway_api[key.kind].append(obj)
                case kind if kind in ROUTE_KINDS:
                    gateway_api["routes"].append(obj)
        # PeerAuthentications by namespace, oldest first (files have no creation time:
        # namespace/name order stands in for it, as for the other kinds).
        self._peer_authentications: dict[str, list[PeerAuthentication]] = defaultdict(list)
        for policy in sorted(peer_authentications, key=lambda p: (p.namespace, p.meta.name)):
            self._peer_authentications[policy.namespace].append(policy)
        # AuthorizationPolicies by namespace (istiod: by creation time; here by name).
        self._authz: dict[str, list[AuthorizationPolicy]] = defaultdict(list)
        for authz_policy in sorted(
            authorization_policies, key=lambda p: (p.namespace, p.meta.name)
        ):
            self._authz[authz_policy.namespace].append(authz_policy)
        self._request_authns = {
            ns: tuple(sorted(found, key=lambda r: r.meta.name))
            for ns, found in request_authns.items()
        }
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
        # Per-namespace views (exportTo), built on first use.
        self._scoped_views: dict[tuple[str, Hashable], Any] = {}
        self._dr_memo: dict[tuple[str, str | None, Hashable], DestinationRule | None] = {}
        self._sidecars = sorted(sidecars, key=lambda c: (c.namespace, c.meta.name))
        # As istiod (initVirtualServices, mergeVirtualServicesIfNeeded), once per push: the
        # delegates (no hosts) merged into the roots' `http[].delegate` routes; what routes,
        # for sidecars and gateways, is the roots and the plain ones. The objects as written
        # stay in `_declared_virtual_services` (warnings name their own fields).
        self._declared_virtual_services = sorted(
            virtual_services, key=lambda v: (v.namespace, v.meta.name)
        )
        delegation = merge_delegates(self._declared_virtual_services, self.resolve_host)
        # The Gateway API as istiod takes it: converted into Istio Gateways and VirtualServices
        # that route like any others (the conversion also decides those objects' status).
        self.gateway_api: Conversion = convert(
            Inputs(
                classes=gateway_api["GatewayClass"],
                gateways=gateway_api[GATEWAY_KIND],
                routes=gateway_api["routes"],
                grants=gateway_api["ReferenceGrant"],
                services_by_host=self.services_by_host,
                namespace_labels=self._namespace_labels,
                domain=domain,
            )
        )
        gateways.extend(self.gateway_api.gateways)
        self._all_virtual_services = list(delegation.virtual_services)
        self._all_virtual_services += self.gateway_api.virtual_services
        self._delegate_warnings = delegation.warnings
        # For sidecars, the first VirtualService for a host wins (istiod: the oldest; files carry
        # no creation time, so namespace/name order stands in for it). This index holds the
        # public ones; `virtual_service` gives a namespace its own view (exportTo).
        self._mesh_virtual_services = [
            vs for vs in self._all_virtual_services if vs.applies_to_sidecars
        ]
        self.virtual_services: dict[str, VirtualService] = self._first_per_host(
            vs for vs in self._mesh_virtual_services if is_public(vs.export_to)
        )
        self.source_matched = any(vs.uses_source_match for vs in self._mesh_virtual_services)
        self._rules_by_host: tuple[dict[str, list[int]], list[tuple[int, str]]] | None = None
        self._all_destination_rules = sorted(
            destination_rules, key=lambda d: (d.namespace, d.meta.name)
        )
        # Per namespace, the distinct workloadSelectors of its DestinationRules (most have none).
        self._dr_selectors: dict[str, list[dict[str, str]]] = {}
        for dr in self._all_destination_rules:
            if dr.workload_selector is not None:
                known = self._dr_selectors.setdefault(dr.namespace, [])
                if dr.workload_selector not in known:
                    known.append(dr.workload_selector)
        self._index_destination_rules()
        # Whether what a proxy gets can depend on its namespace beyond what its Sidecar says:
        # some exportTo restricts something, or a DestinationRule is not simply its own
        # service's public rule (istiod looks in the proxy's namespace first). When not, one
        # result serves every namespace.
        self.namespace_scoped = (
            any(not is_public(s.export_to) for s in self.services)
            or any(not is_public(vs.export_to) for vs in self._all_virtual_services)
            or any(not self._owned(dr) for dr in self._all_destination_rules)
        )
        self._slices = {k: sorted(v, key=lambda s: s.meta.name) for k, v in slices.items()}
        self.gateways: tuple[Gateway, ...] = tuple(sorted(gateways, key=lambda g: g.key))
        # Gateway "ns/name" -> the VirtualServices bound to it, oldest (here: ns/name) first.
        self.gateway_virtual_services: dict[str, list[VirtualService]] = defaultdict(list)
        for vs in self._all_virtual_services:
            for ref in vs.gateways:
                if ref != "mesh":
                    self.gateway_virtual_services[self.gateway_ref(ref, vs.namespace)].append(vs)

    def derive(
        self,
        objects: Mapping[ObjectKey, Any],
        changed: Iterable[ObjectKey],
        old: Mapping[ObjectKey, Any],
        *,
        version: str,
    ) -> PushContext:
        """The context of `objects`, which differ from this context's snapshot `old` by the
        keys `changed`. When only per-object kinds changed (Pods, Nodes, Secrets,
        EndpointSlices), the registry's indexes are this context's and only those objects are
        re-indexed: the cost follows the change, not the mesh. Otherwise a full build."""
        changed = set(changed)
        if any(key.kind not in _PER_OBJECT_KINDS for key in changed):
            return PushContext(objects, domain=self.domain, version=version)
        new = object.__new__(PushContext)
        new.__dict__.update(self.__dict__)
        new.version = version
        # Views built on first use start empty (they are cheap, and read nothing that changed).
        new._scoped_views = {}
        new._dr_memo = {}
        new._pods, new._nodes, new._secrets, new._jwks = (
            dict(self._pods),
            dict(self._nodes),
            dict(self._secrets),
            dict(self._jwks),
        )
        slices = dict(self._slices)
        for key in changed:
            before, after = old.get(key), objects.get(key)
            match key.kind:
                case "Pod":
                    _put(new._pods, (key.namespace, key.name), after)
                case "Node":
                    _put(new._nodes, key.name, after)
                case "Secret":
                    _put(new._secrets, (key.namespace, key.name), after)
                case "JwksKeySet":
                    _put(new._jwks, key.name, after)
                case "EndpointSlice":
                    for group in {(o.namespace, o.service_name) for o in (before, after) if o}:
                        members = [s for s in slices.get(group, ()) if s.meta.name != key.name]
                        if after is not None and (after.namespace, after.service_name) == group:
                            members.append(after)
                        if members:
                            slices[group] = sorted(members, key=lambda s: s.meta.name)
                        else:
                            slices.pop(group, None)
        new._slices = slices
        unapplied = [(k, f) for k, f in self._unapplied_fields if k not in changed]
        for key in changed:
            fields = getattr(getattr(objects.get(key), "meta", None), "unapplied", ())
            if fields:
                unapplied.append((key, fields))
        new._unapplied_fields = unapplied
        return new

    def hostname(self, service: Service) -> str:
        return service.hostname(self.domain)

    def gateway_api_status(self) -> dict[ObjectKey, dict[str, Any]]:
        """The status of every Gateway API object istiolite handles (model.gatewayapi.status):
        what the leader writes, /debug/configz and `istiolite validate` show."""
        return gateway_api_statuses(
            self.gateway_api, lambda ns, name: self._secrets.get((ns, name))
        )

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        found = self.namespaces.get(namespace)
        return dict(found.meta.labels) if found is not None else {}

    # --- objects whose reads are recorded (push.dependencies) ----------------------------------

    def pod(self, namespace: str, name: str) -> Pod | None:
        record("Pod", namespace, name)
        return self._pods.get((namespace, name))

    def node(self, name: str) -> Node | None:
        record("Node", "", name)
        return self._nodes.get(name)

    def secret(self, namespace: str, name: str) -> Secret | None:
        record("Secret", namespace, name)
        return self._secrets.get((namespace, name))

    def request_authentications_for(
        self, namespace: str, labels: Mapping[str, str]
    ) -> tuple[RequestAuthentication, ...]:
        """The RequestAuthentications that apply to a workload (sidecar or gateway) of
        `namespace` with `labels`: its namespace's and the root namespace's, as istiod picks
        them (RequestAuthentication.applies_to), by namespace and name."""
        found: list[RequestAuthentication] = []
        for ns in sorted({namespace, ROOT_NAMESPACE}):
            record("RequestAuthentication", ns, ANY)
            found += [
                r for r in self._request_authns.get(ns, ()) if r.applies_to(namespace, labels)
            ]
        return tuple(found)

    def jwks_key_set(self, uri: str) -> JwksKeySet | None:
        """What the JWKS fetcher holds for `uri` (None: not fetched yet)."""
        record(JWKS_KIND, "", uri)
        return self._jwks.get(uri)

    def secrets_in(self, namespace: str) -> list[tuple[str, Secret]]:
        """(name, Secret) of a namespace, by name."""
        record("Secret", namespace, ANY)
        return sorted((n, s) for (ns, n), s in self._secrets.items() if ns == namespace)

    def authorization_policies(
        self, namespace: str, labels: Mapping[str, str]
    ) -> tuple[AuthorizationPolicy, ...]:
        """The AuthorizationPolicies that apply to a workload (istiod's ListAuthorizationPolicies):
        those of the root namespace and of its own that select it. Recorded per namespace."""
        out: list[AuthorizationPolicy] = []
        for ns in dict.fromkeys((ROOT_NAMESPACE, namespace)):
            record("AuthorizationPolicy", ns, ANY)
            out.extend(p for p in self._authz.get(ns, ()) if p.applies_to(namespace, labels))
        return tuple(out)

    def _authorization_warnings(self) -> list[ConfigWarning]:
        """Policies that select no workload istiolite knows (no Pod or WorkloadEntry with the
        labels), and what each policy's model found (HTTP-only fields, waypoint targets …)."""
        out = []
        for _, policies in sorted(self._authz.items()):
            for policy in policies:
                where = f"AuthorizationPolicy {policy.key}"
                out += [ConfigWarning(where, f, msg) for f, msg in policy.warnings()]
                message = self._selects_nothing(policy)
                if message:
                    field = "spec.targetRefs" if policy.target_refs else "spec.selector"
                    out.append(ConfigWarning(where, field, message))
        return out

    def _selects_nothing(self, policy: AuthorizationPolicy) -> str:
        if not policy.target_refs and not policy.selector:
            return ""  # the whole namespace (or mesh)
        workloads = [(ns, pod.meta.labels) for (ns, _), pod in self._pods.items()]
        workloads += [(w.namespace, w.labels) for w in self.workload_entries]
        if any(
            policy.applies_to(ns, labels)
            for ns, labels in workloads
            if policy.namespace in (ROOT_NAMESPACE, ns)
        ):
            return ""
        scope = (
            "any namespace"
            if policy.namespace == ROOT_NAMESPACE
            else f"namespace {policy.namespace!r}"
        )
        if policy.target_refs:
            return (
                f"no Pod in {scope} belongs to a targeted Gateway: the policy applies to no "
                "workload istiolite knows of"
            )
        selector = ",".join(f"{k}={v}" for k, v in sorted((policy.selector or {}).items()))
        return (
            f"no Pod or WorkloadEntry in {scope} has the labels {selector}: the policy "
            "applies only to proxies whose own labels match"
        )

    # --- exportTo (istiod's serviceIndex, virtualServiceIndex, destinationRuleIndex) ---------

    def scope_key(self, namespace: str) -> str | None:
        """What, besides a proxy's Sidecar, decides its services, routes and clusters: its
        namespace when `namespace_scoped`, else nothing (one result for all)."""
        return namespace if self.namespace_scoped else None

    def _memo(self, kind: str, namespace: Hashable, build: Callable[[], T]) -> T:
        key = (kind, namespace)
        found: T | None = self._scoped_views.get(key)
        if found is None:
            found = self._scoped_views[key] = build()
        return found

    def services_for(self, namespace: str | None) -> tuple[Service, ...]:
        """The services exported to a namespace (istiod's servicesExportedToNamespace, with
        IsServiceVisible), in registry order. `None`: the public ones."""
        if not self.namespace_scoped:
            return self.services
        return self._memo(
            "services",
            namespace,
            lambda: tuple(
                s for s in self.services if exported_to(s.export_to, s.namespace, namespace)
            ),
        )

    def is_visible(self, service: Service, namespace: str | None) -> bool:
        return exported_to(service.export_to, service.namespace, namespace)

    def _first_per_host(self, candidates: Any) -> dict[str, VirtualService]:
        out: dict[str, VirtualService] = {}
        for vs in candidates:
            for host in vs.hosts:
                out.setdefault(self.resolve_host(host, vs.namespace), vs)
        return out

    @staticmethod
    def _vs_rank(vs: VirtualService, namespace: str | None) -> int | None:
        """As istiod's virtualServiceIndex, where a VirtualService stands for proxies of a
        namespace: 0 private to it (its own, exported to `.` or by name), 1 exported to it by
        another namespace, 2 public; None: not exported there."""
        if is_public(vs.export_to):
            return 2
        if namespace is None or NONE in vs.export_to:
            return None
        if namespace == vs.namespace and (PRIVATE in vs.export_to or namespace in vs.export_to):
            return 0
        return 1 if namespace in vs.export_to else None

    def _ordered_for(
        self, candidates: list[VirtualService], namespace: str | None
    ) -> list[VirtualService]:
        ranked = [
            (rank, vs) for vs in candidates if (rank := self._vs_rank(vs, namespace)) is not None
        ]
        return [vs for _, vs in sorted(ranked, key=lambda item: item[0])]

    def mesh_virtual_services(self, namespace: str | None) -> list[VirtualService]:
        """Sidecar VirtualServices a namespace's proxies apply, in precedence order: private,
        exported to it, public (istiod's VirtualServicesForGateway for "mesh"); each group
        oldest (here: namespace/name) first."""
        if not self.namespace_scoped:
            return self._mesh_virtual_services
        return self._memo(
            "mesh-vs", namespace, lambda: self._ordered_for(self._mesh_virtual_services, namespace)
        )

    def virtual_service(self, host: str, namespace: str | None) -> VirtualService | None:
        """The VirtualService that routes `host` for sidecars in `namespace`: the first in
        `mesh_virtual_services` order that names it."""
        if not self.namespace_scoped:
            return self.virtual_services.get(host)
        index: dict[str, VirtualService] = self._memo(
            "vs-by-host",
            namespace,
            lambda: self._first_per_host(self.mesh_virtual_services(namespace)),
        )
        return index.get(host)

    def gateway_virtual_services_for(
        self, gateway: str, namespace: str | None
    ) -> list[VirtualService]:
        """VirtualServices bound to Gateway "ns/name" that apply to gateway proxies of
        `namespace`, in istiod's order (private, exported to it, public)."""
        bound = self.gateway_virtual_services.get(gateway, [])
        if not self.namespace_scoped:
            return bound
        return self._ordered_for(bound, namespace)

    def _index_destination_rules(self) -> None:
        """istiod's destinationRuleIndex: per namespace, the rules that apply to its own proxies
        (`namespaceLocal`: exported to `*`, `.` or itself) and those it exports
        (`exportedByNamespace`: all but the private-only ones); private-only rules of the root
        namespace (`rootNamespaceLocal`). Rules of one host are merged as istiod's
        mergeDestinationRule (oldest first; here namespace/name order): into an earlier one
        with the same exportTo (which then stands for both), or with an exportTo the new one's
        covers (the new one is then kept as well); only rules with the same workloadSelector
        (or both none) merge."""
        local: dict[str, dict[str, list[DestinationRule]]] = defaultdict(dict)
        exported: dict[str, dict[str, list[DestinationRule]]] = defaultdict(dict)
        root_local: dict[str, list[DestinationRule]] = {}

        def add(pool: dict[str, list[DestinationRule]], dr: DestinationRule) -> None:
            rules = pool.setdefault(self.resolve_host(dr.host, dr.namespace), [])
            export = _export_key(dr)
            separate = True
            for i, existing in enumerate(rules):
                if existing.workload_selector != dr.workload_selector:
                    continue  # istiolite: a selector never lends its subsets to other workloads
                theirs = _export_key(existing)
                if export == theirs:
                    separate = False
                elif not export > theirs:
                    continue
                rules[i] = existing.merged_with(dr)
            if separate:
                rules.append(dr)

        for dr in self._all_destination_rules:
            ns, export = dr.namespace, set(dr.export_to)
            if is_public(dr.export_to) or PRIVATE in export or ns in export:
                add(local[ns], dr)
            if len(export) == 1 and (PRIVATE in export or ns in export):
                if ns == ROOT_NAMESPACE:
                    add(root_local, dr)
            else:
                add(exported[ns], dr)
        self._dr_local = dict(local)
        self._dr_exported = dict(exported)
        self._dr_root_local = root_local

    def _owned(self, dr: DestinationRule) -> bool:
        """A public rule for exactly a service of its own namespace (or in the root namespace,
        or for a host no service has): every namespace resolves it the same way."""
        if dr.workload_selector is not None:
            return True  # only its own namespace's selected sidecars see it (own cache keys)
        if not is_public(dr.export_to):
            return False
        if dr.namespace == ROOT_NAMESPACE:
            return True
        host = self.resolve_host(dr.host, dr.namespace)
        service = self.services_by_host.get(host)
        if service is None:
            return "*" not in host  # an exact host nothing serves: it never applies
        return service.namespace == dr.namespace

    @staticmethod
    def _most_specific(
        host: str, pool: Mapping[str, list[DestinationRule]]
    ) -> list[DestinationRule] | None:
        """istiod's MostSpecificHostMatch: the exact host, else the longest matching wildcard."""
        found = pool.get(host)
        if found is not None:
            return found
        best: tuple[int, list[DestinationRule]] | None = None
        for pattern, rules in pool.items():
            if pattern.startswith("*") and _host_matches(host, pattern):
                if best is None or len(pattern) > best[0]:
                    best = (len(pattern), rules)
        return best[1] if best else None

    @staticmethod
    def _pick(
        rules: list[DestinationRule] | None,
        namespace: str | None,
        selected: frozenset[int],
        selectors: list[dict[str, str]],
        client: str | None = None,
    ) -> DestinationRule | None:
        """istiod's SidecarScope.DestinationRule: among one tier's rules for a host, a rule of
        the proxy's namespace whose workloadSelector picks it (its index in `selectors` is in
        `selected`) wins; else the first rule without a selector (exported to `client`, when
        given). Other selectors are skipped: they never apply to this proxy."""
        catch_all: DestinationRule | None = None
        for dr in rules or ():
            if client is not None and not (
                is_public(dr.export_to) or (client != "" and client in dr.export_to)
            ):
                continue
            if dr.workload_selector is None:
                catch_all = catch_all or dr
            elif dr.namespace == namespace and selected:
                if selectors.index(dr.workload_selector) in selected:
                    return dr
        return catch_all

    def workload_key(
        self, namespace: str, labels: Mapping[str, str] | None
    ) -> tuple[str, frozenset[int]] | None:
        """What a sidecar's labels change in the DestinationRules it gets: None when no rule
        with a workloadSelector in its namespace picks it (the common case, shared by all),
        else its namespace and which selectors pick it (proxies alike share)."""
        selectors = self._dr_selectors.get(namespace)
        if not selectors or labels is None:
            return None
        picked = frozenset(
            i for i, sel in enumerate(selectors) if all(labels.get(k) == v for k, v in sel.items())
        )
        return (namespace, picked) if picked else None

    def destination_rule(
        self, host: str, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> DestinationRule | None:
        """The DestinationRule for `host` as seen by proxies in `namespace`, in istiod's order
        (PushContext.destinationRule): 1. a rule of the proxy's own namespace (for the root
        namespace: its private rules); 2. a rule of the service's namespace exported to the
        proxy's; 3. a rule of the root namespace exported to it. `None`: public rules only.
        `labels`: a sidecar's, for rules with a workloadSelector (in its namespace, a matching
        one wins over one without a selector there); a tier with only selectors that do not
        pick the proxy is passed over."""
        workload = self.workload_key(namespace, labels) if namespace is not None else None
        key = (host, namespace, workload)
        if key in self._dr_memo:
            return self._dr_memo[key]
        selected = workload[1] if workload else frozenset()
        selectors = self._dr_selectors.get(namespace or "", [])
        found: DestinationRule | None = None
        if namespace is not None:
            pool = (
                self._dr_root_local
                if namespace == ROOT_NAMESPACE
                else self._dr_local.get(namespace, {})
            )
            found = self._pick(self._most_specific(host, pool), namespace, selected, selectors)
        service = self.services_by_host.get(host)
        client = namespace if namespace is not None else ""
        if found is None and service is not None:
            rules = self._most_specific(host, self._dr_exported.get(service.namespace, {}))
            found = self._pick(rules, namespace, selected, selectors, client)
        if found is None:
            rules = self._most_specific(host, self._dr_exported.get(ROOT_NAMESPACE, {}))
            found = self._pick(rules, namespace, selected, selectors, client)
        self._dr_memo[key] = found
        return found

    def resolve_host(self, host: str, namespace: str) -> str:
        """As Istio: a short name (no dot) is a service in the object's own namespace."""
        if "." in host or host == "*":
            return host
        return f"{host}.{namespace}.svc.{self.domain}"

    @staticmethod
    def gateway_ref(ref: str, namespace: str) -> str:
        """A VirtualService's `gateways` entry as "ns/name" (a bare name is in its namespace)."""
        return ref if "/" in ref else f"{namespace}/{ref}"

    def gateways_for(
        self, labels: Mapping[str, str], namespace: str | None = None
    ) -> tuple[Gateway, ...]:
        """The Gateways whose selector matches a gateway proxy's labels (any namespace, as
        istiod without PILOT_SCOPE_GATEWAY_TO_NAMESPACE; a converted Gateway API Gateway only
        its own proxies' namespace)."""
        return tuple(g for g in self.gateways if g.selects(dict(labels), namespace))

    def _gateway_namespaces(self, gateway: Gateway) -> tuple[list[str], bool]:
        """Where the proxies of a Gateway run, hence where its credential Secrets must be: the
        namespaces of the Pods its selector picks; without Pods, its own namespace, guessed."""
        record("Pod", ANY, ANY)
        found = {ns for (ns, _), pod in self._pods.items() if gateway.selects(pod.meta.labels, ns)}
        return (sorted(found), False) if found else ([gateway.namespace], True)

    def _granted_secret(self, proxy_namespace: str, namespace: str, name: str) -> bool:
        """Whether a Gateway API Gateway whose proxies run in `proxy_namespace` has a valid
        listener using Secret `namespace`/`name` (its ReferenceGrant checked by the conversion)."""
        return any(
            result.proxy_namespace == proxy_namespace
            and any(lr.usable and (namespace, name) in lr.secrets for lr in result.listeners)
            for result in self.gateway_api.gateway_results.values()
        )

    def credential_problems(
        self, namespace: str, tls: ServerTLS, *, guessed: bool = False
    ) -> list[str]:
        """Why a server's credential Secrets cannot serve its gateway proxies in `namespace`
        (none: they can). The CA comes from the first credential only. `guessed`: the
        namespace is a guess, so a Secret found in another namespace is not reported."""
        out = []
        for qualified in tls.credential_names:
            # `ns/name`: a Gateway API listener's Secret of another namespace (ReferenceGrant).
            where, _, name = qualified.rpartition("/")
            if where and where != namespace and not self._granted_secret(namespace, where, name):
                out.append(
                    f"Secret {where}/{name} is in another namespace: only a Gateway API "
                    f"listener allowed by a ReferenceGrant there may use it"
                )
                continue
            home = where or namespace
            secret = self.secret(home, name)
            if secret is None:
                if not (guessed and any(n == name for _, n in self._secrets)):
                    out.append(f"Secret {name!r} not found in namespace {home!r}")
            elif not secret.has_key_pair:
                reason = secret.problem or "it has no tls.crt and tls.key"
                out.append(f"Secret {home}/{name} holds no usable certificate and key ({reason})")
            elif name == tls.credential_name and tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
                separate = self.secret(namespace, name + "-cacert")
                if not secret.has_ca and not (separate and separate.has_ca):
                    out.append(
                        f"{tls.mode} needs a CA: Secret {namespace}/{name} has no ca.crt and "
                        f"there is no Secret {name}-cacert"
                    )
        return out

    def reference_warnings(self) -> list[ConfigWarning]:
        """Objects that load but refer to something missing: a route to a subset no
        DestinationRule defines answers 503 (a warning on the object, not a broken proxy). And
        objects that set valid fields istiolite does not translate (yet): `unapplied`."""
        out = []
        for vs in self._declared_virtual_services:
            for i, http in enumerate(vs.http):
                for j, dest in enumerate(http.route):
                    subset = dest.destination.subset
                    host = self.resolve_host(dest.destination.host, vs.namespace)
                    if subset and all(s.name != subset for s in self.all_subsets(host)):
                        out.append(
                            ConfigWarning(
                                f"VirtualService {vs.namespace}/{vs.meta.name}",
                                f"spec.http[{i}].route[{j}].destination.subset",
                                f"subset {subset!r} is not defined by a DestinationRule for "
                                f"{host}; requests routed to it fail with 503",
                            )
                        )
        for problem in self._delegate_warnings:
            root = problem.root
            where = f"VirtualService {root.namespace}/{root.meta.name}"
            out.append(ConfigWarning(where, problem.field, problem.message))
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
                tls = server.tls
                if tls is None or not tls.credential_name or not tls.terminates:
                    continue
                namespaces, guessed = self._gateway_namespaces(gateway)
                for namespace in namespaces:
                    for reason in self.credential_problems(namespace, tls, guessed=guessed):
                        out.append(
                            ConfigWarning(
                                f"Gateway {gateway.key}",
                                f"spec.servers[{server.index}].tls.credentialName",
                                f"{reason}; the gateway proxies there leave this server out",
                            )
                        )
        # And settings that are valid but not translated yet: those unapplied only for some
        # values (each kind's own `unapplied()`), then every field the schema marks.
        for dr in self._all_destination_rules:
            where = f"DestinationRule {dr.namespace}/{dr.meta.name}"
            out += [ConfigWarning(where, f, m, unapplied=True) for f, m in dr.unapplied()]
        for sidecar in self._sidecars:
            where = f"Sidecar {sidecar.namespace}/{sidecar.meta.name}"
            out += [ConfigWarning(where, f, m, unapplied=True) for f, m in sidecar.unapplied()]
        for gateway in self.gateways:
            where = f"Gateway {gateway.key}"
            out += [ConfigWarning(where, f, m, unapplied=True) for f, m in gateway.unapplied()]
        out += self._authorization_warnings()
        out += self._request_authentication_warnings()
        for key, fields in sorted(
            self._unapplied_fields, key=lambda item: (item[0].kind, item[0].namespace, item[0].name)
        ):
            out += [ConfigWarning(str(key), f, m, unapplied=True) for f, m in fields]
        # Gateway API objects whose status reports a problem (a route no listener takes, a
        # backend not found, an invalid listener).
        out += [
            ConfigWarning(str(key), field, message)
            for key, field, message in gateway_api_problems(self.gateway_api_status())
        ]
        return out

    # --- PeerAuthentication (istiod's AuthenticationPolicies) ------------------------------

    @property
    def trust_domain(self) -> str:
        """The SPIFFE trust domain of the mesh's identities (Istio's default: the DNS domain)."""
        return self.domain

    def peer_authentications_for(
        self, namespace: str, labels: Mapping[str, str]
    ) -> list[PeerAuthentication]:
        """The PeerAuthentications that apply to a workload: its namespace's and the root
        namespace's whose selector (if any) matches its labels, oldest first."""
        return [
            p
            for ns in dict.fromkeys((namespace, ROOT_NAMESPACE))
            for p in self._peer_authentications.get(ns, ())
            if p.selects(labels)
        ]

    def effective_mtls(self, namespace: str, labels: Mapping[str, str]) -> EffectiveMtls:
        """The mutual TLS mode a workload's sidecar enforces inbound (per port where its
        workload policy says so), composed as istiod."""
        if not self._peer_authentications:
            return EffectiveMtls()
        return compose(self.peer_authentications_for(namespace, labels), namespace)

    def namespace_mtls_mode(self, namespace: str) -> MtlsMode:
        """istiod's GetNamespaceMutualTLSMode (namespace, else mesh policy; UNSET if none)."""
        policies = [
            p
            for ns in dict.fromkeys((namespace, ROOT_NAMESPACE))
            for p in self._peer_authentications.get(ns, ())
        ]
        return namespace_mode(policies, namespace)

    def _request_authentication_warnings(self) -> list[ConfigWarning]:
        """jwtRules whose keys are not (or no longer) fetched, and settings that do nothing."""
        out = []
        for ns in sorted(self._request_authns):
            for policy in self._request_authns[ns]:
                where = f"RequestAuthentication {policy.key}"
                out += [ConfigWarning(where, f, m, unapplied=True) for f, m in policy.unapplied()]
                for i, rule in enumerate(policy.jwt_rules):
                    field = f"spec.jwtRules[{i}].jwksUri"
                    if rule.jwks is not None:
                        continue
                    if not rule.jwks_uri:
                        message = (
                            "no jwks or jwksUri: istiolite does not discover keys through "
                            "OpenID (set jwksUri); tokens of this issuer are rejected (401)"
                        )
                        out.append(ConfigWarning(where, f"spec.jwtRules[{i}]", message))
                        continue
                    # Not fetched (yet, or offline: validate, render): nothing to report.
                    found = self._jwks.get(rule.jwks_uri)
                    if found is None or not found.error:
                        continue
                    if found.keys:
                        message = f"fetching failed ({found.error}); the last good keys are used"
                    else:
                        message = f"fetching failed ({found.error}); tokens are rejected (401)"
                    out.append(ConfigWarning(where, field, message))
        return out

    def sidecars_in(self, namespace: str) -> list[Sidecar]:
        """Every Sidecar of a namespace, by name."""
        return [c for c in self._sidecars if c.namespace == namespace]

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

    def visible_services(
        self, sidecar: Sidecar | None, namespace: str | None = None
    ) -> tuple[Service, ...]:
        """The services a proxy in `namespace` under `sidecar` may reach: those exported to
        its namespace that the Sidecar allows (all exported without one); memoized per push."""
        exported = self.services_for(namespace) if namespace is not None else self.services
        if sidecar is None or not sidecar.egress_hosts:
            return exported
        return self._memo(
            "visible",
            (sidecar.namespace, sidecar.meta.name, self.scope_key(namespace or "")),
            lambda: tuple(s for s in exported if sidecar.allows(s.namespace, self.hostname(s))),
        )

    def subsets(
        self, host: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Subset]:
        """The subsets of the DestinationRule proxies in `namespace` (with `labels`) apply to
        `host`."""
        rule = self.destination_rule(host, namespace, labels)
        return list(rule.subsets) if rule else []

    def all_destination_rules(self) -> list[DestinationRule]:
        """Every DestinationRule, whatever its exportTo, by namespace/name."""
        return self._all_destination_rules

    def all_subsets(self, host: str) -> list[Subset]:
        """Subsets any namespace may use for `host` (EDS is shared by all proxies): those of
        every rule whose host matches it, the first definition of a name kept."""
        if self._rules_by_host is None:
            # Indexed once per push: exact hosts by name, wildcard hosts scanned.
            exact: dict[str, list[int]] = defaultdict(list)
            wildcard: list[tuple[int, str]] = []
            for i, dr in enumerate(self._all_destination_rules):
                pattern = self.resolve_host(dr.host, dr.namespace)
                if pattern.startswith("*"):
                    wildcard.append((i, pattern))
                else:
                    exact[pattern].append(i)
            self._rules_by_host = (dict(exact), wildcard)
        exact_rules, wildcard_rules = self._rules_by_host
        matching = sorted(
            exact_rules.get(host, []) + [i for i, p in wildcard_rules if _host_matches(host, p)]
        )
        out: dict[str, Subset] = {}
        for i in matching:
            for subset in self._all_destination_rules[i].subsets:
                out.setdefault(subset.name, subset)
        return list(out.values())

    def endpoints(
        self, service: Service, port: ServicePort, labels: Mapping[str, str] | None = None
    ) -> list[ServiceEndpoint]:
        """Ready endpoints of one service port (of one subset, when its `labels` are given),
        deduplicated, in a stable order."""
        if service.host in self._entry_endpoints:
            return self._entry_workloads(self._entry_endpoints[service.host], port, labels)
        result: dict[tuple[str, int], ServiceEndpoint] = {}
        record(SERVICE_ENDPOINTS, service.namespace, service.name)
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
                    pod = self.pod(ep.target_ref.namespace or eps.namespace, ep.target_ref.name)
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
                            mesh_mtls=pod is not None
                            and self.takes_mesh_mtls(pod.meta.namespace, pod.meta.labels, target),
                        ),
                    )
        for endpoint in self._service_workloads(service, port, labels):
            result.setdefault((endpoint.address, endpoint.port), endpoint)
        return [result[k] for k in sorted(result)]

    def workload_entries_in(self, namespace: str) -> list[WorkloadEntry]:
        """The healthy WorkloadEntries of a namespace, by name (istiod drops an entry whose
        health checks have not passed as if it were deleted). An entry with no address (one
        reached through its network's gateway, which istiolite does not do) gives none."""
        record("WorkloadEntry", namespace, ANY)
        return self._memo(
            "workload-entries",
            namespace,
            lambda: sorted(
                (
                    w
                    for w in self.workload_entries
                    if w.namespace == namespace and w.healthy and w.address
                ),
                key=lambda w: w.meta.name,
            ),
        )

    def _service_workloads(
        self, service: Service, port: ServicePort, labels: Mapping[str, str] | None
    ) -> list[ServiceEndpoint]:
        """WorkloadEntries a Kubernetes Service selects (istiod's cross-registry selection):
        those of its namespace with an IP address whose labels match its selector (and the
        subset's `labels`). Their port is the entry's port named like the service port, else
        the numeric targetPort; a named targetPort is looked up in the entry's ports, and an
        entry without it is left out. Headless and ExternalName services take none."""
        if not service.selector or service.headless or service.type == "ExternalName":
            return []
        selector = {**service.selector, **(labels or {})}
        out = []
        for workload in self.workload_entries_in(service.namespace):
            if not workload.is_ip or any(workload.labels.get(k) != v for k, v in selector.items()):
                continue
            if isinstance(port.target_port, str):
                number = workload.ports.get(port.target_port)
                if number is None:
                    continue
            else:
                number = workload.ports.get(port.name) if port.name else None
                number = number or port.target_port
            out.append(self._workload_endpoint(workload, workload.address, number))
        return out

    def service_accounts(self, service: Service, trust_domain: str) -> tuple[str, ...]:
        """istiod's PushContext.ServiceAccounts: the identities a service's upstreams may
        present, sorted: its ServiceEntry `subjectAltNames` and the SPIFFE IDs of its
        endpoints' service accounts. The SANs to verify for ISTIO_MUTUAL (explicit without
        `subjectAltNames`, or auto mTLS); not for SIMPLE/MUTUAL, where only the rule's count.
        Depends on endpoints: a change of them alters clusters, not only EDS."""
        accounts = set(service.subject_alt_names)
        for port in service.ports:
            for ep in self.endpoints(service, port):
                if ep.service_account:
                    ns = (ep.pod or ep.workload_entry).partition("/")[0] or service.namespace
                    accounts.add(f"spiffe://{trust_domain}/ns/{ns}/sa/{ep.service_account}")
        return tuple(sorted(accounts))

    def service_identities(self, service: Service) -> tuple[str, ...]:
        """`service_accounts` in the mesh's trust domain, recorded as the narrower dependency
        SERVICE_ACCOUNTS: a cluster verifying these identities is rebuilt when the set changes
        (push.identities), not on every endpoint change."""
        record(SERVICE_ACCOUNTS, service.namespace, service.name)
        with unrecorded():
            return self._memo(
                "identities",
                self.hostname(service),
                lambda: self.service_accounts(service, self.trust_domain),
            )

    def workload_entry_services(self, workload: WorkloadEntry) -> list[Service]:
        """The services whose endpoints this WorkloadEntry is (or would be) among: Kubernetes
        Services of its namespace whose selector matches it, and the hosts of ServiceEntries
        there whose workloadSelector does. For pushes: which clusters a change touches."""
        found = [
            s
            for s in self.services_selecting(workload.namespace, workload.labels)
            if s.type != "ServiceEntry"
        ]
        for host, entry in self._entry_endpoints.items():
            selector = entry.workload_selector
            if (
                selector
                and entry.namespace == workload.namespace
                and all(workload.labels.get(k) == v for k, v in selector.items())
            ):
                found.append(self.services_by_host[host])
        return found

    def _locality(self, zone: str, node_name: str, pod: Pod | None) -> Locality:
        node = self.node(node_name or (pod.node_name if pod else ""))
        return Locality(
            region=node.region if node else "",
            zone=zone or (node.zone if node else ""),
            sub_zone=pod.meta.labels.get(SUBZONE_LABEL, "") if pod else "",
        )

    def _entry_workloads(
        self, entry: ServiceEntry, port: ServicePort, labels: Mapping[str, str] | None
    ) -> list[ServiceEndpoint]:
        """An entry's endpoints for one port (one subset, with `labels`): its own `endpoints`,
        or the healthy WorkloadEntries of its namespace its workloadSelector picks (an empty
        selector picks none; hostname entries only for DNS resolution, as istiod)."""
        selector = {**(entry.workload_selector or {}), **(labels or {})}
        target = int(port.target_port)  # an entry's targetPort is a number (default: port)
        if entry.workload_selector is None:
            out = [
                ServiceEndpoint(
                    address=ep.address,
                    port=ep.ports.get(port.name, target),
                    locality=Locality.parse(ep.locality),
                    labels=ep.labels,
                    service_account=ep.service_account,
                    pod="",
                    weight=ep.weight,
                    mesh_mtls=self.takes_mesh_mtls(
                        entry.namespace, ep.labels, ep.ports.get(port.name, target)
                    ),
                )
                for ep in entry.endpoints
                if all(ep.labels.get(k) == v for k, v in selector.items())
            ]
        elif not entry.workload_selector:
            out = []
        else:
            dns = entry.resolution.startswith("DNS")
            out = [
                self._workload_endpoint(w, w.address, w.ports.get(port.name, target))
                for w in self.workload_entries_in(entry.namespace)
                if (dns or w.is_ip) and all(w.labels.get(k) == v for k, v in selector.items())
            ]
        return sorted(out, key=lambda e: (e.address, e.port))

    def _workload_endpoint(
        self, workload: WorkloadEntry, address: str, port: int
    ) -> ServiceEndpoint:
        return ServiceEndpoint(
            address=address,
            port=port,
            locality=Locality.parse(workload.locality),
            labels=workload.labels,
            service_account=workload.service_account,
            pod="",
            weight=workload.weight,
            workload_entry=f"{workload.namespace}/{workload.meta.name}",
            mesh_mtls=self.takes_mesh_mtls(workload.namespace, workload.labels, port),
        )

    def takes_mesh_mtls(self, namespace: str, labels: Mapping[str, str], port: int) -> bool:
        """Whether auto mTLS may use TLS to this workload port (istiod's mtlsChecker)."""
        if labels.get(TLS_MODE_LABEL) != ISTIO_TLS_MODE:
            return False
        return self.effective_mtls(namespace, labels).for_port(port) != MtlsMode.DISABLE

    def services_selecting(self, namespace: str, labels: Mapping[str, str]) -> list[Service]:
        """Services in `namespace` whose non-empty selector matches these workload labels."""
        return [
            s
            for s in self._selecting_by_namespace.get(namespace, ())
            if all(labels.get(k) == v for k, v in s.selector.items())
        ]


# Kinds indexed object by object (no registry-wide index reads them): a change of only these
# re-indexes just the changed objects (PushContext.derive).
_PER_OBJECT_KINDS = frozenset({"Pod", "Node", "Secret", "EndpointSlice", JWKS_KIND})


def _put(index: dict[Any, Any], key: Any, obj: Any) -> None:
    if obj is None:
        index.pop(key, None)
    else:
        index[key] = obj


def _export_key(dr: DestinationRule) -> frozenset[str]:
    """A rule's exportTo as a set, `.` as its namespace and the default as `*`."""
    if is_public(dr.export_to):
        return frozenset({"*"})
    return frozenset(dr.namespace if e == PRIVATE else e for e in dr.export_to)


def _host_matches(host: str, pattern: str) -> bool:
    """A host and a DestinationRule host: equal, or the pattern is `*` / `*.suffix`."""
    return (
        host == pattern
        or pattern == "*"
        or (pattern.startswith("*") and host.endswith(pattern[1:]))
    )


def _slice_port(eps: EndpointSlice, port: ServicePort) -> int | None:
    """The endpoint port serving `port`: EndpointSlice ports carry the Service port's name."""
    for candidate in eps.ports:
        if candidate.name == port.name:
            return candidate.port
    return None
