"""networking.istio.io DestinationRule: the host it applies to, its subsets (by pod labels) and
its traffic policies (load balancer, connection pool, outlier detection), validated field by field.

Translated: `loadBalancer` (simple, consistentHash with ringHash/maglev), `connectionPool` (tcp
maxConnections, connectTimeout, maxConnectionDuration, tcpKeepalive; http http1MaxPendingRequests,
http2MaxRequests, maxRequestsPerConnection, maxRetries, idleTimeout, h2UpgradePolicy,
useClientProtocol), `outlierDetection`, `tls` (DISABLE, SIMPLE, MUTUAL with files or
credentialName; ISTIO_MUTUAL with the mesh certificates, networking.cluster_mtls).
`loadBalancer.localityLbSetting` (enabled, distribute, failover, failoverPriority; checked as
istiod's ValidateLocalityLbSetting) is applied per proxy locality by the EDS generator.
Accepted and validated as a shape but not applied yet: the fields the schema marks unapplied
(`istiolite.model.schema`: `loadBalancer.warmupDurationSecs`, `tunnel`, `proxyProtocol`,
`connectionPool.tcp.idleTimeout`, `http.maxConcurrentStreams`, the outlier fields for
local-origin errors, …), reported from `ObjectMeta.unapplied`.

Merge semantics are Istio's (`MergeTrafficPolicy`): a subset's policy overrides the top-level one
setting by setting (a whole `connectionPool`, `loadBalancer`, `outlierDetection`, `tls`); a
matching `portLevelSettings` entry replaces all of those settings for that port (it does not
inherit: a port-level `tls` replaces the whole `tls`, and a port entry without one has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import UINT32_MAX as UINT32_MAX  # re-exported
from istiolite.model.validation import (
    ValidationError,
    check_header_text,
    clip,
    optional_bool,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)
from istiolite.model.virtualservice import parse_duration, validate_host
from istiolite.model.visibility import parse_export_to

# Envoy's bounds: ring_hash minimum_ring_size (lte 8M, its maximum_ring_size default) and maglev
# table_size (lte 5000011, and prime).
MAX_RING_SIZE = 8_388_608
MAX_MAGLEV_TABLE = 5_000_011
_INT32_MAX = 2147483647
SIMPLE_LB = frozenset(
    {"UNSPECIFIED", "LEAST_CONN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN"}
)
H2_UPGRADE_POLICIES = frozenset({"DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"})
TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


@dataclass(frozen=True, slots=True)
class HttpCookie:
    name: str
    path: str = ""
    ttl: float | None = None  # seconds; 0 means a session cookie


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """One hash key (or none) and the hashing algorithm: "ring_hash" (default) or "maglev"."""

    http_header_name: str = ""
    http_cookie: HttpCookie | None = None
    use_source_ip: bool = False
    http_query_parameter_name: str = ""
    algorithm: str = "ring_hash"
    minimum_ring_size: int = 0  # ringHash.minimumRingSize or the deprecated top-level field
    maglev_table_size: int = 0
    explicit_algorithm: bool = False  # ringHash/maglev given (istiod then keeps Envoy defaults)


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """`distribute[]`: proxies in `origin` send `weights` percent to each locality (in order)."""

    origin: str  # `from`: "region[/zone[/subzone]]", "*" allowed as the last part
    weights: tuple[tuple[str, int], ...]  # `to`: locality -> weight (1..100, sum 100)


@dataclass(frozen=True, slots=True)
class LocalityFailover:
    """`failover[]`: proxies in region `origin` fail over to region `target` (before others)."""

    origin: str
    target: str


@dataclass(frozen=True, slots=True)
class LocalityLbSetting:
    """`loadBalancer.localityLbSetting`. `enabled: false` turns locality load balancing off for
    the destination, mesh default included; unset means on."""

    enabled: bool | None = None
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()  # label keys, or "key=value" (value fixed)


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    simple: str = ""
    consistent_hash: ConsistentHash | None = None
    locality_lb_setting: LocalityLbSetting | None = None


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    probes: int | None = None
    time: float | None = None
    interval: float | None = None


@dataclass(frozen=True, slots=True)
class TcpSettings:
    max_connections: int = 0  # 0 = unset (istiod's default applies)
    connect_timeout: float | None = None
    max_connection_duration: float | None = None
    tcp_keepalive: TcpKeepalive | None = None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    http1_max_pending_requests: int = 0
    http2_max_requests: int = 0
    max_requests_per_connection: int = 0
    max_retries: int = 0
    idle_timeout: float | None = None
    h2_upgrade_policy: str = "DEFAULT"
    use_client_protocol: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    tcp: TcpSettings | None = None
    http: HttpSettings | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int = 0
    min_health_percent: int = 0


@dataclass(frozen=True, slots=True)
class ClientTls:
    """`trafficPolicy.tls` (Istio's ClientTLSSettings). File fields are paths on the proxy's host;
    `credential_name` names a secret the proxy fetches over SDS instead."""

    mode: str = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool = False

    def __repr__(self) -> str:
        # The key is a path, but keep anything key-like out of reprs that may end up in logs.
        key = "<set>" if self.private_key else ""
        return (
            f"ClientTls(mode={self.mode!r}, client_certificate={self.client_certificate!r}, "
            f"private_key={key!r}, ca_certificates={self.ca_certificates!r}, "
            f"ca_crl={self.ca_crl!r}, credential_name={self.credential_name!r}, "
            f"subject_alt_names={self.subject_alt_names!r}, sni={self.sni!r}, "
            f"insecure_skip_verify={self.insecure_skip_verify!r})"
        )


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    port: int
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls | None = None


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    tls: ClientTls | None = None

    def for_port(self, port: int | None) -> TrafficPolicy:
        """This policy with the matching port-level entry applied (which replaces, not merges)."""
        flat = TrafficPolicy(
            self.load_balancer, self.connection_pool, self.outlier_detection, tls=self.tls
        )
        if port is None:
            return flat
        for p in self.port_level_settings:
            if p.port == port:
                return _from_port(p)
        return flat


def _from_port(p: PortTrafficPolicy) -> TrafficPolicy:
    return TrafficPolicy(p.load_balancer, p.connection_pool, p.outlier_detection, tls=p.tls)


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: dict[str, str]
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    meta: ObjectMeta
    host: str
    subsets: tuple[Subset, ...]
    export_to: tuple[str, ...]
    traffic_policy: TrafficPolicy | None = field(default=None)
    # `spec.workloadSelector.matchLabels`: the rule applies only to sidecars of its namespace
    # with these labels. None: no selector (every workload it is exported to).
    workload_selector: dict[str, str] | None = None

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a workload with `labels` is one this rule's selector picks (False: none)."""
        selector = self.workload_selector
        return selector is not None and all(labels.get(k) == v for k, v in selector.items())

    def merged_with(self, other: DestinationRule) -> DestinationRule:
        """istiod's mergeDestinationRule: `other`'s subsets appended (a name already defined
        is ignored: the first wins), its top-level trafficPolicy used only if this rule has
        none; everything else (name, exportTo, selector) stays this rule's."""
        names = {s.name for s in self.subsets}
        extra = tuple(s for s in other.subsets if s.name not in names)
        policy = self.traffic_policy if self.traffic_policy is not None else other.traffic_policy
        if not extra and policy is self.traffic_policy:
            return self
        return replace(self, subsets=self.subsets + extra, traffic_policy=policy)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def policy_for(self, subset: str = "", port: int | None = None) -> TrafficPolicy | None:
        """The effective policy for one cluster, merged as istiod's MergeTrafficPolicy."""
        return merge_traffic_policy(
            self.traffic_policy,
            (s.traffic_policy if (s := self.subset(subset)) else None) if subset else None,
            port,
        )

    def unapplied(self) -> list[tuple[str, str]]:
        """(field path, message) for settings this rule asks for that are valid but that istiolite
        does not translate yet, so that they can be reported instead of silently ignored."""
        return self._failover_without_outlier_detection()

    def _failover_without_outlier_detection(self) -> list[tuple[str, str]]:
        """As istiod's validation warns: `failover` / `failoverPriority` only act with outlier
        detection (without it Envoy never sees a host fail, so never leaves priority 0). A subset
        inherits the top-level outlierDetection; a port-level entry has only its own."""
        top = self.traffic_policy
        levels: list[tuple[str, LoadBalancer | None, bool]] = []
        for where, policy, inherited in [
            ("spec.trafficPolicy", top, False),
            *[
                (
                    f"spec.subsets[{i}].trafficPolicy",
                    s.traffic_policy,
                    top is not None and top.outlier_detection is not None,
                )
                for i, s in enumerate(self.subsets)
            ],
        ]:
            if policy is None:
                continue
            levels.append(
                (where, policy.load_balancer, inherited or policy.outlier_detection is not None)
            )
            levels += [
                (
                    f"{where}.portLevelSettings[{i}]",
                    p.load_balancer,
                    p.outlier_detection is not None,
                )
                for i, p in enumerate(policy.port_level_settings)
            ]
        out = []
        for where, lb, outlier in levels:
            setting = lb.locality_lb_setting if lb else None
            if setting is None or outlier or setting.enabled is False:
                continue
            if setting.failover or setting.failover_priority:
                field_name = "failover" if setting.failover else "failoverPriority"
                out.append(
                    (
                        f"{where}.loadBalancer.localityLbSetting.{field_name}",
                        "outlier detection policy must be provided for failover: without "
                        "outlierDetection this setting has no effect",
                    )
                )
        return out


def merge_traffic_policy(
    original: TrafficPolicy | None, subset: TrafficPolicy | None, port: int | None
) -> TrafficPolicy | None:
    """Top-level (with its port-level entry) ← subset settings ← subset's port-level entry."""
    base = original.for_port(port) if original else None
    if subset is None:
        return base
    merged = TrafficPolicy(
        load_balancer=subset.load_balancer or (base.load_balancer if base else None),
        connection_pool=subset.connection_pool or (base.connection_pool if base else None),
        outlier_detection=subset.outlier_detection or (base.outlier_detection if base else None),
        tls=subset.tls or (base.tls if base else None),
    )
    if port is not None:
        for p in subset.port_level_settings:
            if p.port == port:
                return _from_port(p)
    return merged


def parse_destination_rule(raw: dict[str, Any]) -> DestinationRule:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    host = validate_host(spec.get("host"), "spec.host")
    subsets: list[Subset] = []
    seen: set[str] = set()
    for i, item in enumerate(require_list(spec.get("subsets"), "spec.subsets")):
        where = f"spec.subsets[{i}]"
        s = require_mapping(item, where)
        name = require_str(s.get("name"), f"{where}.name", required=True)
        if name in seen:
            raise ValidationError(f"{where}.name", f"duplicate subset {name!r}")
        seen.add(name)
        labels = require_string_map(s.get("labels"), f"{where}.labels")
        policy = _traffic_policy(s.get("trafficPolicy"), f"{where}.trafficPolicy")
        subsets.append(Subset(name=name, labels=labels, traffic_policy=policy))
    export_to = parse_export_to(spec.get("exportTo"), "spec.exportTo", meta.namespace)
    selector: dict[str, str] | None = None
    if spec.get("workloadSelector") is not None:
        where = "spec.workloadSelector"
        raw_selector = require_mapping(spec["workloadSelector"], where)
        _known(raw_selector, where, {"matchLabels"})
        selector = require_string_map(raw_selector.get("matchLabels"), f"{where}.matchLabels")
        for key, value in selector.items():
            if not key:
                raise ValidationError(
                    f"{where}.matchLabels", "an empty key is not supported in a selector"
                )
            if "*" in key or "*" in value:
                raise ValidationError(
                    f"{where}.matchLabels.{key}", "wildcards are not supported in a selector"
                )
    return DestinationRule(
        meta=meta,
        host=host,
        subsets=tuple(subsets),
        export_to=export_to,
        traffic_policy=_traffic_policy(spec.get("trafficPolicy"), "spec.trafficPolicy"),
        workload_selector=selector,
    )


# --- parsing helpers ----------------------------------------------------------------------------


def _known(m: dict[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(m) - allowed)
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", "unknown field")


def _int(value: Any, where: str, *, maximum: int = _INT32_MAX, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(where, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValidationError(where, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _duration(value: Any, where: str, *, max_seconds: int | None = None) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value, where)
    if seconds < 0.001:
        raise ValidationError(where, f"must be at least 1ms, got {value!r}")
    if max_seconds is not None and seconds > max_seconds:
        raise ValidationError(where, f"must be at most {max_seconds}s, got {clip(value)!r}")
    return seconds


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _traffic_policy(raw: Any, where: str) -> TrafficPolicy | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    _known(
        m,
        where,
        {
            "loadBalancer",
            "connectionPool",
            "outlierDetection",
            "portLevelSettings",
            "tls",
            "tunnel",
            "proxyProtocol",
            "retryBudget",
        },
    )
    ports: list[PortTrafficPolicy] = []
    seen: set[int] = set()
    for i, item in enumerate(
        require_list(m.get("portLevelSettings"), f"{where}.portLevelSettings")
    ):
        pw = f"{where}.portLevelSettings[{i}]"
        p = require_mapping(item, pw)
        _known(p, pw, {"port", "loadBalancer", "connectionPool", "outlierDetection", "tls"})
        selector = require_mapping(p.get("port"), f"{pw}.port")
        if "number" not in selector:
            raise ValidationError(f"{pw}.port.number", "is required")
        _known(selector, f"{pw}.port", {"number"})
        number = require_port(selector["number"], f"{pw}.port.number")
        if number in seen:
            raise ValidationError(f"{pw}.port.number", f"duplicate port level setting {number}")
        seen.add(number)
        ports.append(
            PortTrafficPolicy(
                port=number,
                load_balancer=_load_balancer(p.get("loadBalancer"), f"{pw}.loadBalancer"),
                connection_pool=_connection_pool(p.get("connectionPool"), f"{pw}.connectionPool"),
                outlier_detection=_outlier(p.get("outlierDetection"), f"{pw}.outlierDetection"),
                tls=_client_tls(p.get("tls"), f"{pw}.tls"),
            )
        )
    return TrafficPolicy(
        load_balancer=_load_balancer(m.get("loadBalancer"), f"{where}.loadBalancer"),
        connection_pool=_connection_pool(m.get("connectionPool"), f"{where}.connectionPool"),
        outlier_detection=_outlier(m.get("outlierDetection"), f"{where}.outlierDetection"),
        port_level_settings=tuple(ports),
        tls=_client_tls(m.get("tls"), f"{where}.tls"),
    )


_TLS_FIELDS = {
    "mode",
    "clientCertificate",
    "privateKey",
    "caCertificates",
    "caCrl",
    "credentialName",
    "subjectAltNames",
    "sni",
    "insecureSkipVerify",
}


def _client_tls(raw: Any, where: str) -> ClientTls | None:
    """ClientTLSSettings, checked as istiod's ValidateTLS. Error messages never echo the value of
    a file or credential field (a private key pasted inline must not reach a log)."""
    if raw is None:
        return None
    m = require_mapping(raw, where)
    _known(m, where, _TLS_FIELDS)
    mode = require_str(m.get("mode"), f"{where}.mode") or "DISABLE"
    if mode not in TLS_MODES:
        raise ValidationError(f"{where}.mode", f"{mode!r} is not one of {', '.join(TLS_MODES)}")
    files = {
        key: require_str(m.get(key), f"{where}.{key}")
        for key in ("clientCertificate", "privateKey", "caCertificates", "caCrl", "credentialName")
    }
    sans = []
    for i, san in enumerate(require_list(m.get("subjectAltNames"), f"{where}.subjectAltNames")):
        sans.append(require_str(san, f"{where}.subjectAltNames[{i}]", required=True))
    insecure = optional_bool(m.get("insecureSkipVerify"), f"{where}.insecureSkipVerify") or False
    credential = files["credentialName"]

    def forbid(keys: tuple[str, ...], why: str) -> None:
        for key in keys:
            if files.get(key) or (key == "subjectAltNames" and sans):
                raise ValidationError(f"{where}.{key}", f"must not be set {why}")

    if insecure and mode == "SIMPLE":
        forbid(
            ("caCertificates", "credentialName", "subjectAltNames"),
            "when insecureSkipVerify is true",
        )
    if insecure and mode == "MUTUAL":
        forbid(("caCertificates", "subjectAltNames"), "when insecureSkipVerify is true")
    if mode in ("SIMPLE", "MUTUAL") and credential:
        forbid(
            ("clientCertificate", "privateKey", "caCertificates", "caCrl"),
            "when credentialName is set (the secret holds the certificates)",
        )
    if mode == "MUTUAL" and not credential:
        for key in ("clientCertificate", "privateKey"):
            if not files[key]:
                raise ValidationError(
                    f"{where}.{key}", "is required for mode MUTUAL unless credentialName is set"
                )
    if mode == "ISTIO_MUTUAL":
        forbid(
            ("clientCertificate", "privateKey", "caCertificates", "caCrl", "credentialName"),
            "with mode ISTIO_MUTUAL (the mesh's own certificates are used)",
        )
    return ClientTls(
        mode=mode,
        client_certificate=files["clientCertificate"],
        private_key=files["privateKey"],
        ca_certificates=files["caCertificates"],
        ca_crl=files["caCrl"],
        credential_name=credential,
        subject_alt_names=tuple(sans),
        sni=require_str(m.get("sni"), f"{where}.sni"),
        insecure_skip_verify=insecure,
    )


def _load_balancer(raw: Any, where: str) -> LoadBalancer | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    _known(
        m,
        where,
        {
            "simple",
            "consistentHash",
            "localityLbSetting",
            "warmupDurationSecs",
            "warmup",
            "backendUtilization",
            "zoneAwareLbSetting",
        },
    )
    if "simple" in m and "consistentHash" in m:
        raise ValidationError(where, "only one of simple or consistentHash may be set")
    simple = ""
    if "simple" in m:
        simple = require_str(m["simple"], f"{where}.simple", required=True)
        if simple not in SIMPLE_LB:
            raise ValidationError(
                f"{where}.simple", f"{simple!r} is not one of {', '.join(sorted(SIMPLE_LB))}"
            )
    if m.get("warmupDurationSecs") is not None:
        _duration(m["warmupDurationSecs"], f"{where}.warmupDurationSecs")
    if m.get("warmup") is not None:
        _warmup(m["warmup"], f"{where}.warmup")
    return LoadBalancer(
        simple=simple,
        consistent_hash=_consistent_hash(m.get("consistentHash"), f"{where}.consistentHash"),
        locality_lb_setting=_locality_lb_setting(
            m.get("localityLbSetting"), f"{where}.localityLbSetting"
        ),
    )


def _warmup(raw: Any, where: str) -> None:
    """WarmupConfiguration, bounded as istiod bounds it (Envoy's slow start)."""
    w = require_mapping(raw, where)
    if w.get("duration") is None:
        raise ValidationError(f"{where}.duration", "is required")
    _duration(w["duration"], f"{where}.duration")
    for key, low, high in (("minimumPercent", 0.0, 100.0), ("aggression", 1.0, None)):
        value = w.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValidationError(f"{where}.{key}", f"must be a number, got {clip(str(value))!r}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ValidationError(f"{where}.{key}", f"must be {bounds}, got {value}")


# Topology labels that `failover` already orders by: istiod refuses them in failoverPriority
# next to a `failover` list.
_TOPOLOGY_LABELS = frozenset(
    {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}
)


def _locality_lb_setting(raw: Any, where: str) -> LocalityLbSetting | None:
    """LocalityLoadBalancerSetting, checked as istiod's ValidateLocalityLbSetting."""
    if raw is None:
        return None
    m = require_mapping(raw, where)
    _known(m, where, {"enabled", "distribute", "failover", "failoverPriority"})
    enabled = optional_bool(m.get("enabled"), f"{where}.enabled")
    distribute_raw = require_list(m.get("distribute"), f"{where}.distribute")
    failover_raw = require_list(m.get("failover"), f"{where}.failover")
    if distribute_raw and failover_raw:
        raise ValidationError(
            f"{where}.failover", "can not simultaneously specify 'distribute' and 'failover'"
        )
    priority: list[str] = []
    for i, item in enumerate(require_list(m.get("failoverPriority"), f"{where}.failoverPriority")):
        label = require_str(item, f"{where}.failoverPriority[{i}]")
        if failover_raw and label in _TOPOLOGY_LABELS:
            raise ValidationError(
                f"{where}.failoverPriority[{i}]",
                f"can not simultaneously set 'failover' and topology label {label!r} in "
                "'failoverPriority'",
            )
        priority.append(label)
    distribute: list[LocalityDistribute] = []
    for i, item in enumerate(distribute_raw):
        dw = f"{where}.distribute[{i}]"
        d = require_mapping(item, dw)
        _known(d, dw, {"from", "to"})
        origin = require_str(d.get("from"), f"{dw}.from")
        to = require_mapping(d.get("to"), f"{dw}.to")
        weights: list[tuple[str, int]] = []
        for locality, weight in to.items():
            if not isinstance(locality, str):
                raise ValidationError(f"{dw}.to", f"locality {locality!r} must be a string")
            checked = _int(weight, f"{dw}.to.{locality}", maximum=UINT32_MAX)
            if checked is None or not 1 <= checked <= 100:
                raise ValidationError(
                    f"{dw}.to.{locality}",
                    f"locality weight must be in range [1, 100], got {checked}",
                )
            weights.append((locality, checked))
        total = sum(w for _, w in weights)
        if total != 100:
            raise ValidationError(f"{dw}.to", f"total locality weight {total} != 100")
        _check_localities([loc for loc, _ in weights], f"{dw}.to")
        distribute.append(LocalityDistribute(origin=origin, weights=tuple(weights)))
    _check_localities([d.origin for d in distribute], f"{where}.distribute", "from")
    failover: list[LocalityFailover] = []
    for i, item in enumerate(failover_raw):
        fw = f"{where}.failover[{i}]"
        f = require_mapping(item, fw)
        _known(f, fw, {"from", "to"})
        origin = require_str(f.get("from"), f"{fw}.from")
        target = require_str(f.get("to"), f"{fw}.to")
        if origin == target:
            raise ValidationError(
                f"{fw}.to", "locality lb failover settings must specify different regions"
            )
        for key, value in (("from", origin), ("to", target)):
            if "/" in value:
                raise ValidationError(f"{fw}.{key}", "locality lb failover only specify region")
            if "*" in value:
                raise ValidationError(
                    f"{fw}.{key}", "locality lb failover region should not contain '*' wildcard"
                )
        failover.append(LocalityFailover(origin=origin, target=target))
    return LocalityLbSetting(
        enabled=enabled,
        distribute=tuple(distribute),
        failover=tuple(failover),
        failover_priority=tuple(priority),
    )


def _check_localities(localities: list[str], where: str, key: str = "") -> None:
    """istiod's validateLocalities: `region[/zone[/subzone]]` with no empty part, at most one
    `*` and only at the end, and no locality overlapping one listed before it. `key`: the field
    of each list entry the localities come from (errors then name the entry)."""
    seen: dict[str, dict[str, set[str]]] = {}

    def fail(index: int, message: str) -> None:
        field_path = f"{where}[{index}].{key}" if key else f"{where}.{localities[index]}"
        raise ValidationError(field_path, message)

    for index, locality in enumerate(localities):
        stars = locality.count("*")
        if stars and (stars > 1 or not locality.endswith("*")):
            fail(index, f"locality {locality!r}: wildcard '*' may appear once, at the end")
        overlap = f"locality {locality!r} overlaps with one specified before it"
        if "*" in seen:
            fail(index, overlap)
        parts = locality.split("/", 2)
        if any(not part for part in parts):
            fail(index, f"locality {locality!r} must not contain empty region/zone/subzone info")
        region = parts[0]
        zones = seen.get(region)
        if len(parts) == 1:
            if zones is not None:
                fail(index, overlap)
            seen[region] = {"*": {"*"}}
        elif len(parts) == 2:
            zone = parts[1]
            if zones is not None and ("*" in zones or zone in zones):
                fail(index, overlap)
            seen.setdefault(region, {})[zone] = {"*"}
        else:
            zone, subzone = parts[1], parts[2]
            if zones is not None and "*" in zones:
                fail(index, overlap)
            subzones = (zones or {}).get(zone)
            if subzones is not None and ("*" in subzones or subzone in subzones):
                fail(index, overlap)
            seen.setdefault(region, {}).setdefault(zone, set()).add(subzone)


def _consistent_hash(raw: Any, where: str) -> ConsistentHash | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    keys = ["httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"]
    _known(m, where, {*keys, "ringHash", "maglev", "minimumRingSize"})
    given = [k for k in keys if k in m]
    if len(given) > 1:
        raise ValidationError(f"{where}.{given[1]}", f"only one hash key may be set ({given[0]})")
    if "ringHash" in m and "maglev" in m:
        raise ValidationError(f"{where}.maglev", "only one of ringHash or maglev may be set")
    cookie = None
    if "httpCookie" in m:
        cw = f"{where}.httpCookie"
        c = require_mapping(m["httpCookie"], cw)
        _known(c, cw, {"name", "path", "ttl", "attributes"})
        if c.get("ttl") is None:
            raise ValidationError(f"{cw}.ttl", "is required")
        ttl = parse_duration(c["ttl"], f"{cw}.ttl")
        cookie = HttpCookie(
            name=require_str(c.get("name"), f"{cw}.name", required=True),
            path=require_str(c.get("path"), f"{cw}.path"),
            ttl=ttl,
        )
    use_source_ip = optional_bool(m.get("useSourceIp"), f"{where}.useSourceIp") or False
    algorithm, min_ring, table = "ring_hash", 0, 0
    legacy = _int(m.get("minimumRingSize"), f"{where}.minimumRingSize", maximum=MAX_RING_SIZE)
    if "ringHash" in m:
        rw = f"{where}.ringHash"
        r = require_mapping(m["ringHash"], rw)
        _known(r, rw, {"minimumRingSize"})
        if legacy:
            raise ValidationError(
                f"{where}.minimumRingSize", "is deprecated; use ringHash.minimumRingSize alone"
            )
        min_ring = (
            _int(r.get("minimumRingSize"), f"{rw}.minimumRingSize", maximum=MAX_RING_SIZE) or 0
        )
    elif "maglev" in m:
        mw = f"{where}.maglev"
        g = require_mapping(m["maglev"], mw)
        _known(g, mw, {"tableSize"})
        algorithm = "maglev"
        table = _int(g.get("tableSize"), f"{mw}.tableSize", maximum=MAX_MAGLEV_TABLE) or 0
        if table and not _is_prime(table):
            raise ValidationError(f"{mw}.tableSize", f"must be a prime number, got {table}")
    else:
        min_ring = legacy or 0
    header = require_str(m.get("httpHeaderName"), f"{where}.httpHeaderName")
    check_header_text(header, f"{where}.httpHeaderName", "header name")
    return ConsistentHash(
        http_header_name=header,
        http_cookie=cookie,
        use_source_ip=use_source_ip,
        http_query_parameter_name=require_str(
            m.get("httpQueryParameterName"), f"{where}.httpQueryParameterName"
        ),
        algorithm=algorithm,
        minimum_ring_size=min_ring,
        maglev_table_size=table,
        explicit_algorithm="ringHash" in m or "maglev" in m,
    )


def _connection_pool(raw: Any, where: str) -> ConnectionPool | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    _known(m, where, {"tcp", "http"})
    if m.get("tcp") is None and m.get("http") is None:
        raise ValidationError(where, "must set tcp or http settings")
    tcp = http = None
    if m.get("tcp") is not None:
        tw = f"{where}.tcp"
        t = require_mapping(m["tcp"], tw)
        _known(
            t,
            tw,
            {
                "maxConnections",
                "connectTimeout",
                "tcpKeepalive",
                "maxConnectionDuration",
                "idleTimeout",
            },
        )
        keepalive = None
        if t.get("tcpKeepalive") is not None:
            kw = f"{tw}.tcpKeepalive"
            k = require_mapping(t["tcpKeepalive"], kw)
            _known(k, kw, {"probes", "time", "interval"})
            keepalive = TcpKeepalive(
                probes=_int(k.get("probes"), f"{kw}.probes", maximum=UINT32_MAX),
                # Envoy takes these in whole seconds, as uint32s.
                time=_duration(k.get("time"), f"{kw}.time", max_seconds=UINT32_MAX),
                interval=_duration(k.get("interval"), f"{kw}.interval", max_seconds=UINT32_MAX),
            )
        _duration(t.get("idleTimeout"), f"{tw}.idleTimeout")
        tcp = TcpSettings(
            max_connections=_int(t.get("maxConnections"), f"{tw}.maxConnections") or 0,
            connect_timeout=_duration(t.get("connectTimeout"), f"{tw}.connectTimeout"),
            max_connection_duration=_duration(
                t.get("maxConnectionDuration"), f"{tw}.maxConnectionDuration"
            ),
            tcp_keepalive=keepalive,
        )
    if m.get("http") is not None:
        hw = f"{where}.http"
        h = require_mapping(m["http"], hw)
        _known(
            h,
            hw,
            {
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "idleTimeout",
                "h2UpgradePolicy",
                "useClientProtocol",
                "maxConcurrentStreams",
                "http2KeepAlive",
            },
        )
        if h.get("http2KeepAlive") is not None:
            kw = f"{hw}.http2KeepAlive"
            ping = require_mapping(h["http2KeepAlive"], kw)
            _known(ping, kw, {"interval", "timeout"})
            _duration(ping.get("interval"), f"{kw}.interval")
            _duration(ping.get("timeout"), f"{kw}.timeout")
        policy = require_str(h.get("h2UpgradePolicy"), f"{hw}.h2UpgradePolicy") or "DEFAULT"
        if policy not in H2_UPGRADE_POLICIES:
            raise ValidationError(
                f"{hw}.h2UpgradePolicy",
                f"{policy!r} is not one of {', '.join(sorted(H2_UPGRADE_POLICIES))}",
            )
        _int(h.get("maxConcurrentStreams"), f"{hw}.maxConcurrentStreams")

        def n(key: str) -> int:
            return _int(h.get(key), f"{hw}.{key}") or 0

        http = HttpSettings(
            http1_max_pending_requests=n("http1MaxPendingRequests"),
            http2_max_requests=n("http2MaxRequests"),
            max_requests_per_connection=n("maxRequestsPerConnection"),
            max_retries=n("maxRetries"),
            idle_timeout=_duration(h.get("idleTimeout"), f"{hw}.idleTimeout"),
            h2_upgrade_policy=policy,
            use_client_protocol=optional_bool(h.get("useClientProtocol"), f"{hw}.useClientProtocol")
            or False,
        )
    return ConnectionPool(tcp=tcp, http=http)


def _outlier(raw: Any, where: str) -> OutlierDetection | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    _known(
        m,
        where,
        {
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
            "minHealthPercent",
            "consecutiveErrors",
            "splitExternalLocalOriginErrors",
            "consecutiveLocalOriginFailures",
            "outlierDetectionHttpErrorCodes",
        },
    )
    optional_bool(
        m.get("splitExternalLocalOriginErrors"), f"{where}.splitExternalLocalOriginErrors"
    )
    _int(m.get("consecutiveLocalOriginFailures"), f"{where}.consecutiveLocalOriginFailures")
    _int(m.get("consecutiveErrors"), f"{where}.consecutiveErrors")
    return OutlierDetection(
        consecutive_5xx_errors=_int(
            m.get("consecutive5xxErrors"), f"{where}.consecutive5xxErrors", maximum=UINT32_MAX
        ),
        consecutive_gateway_errors=_int(
            m.get("consecutiveGatewayErrors"),
            f"{where}.consecutiveGatewayErrors",
            maximum=UINT32_MAX,
        ),
        interval=_duration(m.get("interval"), f"{where}.interval"),
        base_ejection_time=_duration(m.get("baseEjectionTime"), f"{where}.baseEjectionTime"),
        max_ejection_percent=_int(
            m.get("maxEjectionPercent"), f"{where}.maxEjectionPercent", maximum=100
        )
        or 0,
        min_health_percent=_int(m.get("minHealthPercent"), f"{where}.minHealthPercent", maximum=100)
        or 0,
    )
