"""Which filter chains an inbound port gets under each mutual TLS mode (istiod's
filterchain_options.go), as a plan the listener builder turns into chains.

- STRICT: only TLS, terminated with the workload certificate and a required client certificate
  from the mesh root; anything else on the port meets a chain that closes it (without it,
  virtualInbound would hand plaintext to its pass-through default).
- PERMISSIVE: the TLS inspector tells mesh mTLS (ALPN `istio`, `istio-peer-exchange`, or
  istio-proxy's `istio-http/*`) from everything else, which is served as before.
- DISABLE (and PERMISSIVE on a proxy without a mesh certificate, which could not terminate mTLS):
  plaintext only, without transport matches.

An AUTO (sniffed) port cannot sniff HTTP inside TLS: over mTLS it is HTTP when the client's ALPN
says so (`istio-http/*`, what Istio's own sidecars send), else TCP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from istiolite.model.peerauthentication import MtlsMode
from istiolite.model.protocol import Protocol
from istiolite.networking.filters import SNIFFED_HTTP_PROTOCOLS
from istiolite.networking.mtls import ALL_MTLS_ALPNS, ALPN_IN_MESH, MTLS_HTTP_ALPNS

TLS = "tls"
RAW_BUFFER = "raw_buffer"


class Serve(Enum):
    HTTP = "http"  # the HTTP connection manager
    TCP = "tcp"  # the TCP proxy
    DENY = "deny"  # closed (BlackHoleCluster)


@dataclass(frozen=True, slots=True)
class ChainPlan:
    suffix: str  # appended to the port's chain name ("" for the port's main chain)
    serve: Serve
    transport: str = ""  # "", "tls" or "raw_buffer"
    alpn: tuple[str, ...] = ()
    mtls: bool = False  # terminate Istio mTLS


_HTTP, _TCP, _DENY = Serve.HTTP, Serve.TCP, Serve.DENY

_PLAINTEXT = {
    "http": (ChainPlan("", _HTTP),),
    "tcp": (ChainPlan("", _TCP),),
    "auto": (ChainPlan("-http", _HTTP, alpn=SNIFFED_HTTP_PROTOCOLS), ChainPlan("", _TCP)),
}
_PERMISSIVE = {
    "http": (
        ChainPlan("-mtls", _HTTP, TLS, ALL_MTLS_ALPNS, mtls=True),
        ChainPlan("", _HTTP, RAW_BUFFER),
    ),
    "tcp": (
        ChainPlan("-mtls", _TCP, TLS, ALL_MTLS_ALPNS, mtls=True),
        ChainPlan("-tls", _TCP, TLS),  # the application's own TLS, passed through
        ChainPlan("", _TCP, RAW_BUFFER),
    ),
    "auto": (
        ChainPlan("-mtls-http", _HTTP, TLS, MTLS_HTTP_ALPNS, mtls=True),
        ChainPlan("-mtls", _TCP, TLS, ALPN_IN_MESH, mtls=True),
        ChainPlan("-tls", _TCP, TLS),
        ChainPlan("-http", _HTTP, RAW_BUFFER, SNIFFED_HTTP_PROTOCOLS),
        ChainPlan("", _TCP, RAW_BUFFER),
    ),
}
_STRICT = {
    "http": (ChainPlan("-mtls", _HTTP, TLS, mtls=True), ChainPlan("-plaintext", _DENY)),
    "tcp": (ChainPlan("-mtls", _TCP, TLS, mtls=True), ChainPlan("-plaintext", _DENY)),
    "auto": (
        ChainPlan("-mtls-http", _HTTP, TLS, MTLS_HTTP_ALPNS, mtls=True),
        ChainPlan("-mtls", _TCP, TLS, mtls=True),
        ChainPlan("-plaintext", _DENY),
    ),
}


def _shape(protocol: Protocol) -> str:
    if protocol.is_http:
        return "http"
    return "auto" if protocol == Protocol.AUTO else "tcp"


def chain_plans(protocol: Protocol, mode: MtlsMode, *, mesh_mtls: bool) -> tuple[ChainPlan, ...]:
    """The chains of one inbound port of `protocol` under `mode` (the effective, never UNSET),
    for a proxy with (`mesh_mtls`) or without a mesh certificate."""
    shape = _shape(protocol)
    if mode == MtlsMode.STRICT:
        return _STRICT[shape]
    if mode == MtlsMode.DISABLE or not mesh_mtls:
        return _PLAINTEXT[shape]
    return _PERMISSIVE[shape]
