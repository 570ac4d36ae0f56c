"""pilot-agent's calls to istiod, replayed: what Istio's sidecar agent (istio/proxyv2, Istio
1.22+) and the Envoy it bootstraps send to `istiod.istio-system.svc:15012`, so that istiolite can
be checked against them without the Go binary (which cannot be obtained here).

Facts carried over from Istio's source (no code):

- Transport (pilot/pkg/grpc/tls.go): TLS >= 1.2, the root from `/var/run/secrets/istio/
  root-cert.pem` (the `istio-ca-root-cert` ConfigMap, key `root-cert.pem`), server name = the
  host of the CA / discovery address (`istiod.istio-system.svc`). Asked for a client
  certificate, the agent in a pod sends none (its GetClientCertificate returns an empty one).
- Every call carries `authorization: Bearer <projected token, audience istio-ca>` (the default
  token provider's per-RPC credentials) and the `ClusterID` header (gRPC lowercases it to
  `clusterid`) naming the pod's cluster.
- CreateCertificate (security/pkg/nodeagent/caclient/providers/citadel): the request's
  `metadata` struct holds `CertSigner` (empty unless a signer is configured),
  `validity_duration` is SECRET_TTL (24h); the chain must have more than one element.
- The CSR (security/pkg/pki/util/generate_csr.go): RSA 2048 by default, ECDSA P-256 with
  ECC_SIGNATURE_ALGORITHM=ECDSA; subject `O=` (one empty organization); one critical SAN
  extension holding the URI `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
- ADS (pkg/istio-agent/xds_proxy_delta.go): Delta by default. Envoy's requests are forwarded;
  after Envoy's first LDS request the agent adds, on the same stream and without a node, a
  NameTable request (DNS capture on) and a ProxyConfig request (PROXY_CONFIG_XDS_AGENT on).
  An empty answer to either is dropped without an ACK; a non-empty one is ACKed by the agent.
- The node (pkg/bootstrap/config.go, pkg/model/proxy.go): the id
  `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`, cluster `<app>.<ns>`, metadata with the
  shapes of Istio's NodeMetadata JSON: strings, `INSTANCE_IPS` comma-joined, `LABELS` /
  `ANNOTATIONS` maps, `PROXY_CONFIG` the ProxyConfig as JSON, `POD_PORTS` a JSON string,
  `ENVOY_*_PORT` numbers, `PILOT_SAN` a list. Envoy sends it on the first request only
  (`set_node_on_first_message_only`).
- Readiness (pilot-agent's :15021/healthz/ready): Envoy has accepted a CDS and an LDS update.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from istiolite import type_urls
from istiolite._generated.istio.v1.auth import ca_pb2

ISTIOD_SAN = "istiod.istio-system.svc"
CREATE_CERTIFICATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
ISTIO_VERSION = "1.24.3"
ENVOY_VERSION = (1, 32, 3)
SECRET_TTL = 86400  # SECRET_TTL's default, 24h
TIMEOUT = 20.0
CDS, EDS, LDS, RDS = type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.ROUTE
NAME_TABLE, PROXY_CONFIG = type_urls.NAME_TABLE, type_urls.PROXY_CONFIG
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." + (
    "HttpConnectionManager"
)


@dataclass(frozen=True)
class Pod:
    """The pod the agent runs in, as the injector's environment describes it."""

    name: str
    namespace: str
    service_account: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    trust_domain: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    domain: str = "cluster.local"
    container_port: int = 8080

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def node_id(self) -> str:
        return f"sidecar~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.{self.domain}"

    @property
    def app(self) -> str:
        return self.labels.get("app", self.name)


def proxy_config(discovery_address: str) -> dict[str, Any]:
    """The injected PROXY_CONFIG (mesh defaultConfig), as protojson writes it."""
    return {
        "configPath": "./etc/istio/proxy",
        "binaryPath": "/usr/local/bin/envoy",
        "serviceCluster": "istio-proxy",
        "drainDuration": "45s",
        "discoveryAddress": discovery_address,
        "proxyAdminPort": 15000,
        "controlPlaneAuthPolicy": "MUTUAL_TLS",
        "statNameLength": 189,
        "statusPort": 15020,
        "terminationDrainDuration": "5s",
        "proxyMetadata": {"ISTIO_DELTA_XDS": "true"},
    }


def node_metadata(pod: Pod, *, dns_capture: bool = False) -> dict[str, Any]:
    """The node metadata pilot-agent writes into Envoy's bootstrap for an injected pod."""
    meta: dict[str, Any] = {
        "ANNOTATIONS": {
            "kubectl.kubernetes.io/default-container": pod.app,
            "sidecar.istio.io/status": json.dumps(
                {"initContainers": ["istio-init"], "containers": ["istio-proxy"]}
            ),
        },
        "APP_CONTAINERS": pod.app,
        "CLUSTER_ID": pod.cluster_id,
        "ENVOY_PROMETHEUS_PORT": 15090,
        "ENVOY_STATUS_PORT": 15021,
        "INSTANCE_IPS": pod.ip,
        "INTERCEPTION_MODE": "REDIRECT",
        "ISTIO_PROXY_SHA": "0123456789abcdef0123456789abcdef01234567",
        "ISTIO_VERSION": ISTIO_VERSION,
        "LABELS": {
            **pod.labels,
            "security.istio.io/tlsMode": "istio",
            "service.istio.io/canonical-name": pod.app,
            "service.istio.io/canonical-revision": pod.labels.get("version", "latest"),
        },
        "MESH_ID": pod.trust_domain,
        "METADATA_DISCOVERY": "false",
        "NAME": pod.name,
        "NAMESPACE": pod.namespace,
        "NODE_NAME": "worker-1",
        "OWNER": f"kubernetes://apis/apps/v1/namespaces/{pod.namespace}/deployments/{pod.app}",
        "PILOT_SAN": [ISTIOD_SAN],
        "POD_PORTS": json.dumps(
            [{"name": "http", "containerPort": pod.container_port, "protocol": "TCP"}],
            separators=(",", ":"),
        ),
        "PROXY_CONFIG": proxy_config(f"{ISTIOD_SAN}:15012"),
        "SERVICE_ACCOUNT": pod.service_account,
        "WORKLOAD_NAME": pod.app,
    }
    if dns_capture:
        meta["DNS_CAPTURE"] = "true"
        meta["DNS_AUTO_ALLOCATE"] = "true"
    return meta


def envoy_node(pod: Pod, *, dns_capture: bool = False) -> base_pb2.Node:
    """The node Envoy sends (its bootstrap's node, plus what Envoy adds itself)."""
    metadata = struct_pb2.Struct()
    metadata.update(node_metadata(pod, dns_capture=dns_capture))
    node = base_pb2.Node(
        id=pod.node_id,
        cluster=f"{pod.app}.{pod.namespace}",
        metadata=metadata,
        locality=base_pb2.Locality(),
        user_agent_name="envoy",
        client_features=[
            "envoy.lb.does_not_support_overprovisioning",
            "envoy.lrs.supports_send_all_clusters",
        ],
    )
    major, minor, patch = ENVOY_VERSION
    node.user_agent_build_version.version.major_number = major
    node.user_agent_build_version.version.minor_number = minor
    node.user_agent_build_version.version.patch = patch
    return node


def generate_csr(pod: Pod, *, ecdsa: bool = False) -> tuple[bytes, Any]:
    """A CSR as the agent's GenCSR makes it (PEM) and its private key."""
    key: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if ecdsa
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "", _type=_ASN1Type.PrintableString)]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(pod.spiffe_id)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key


@dataclass
class PilotAgent:
    """One agent: its pod, its token and the trust bundle it was given, dialing `address`
    (a loopback HOST:PORT standing in for istiod.istio-system.svc:15012)."""

    pod: Pod
    token: str
    root_cert_pem: bytes
    address: str

    def channel(self) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(root_certificates=self.root_cert_pem)
        # The TLS name checked (and sent as SNI) is the discovery address's host.
        return grpc.secure_channel(
            self.address, creds, options=[("grpc.ssl_target_name_override", ISTIOD_SAN)]
        )

    def call_metadata(self, cluster_id: str | None = None) -> list[tuple[str, str]]:
        return [
            ("clusterid", self.pod.cluster_id if cluster_id is None else cluster_id),
            ("authorization", f"Bearer {self.token}"),
        ]

    def create_certificate(
        self, csr_pem: bytes, *, cluster_id: str | None = None, ttl: int = SECRET_TTL
    ) -> list[str]:
        """CreateCertificate as the citadel CA client calls it; the PEM chain, leaf first."""
        request = ca_pb2.IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=ttl)
        request.metadata.update({"CertSigner": ""})
        with self.channel() as channel:
            call = channel.unary_unary(
                CREATE_CERTIFICATE,
                request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
            )
            response = call(request, metadata=self.call_metadata(cluster_id), timeout=TIMEOUT)
        chain = list(response.cert_chain)
        if len(chain) <= 1:  # the agent's own check
            raise AssertionError(f"invalid CertChain of {len(chain)} element(s)")
        return chain

    def connect(
        self,
        *,
        cluster_id: str | None = None,
        dns_capture: bool = False,
        proxy_config_xds: bool = False,
    ) -> DeltaAds:
        return DeltaAds(
            self.channel(),
            envoy_node(self.pod, dns_capture=dns_capture),
            self.call_metadata(cluster_id),
            agent_types=[
                t for t, on in ((NAME_TABLE, dns_capture), (PROXY_CONFIG, proxy_config_xds)) if on
            ],
        )


class StreamClosed(Exception):
    """The server ended the stream; `code` and `details` say how."""

    def __init__(self, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class DeltaAds:
    """One Delta ADS stream as Envoy (behind the agent's xDS proxy) holds it. Requests go out
    through a queue; a reader thread files responses per type URL, so each wait is bounded and
    an answer of another type arriving in between is kept, not lost."""

    def __init__(
        self,
        channel: grpc.Channel,
        node: base_pb2.Node,
        metadata: list[tuple[str, str]],
        *,
        agent_types: list[str],
    ) -> None:
        self._channel = channel
        self._node: base_pb2.Node | None = node
        self._agent_types = agent_types
        self._agent_sent = False
        self._out: queue.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = queue.Queue()
        self._in: dict[str, queue.Queue[discovery_pb2.DeltaDiscoveryResponse]] = {}
        self._lock = threading.Lock()
        self.closed: StreamClosed | None = None
        self._closed_event = threading.Event()
        self.requests: list[discovery_pb2.DeltaDiscoveryRequest] = []
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self._call = stub.DeltaAggregatedResources(self._requests(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- wire ---------------------------------------------------------------------------

    def _requests(self) -> Iterator[discovery_pb2.DeltaDiscoveryRequest]:
        while True:
            request = self._out.get()
            if request is None:
                return
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                self._queue(response.type_url).put(response)
            self.closed = StreamClosed(grpc.StatusCode.OK, "")
        except grpc.RpcError as err:
            self.closed = StreamClosed(err.code(), err.details() or "")  # type: ignore[attr-defined]
        finally:
            self._closed_event.set()

    def _queue(self, type_url: str) -> queue.Queue[discovery_pb2.DeltaDiscoveryResponse]:
        with self._lock:
            return self._in.setdefault(type_url, queue.Queue())

    def send(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if self._node is not None:  # set_node_on_first_message_only
            request.node.CopyFrom(self._node)
            self._node = None
        self.requests.append(request)
        self._out.put(request)
        if request.type_url == LDS and not self._agent_sent:
            # The agent's own requests follow Envoy's first LDS request.
            self._agent_sent = True
            for type_url in self._agent_types:
                self.requests.append(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url))
                self._out.put(self.requests[-1])

    def subscribe(self, type_url: str, names: list[str] | None = None) -> None:
        self.send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=names or []
            )
        )

    def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        self.send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce
            )
        )

    def nack(self, response: discovery_pb2.DeltaDiscoveryResponse, message: str) -> None:
        self.send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url,
                response_nonce=response.nonce,
                error_detail=status_pb2.Status(code=13, message=message),
            )
        )

    def recv(self, type_url: str, timeout: float = TIMEOUT) -> discovery_pb2.DeltaDiscoveryResponse:
        try:
            return self._queue(type_url).get(timeout=timeout)
        except queue.Empty:
            if self.closed is not None:
                raise self.closed from None
            what = type_urls.short_name(type_url)
            raise TimeoutError(f"no {what} response in {timeout}s") from None

    def wait_closed(self, timeout: float = TIMEOUT) -> StreamClosed:
        if not self._closed_event.wait(timeout):
            raise TimeoutError(f"stream still open after {timeout}s")
        assert self.closed is not None
        return self.closed

    def close(self) -> None:
        self._out.put(None)
        self._call.cancel()
        self._reader.join(timeout=10)
        self._channel.close()

    # -- Envoy's start-up, as the agent's readiness probe judges it ---------------------

    def start_like_envoy(self) -> StartUp:
        """CDS (wildcard) → EDS for the EDS clusters → LDS (wildcard) → RDS for the route
        names the listeners use, each ACKed after it is applied, as Envoy's initialisation
        goes (EDS and RDS subscriptions follow the ACK of what named them)."""
        start = StartUp()
        self.subscribe(CDS)
        cds = self.recv(CDS)
        start.clusters = {r.name: _unpack(r, cluster_pb2.Cluster) for r in cds.resources}
        self.ack(cds)
        eds_names = sorted(
            c.eds_cluster_config.service_name or name
            for name, c in start.clusters.items()
            if c.type == cluster_pb2.Cluster.EDS
        )
        if eds_names:
            self.subscribe(EDS, eds_names)
            eds = self.recv(EDS)
            start.endpoints = {r.name for r in eds.resources}
            start.endpoints_removed = set(eds.removed_resources)
            self.ack(eds)
        self.subscribe(LDS)
        lds = self.recv(LDS)
        start.listeners = {r.name: _unpack(r, listener_pb2.Listener) for r in lds.resources}
        self.ack(lds)
        route_names = sorted({n for lis in start.listeners.values() for n in _route_names(lis)})
        if route_names:
            self.subscribe(RDS, route_names)
            rds = self.recv(RDS)
            start.routes = {r.name for r in rds.resources}
            self.ack(rds)
        start.eds_names, start.route_names = eds_names, route_names
        return start

    def answer_agent_type(self, type_url: str) -> discovery_pb2.DeltaDiscoveryResponse:
        """The answer to one of the agent's own types: ACKed only when it carries a resource
        (the agent drops an empty one without a word)."""
        response = self.recv(type_url)
        if response.resources:
            self.ack(response)
        return response


@dataclass
class StartUp:
    clusters: dict[str, Any] = field(default_factory=dict)
    endpoints: set[str] = field(default_factory=set)
    endpoints_removed: set[str] = field(default_factory=set)
    listeners: dict[str, Any] = field(default_factory=dict)
    routes: set[str] = field(default_factory=set)
    eds_names: list[str] = field(default_factory=list)
    route_names: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """pilot-agent's readiness: Envoy accepted CDS and LDS (here: both non-empty)."""
        return bool(self.clusters) and bool(self.listeners)


def _unpack(resource: discovery_pb2.Resource, message: Any) -> Any:
    out = message()
    if not resource.resource.Unpack(out):
        raise AssertionError(f"{resource.name}: not a {message.DESCRIPTOR.full_name}")
    return out


def _route_names(listener: Any) -> Iterator[str]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url != _HCM:
                continue
            hcm = http_connection_manager_pb2.HttpConnectionManager()
            f.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                yield hcm.rds.route_config_name
