"""Prometheus metrics, named as istiod names them where istiod has one.

istiod's counters carry no `_total` suffix (`pilot_xds_pushes`), which prometheus_client always
adds, so counters are rendered here; gauges and histograms use prometheus_client as is.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, Histogram, generate_latest

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
_BYTES_BUCKETS = (1_000, 10_000, 100_000, 1_000_000, 4_000_000, 10_000_000, 40_000_000)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class CounterVec:
    """A counter with labels, exposed under exactly its name."""

    _all: list[CounterVec] = []

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        CounterVec._all.append(self)

    def inc(self, *values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[values] = self._values.get(values, 0.0) + amount

    def value(self, *values: str) -> float:
        with self._lock:
            return self._values.get(values, 0.0)

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        for values, count in items:
            labels = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(self.labels, values, strict=True)
            )
            lines.append(f"{self.name}{{{labels}}} {count}" if labels else f"{self.name} {count}")
        return "\n".join(lines) + "\n"


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    counters = "".join(c.render() for c in CounterVec._all).encode()
    return generate_latest() + counters, CONTENT_TYPE_LATEST


# Connected proxies, by Istio version of the proxy (istiod: pilot_xds).
XDS_CLIENTS = Gauge(
    "pilot_xds", "Number of endpoints connected to this pilot using XDS.", ["version"]
)
# ISTIO_VERSION comes from the client: only this many well-formed values get their own series.
VERSION_LABELS_MAX = 20
_VERSION = re.compile(r"\d+\.\d+(\.\d+)?([-.][\w.]+)?")
_version_counts: dict[str, int] = {}


def xds_client_connected(istio_version: str) -> str:
    """Count a connected proxy; returns the label it was counted under (for the disconnect)."""
    label = istio_version or "unknown"
    if label != "unknown" and (
        len(label) > 64
        or not _VERSION.fullmatch(label)
        or (label not in _version_counts and len(_version_counts) >= VERSION_LABELS_MAX)
    ):
        label = "other"
    _version_counts[label] = _version_counts.get(label, 0) + 1
    XDS_CLIENTS.labels(label).inc()
    return label


def xds_client_disconnected(label: str) -> None:
    """Undo `xds_client_connected`; a version no proxy runs any more frees its series."""
    left = _version_counts.get(label, 0) - 1
    if left > 0:
        _version_counts[label] = left
        XDS_CLIENTS.labels(label).dec()
        return
    _version_counts.pop(label, None)
    try:
        XDS_CLIENTS.remove(label)
    except KeyError:
        pass


PUSHES = CounterVec(
    "pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds.", ("type",)
)
REJECTS = CounterVec(
    "pilot_total_xds_rejects",
    "Total number of XDS responses from pilot rejected by proxy.",
    ("type",),
)
PUSH_TRIGGERS = CounterVec(
    "pilot_push_triggers",
    "Total number of times a push was triggered, labeled by reason.",
    ("type",),
)
CONVERGENCE = Histogram(
    "pilot_proxy_convergence_time",
    "Delay in seconds between config change and a proxy receiving all required configuration.",
    buckets=_SECONDS_BUCKETS,
)
DEBOUNCE = Histogram(
    "pilot_debounce_time",
    "Delay in seconds between the first config enters debouncing and the merged push request is "
    "pushed into the push queue.",
    buckets=_SECONDS_BUCKETS,
)
CONTEXT_INIT = Histogram(
    "pilot_pushcontext_init_seconds",
    "Total time in seconds Pilot takes to init pushContext.",
    buckets=_SECONDS_BUCKETS,
)
PUSH_TIME = Histogram(
    "pilot_xds_push_time",
    "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
    ["type"],
    buckets=_SECONDS_BUCKETS,
)
QUEUE_TIME = Histogram(
    "pilot_proxy_queue_time",
    "Time in seconds, a proxy is in the push queue before being dequeued.",
    buckets=_SECONDS_BUCKETS,
)
CONFIG_SIZE = Histogram(
    "pilot_xds_config_size_bytes",
    "Distribution of configuration sizes pushed to clients",
    ["type"],
    buckets=_BYTES_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "istiolite_push_queue_depth",
    "Proxies with a push pending (waiting for a push slot or sending).",
)
SEND_TIMEOUTS = CounterVec(
    "istiolite_xds_send_timeouts",
    "ADS streams closed because the peer did not take a response within the send timeout.",
    (),
)
INVALID_CONFIG = CounterVec(
    "istiolite_config_rejects",
    "Config files or objects rejected (does not parse, invalid object, duplicate), by reason.",
    ("reason",),
)
CACHE_ENTRIES = Gauge(
    "istiolite_resource_cache_entries",
    "Generated resources and derived values kept across pushes (istiod: xds cache size).",
)
CACHE_DROPPED = CounterVec(
    "istiolite_resource_cache_dropped",
    "Cached generated resources a config change made stale, by xDS type.",
    ("type",),
)
GENERATION_ERRORS = CounterVec(
    "istiolite_generation_errors",
    "Config objects left out of generated config because translating them raised, by kind "
    "(counted when first seen; /debug/configz lists the current ones).",
    ("kind",),
)
GENERATION_FAILURES = CounterVec(
    "istiolite_generation_failures",
    "Whole per-type generations that raised; the proxy kept its previous resources, by type.",
    ("type",),
)
# Citadel (istiod's security/pkg/server/ca/monitoring.go names).
CA_ROOT_EXPIRY = Gauge(
    "citadel_server_root_cert_expiry_timestamp",
    "The unix timestamp, in seconds, when Citadel root cert will expire.",
)
CSR_COUNT = CounterVec(
    "citadel_server_csr_count", "The number of CSRs received by Citadel server.", ()
)
CA_AUTHN_FAILURES = CounterVec(
    "citadel_server_authentication_failure_count",
    "The number of authentication failures.",
    (),
)
CERTS_ISSUED = CounterVec(
    "citadel_server_success_cert_issuance_count",
    "The number of certificates issuances that have succeeded.",
    (),
)
CSR_SIGN_ERRORS = CounterVec(
    "citadel_server_csr_sign_err_count",
    "The number of errors occurred when signing the CSR.",
    ("error",),
)

# Workload certificates delivered over SDS (xds/workload_certs.py).
WORKLOAD_IDENTITIES = Gauge(
    "istiolite_workload_identities",
    "Workload identities with a live ADS stream and a certificate kept for them.",
)
WORKLOAD_CERTS_ISSUED = CounterVec(
    "istiolite_workload_certs_issued",
    "Workload certificates issued for SDS (`default`), first ones and rotations.",
    (),
)
WORKLOAD_CERT_ROTATIONS = CounterVec(
    "istiolite_workload_cert_rotations",
    "Workload certificates replaced before expiry and pushed to the streams of their identity.",
    (),
)
WORKLOAD_CERT_FAILURES = CounterVec(
    "istiolite_workload_cert_failures",
    "Workload certificates the CA failed to issue (first issue or rotation).",
    (),
)
SDS_REFUSED = CounterVec(
    "istiolite_sds_refused",
    "ADS streams that asked for key material they may not receive, by reason.",
    ("reason",),
)
KUBE_EVENTS = CounterVec(
    "istiolite_kube_events",
    "Kubernetes objects added, changed or deleted as the informers handed them on, by kind.",
    ("kind",),
)
KUBE_WATCH_FAILURES = CounterVec(
    "istiolite_kube_watch_failures",
    "Kubernetes list/watch attempts that failed (retried with backoff), by kind.",
    ("kind",),
)

LEADER = Gauge(
    "istiolite_leader",
    "1 while this replica holds the leader-election Lease (and does the cluster writes)",
    ["lease"],
)
OPERATOR_WRITES = CounterVec(
    "istiolite_operator_writes_total",
    "Writes the leader made to the cluster, by kind and result (ok, conflict, error)",
    ("kind", "result"),
)

# Admission webhooks (webhooks/): istiod's galley_validation_* and sidecar_injection_* names.
VALIDATION_PASSED = CounterVec(
    "galley_validation_passed", "Resource is valid.", ("group", "version", "resource")
)
VALIDATION_FAILED = CounterVec(
    "galley_validation_failed",
    "Resource validation failed.",
    ("group", "version", "resource", "reason"),
)
WEBHOOK_HTTP_ERRORS = CounterVec(
    "galley_validation_http_error",
    "Admission requests the webhooks could not read (HTTP 4xx/5xx), by webhook and status.",
    ("webhook", "status"),
)
INJECTION_REQUESTS = CounterVec(
    "sidecar_injection_requests_total", "Total number of sidecar injection requests.", ()
)
INJECTION_SUCCESS = CounterVec(
    "sidecar_injection_success_total", "Total number of successful sidecar injection requests.", ()
)
INJECTION_SKIPPED = CounterVec(
    "sidecar_injection_skip_total", "Total number of skipped sidecar injection requests.", ()
)
INJECTION_FAILURES = CounterVec(
    "sidecar_injection_failure_total", "Total number of failed sidecar injection requests.", ()
)
