"""The proxy's own workload: which ports it serves (the inbound side of a sidecar).

As istiod: when the workload's Sidecar has `ingress` listeners, they alone define the inbound
ports (and where each one leads); otherwise the ports come from the Services selecting the
workload, and a proxy without iptables (INTERCEPTION_MODE NONE) serves none.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from istiolite.model.destinationrule import ConnectionPool
from istiolite.model.peerauthentication import EffectiveMtls
from istiolite.model.protocol import Protocol
from istiolite.model.proxy import InterceptionMode, Proxy
from istiolite.model.service import Service
from istiolite.model.sidecar import UNIX_PREFIX, IngressListener, IngressTLS, Sidecar
from istiolite.model.workload import Pod
from istiolite.push.cache import memoized
from istiolite.push.context import PushContext

WILDCARD_IP = "0.0.0.0"
LOOPBACK_IP = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class InboundPort:
    target_port: int
    protocol: Protocol
    # Where the inbound chain lives: a virtualInbound chain named `<bind>_<port>`, or (with
    # bind_to_port) a listener of its own bound on bind:port.
    bind: str = WILDCARD_IP
    bind_to_port: bool = False
    # Where `inbound|<port>||` sends: an IP, unix://<path>, or "" (the original destination).
    endpoint: str = LOOPBACK_IP
    endpoint_port: int = 0  # 0: the target port
    tls: IngressTLS | None = None  # terminated here (protocol is then the one inside)
    connection_pool: ConnectionPool | None = None
    from_sidecar: bool = False  # a Sidecar ingress listener, not a Service port


def proxy_labels(ctx: PushContext, proxy: Proxy) -> dict[str, str]:
    pod = ctx.pod(proxy.namespace, proxy.pod_name)
    return proxy.labels or (pod.meta.labels if pod else {})


def inbound_mtls(ctx: PushContext, proxy: Proxy) -> EffectiveMtls:
    """The PeerAuthentication mode the proxy's workload enforces (per port where its workload
    policy says so). Memoized by namespace and labels."""
    labels = proxy_labels(ctx, proxy)
    return memoized(
        ("effective-mtls", proxy.namespace, frozenset(labels.items())),
        lambda: ctx.effective_mtls(proxy.namespace, labels),
    )


def sidecar_of(ctx: PushContext, proxy: Proxy) -> Sidecar | None:
    """The Sidecar resource that applies to the proxy (memoized by its shape)."""
    labels = proxy_labels(ctx, proxy)
    return memoized(
        ("sidecar-for", proxy.namespace, frozenset(labels.items())),
        lambda: ctx.sidecar_for(proxy.namespace, labels),
    )


def inbound_ports(ctx: PushContext, proxy: Proxy) -> tuple[InboundPort, ...]:
    """The ports the proxy serves, one entry per port number.

    From the Sidecar's ingress listeners when it has some. Else the target ports of the Services
    that select this proxy's labels (none without iptables): a named targetPort is resolved
    against the proxy's Pod (skipped when the Pod is unknown); when two services disagree on a
    port's protocol, the first (by hostname) wins, as in istiod. Memoized per push: by namespace
    and labels, and by pod only where a named port needs it.
    """
    sidecar = sidecar_of(ctx, proxy)
    if sidecar is not None and sidecar.ingress:
        key = (
            "ingress-ports",
            sidecar.namespace,
            sidecar.meta.name,
            proxy.interception_mode,
            proxy.ip_addresses,
        )
        return memoized(key, lambda: sidecar_inbound_ports(proxy, sidecar))
    if proxy.interception_mode == InterceptionMode.NONE:
        # Binding the services' ports would clash with the application itself.
        return ()
    labels = proxy_labels(ctx, proxy)
    shape = (proxy.namespace, frozenset(labels.items()))
    services: list[Service] = memoized(
        ("inbound-services", *shape), lambda: ctx.services_selecting(proxy.namespace, labels)
    )
    if any(isinstance(p.target_port, str) for s in services for p in s.ports):
        # A named targetPort is the Pod's: resolved for this proxy (a change of its Pod is a
        # full push for it).
        return _resolve(services, ctx.pod(proxy.namespace, proxy.pod_name))
    return memoized(("inbound-ports", *shape), lambda: _resolve(services, None))


def _resolve(services: list[Service], pod: Pod | None) -> tuple[InboundPort, ...]:
    found: dict[int, InboundPort] = {}
    for service in services:
        for port in service.ports:
            if port.protocol == Protocol.UDP:
                continue
            target = port.target_port
            if isinstance(target, str):
                resolved = pod.port_by_name(target) if pod else None
                if resolved is None:
                    continue
                target = resolved
            found.setdefault(target, InboundPort(target, port.protocol))
    return tuple(found[p] for p in sorted(found))


# --- Sidecar ingress ----------------------------------------------------------------------------


def _global_unicast(ip: str) -> bool:
    """Go's net.IP.IsGlobalUnicast: any unicast address but loopback, link-local, unspecified."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (
        addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_unspecified
        or addr == ipaddress.ip_address("255.255.255.255")
    )


def _bind_to_port(capture_mode: str, proxy: Proxy) -> bool:
    """istiod's getBindToPort: DEFAULT follows the proxy (no iptables: bind); NONE binds."""
    if capture_mode == "DEFAULT":
        return proxy.interception_mode == InterceptionMode.NONE
    return capture_mode == "NONE"


def _endpoint(listener: IngressListener, proxy: Proxy) -> tuple[str, int]:
    """defaultEndpoint → (address, port): 127.0.0.1 / [::1] stay local, 0.0.0.0 / [::] mean
    the proxy's own IP of that family, unix:// is a socket, "" the original destination."""
    text = listener.default_endpoint
    if not text:
        return "", 0
    if text.startswith(UNIX_PREFIX):
        return text, 0
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    v4 = [ip for ip in proxy.ip_addresses if ":" not in ip]
    v6 = [ip for ip in proxy.ip_addresses if ":" in ip]
    if host == "0.0.0.0":
        address = v4[0] if v4 else LOOPBACK_IP
    elif host == "::":
        address = v6[0] if v6 else "::1"
    elif host == "::1":
        address = "::1" if v6 and not v4 else LOOPBACK_IP
    else:  # 127.0.0.1, or no host at all
        address = LOOPBACK_IP if v4 or not v6 else "::1"
    return address, int(port)


def sidecar_inbound_ports(proxy: Proxy, sidecar: Sidecar) -> tuple[InboundPort, ...]:
    """One inbound port per Sidecar ingress listener, as istiod's buildInboundChainConfigs.

    The chain (or listener) sits on `bind`, else on the proxy's first global unicast IP, else
    0.0.0.0. (Without iptables, a listener that does not bind a port gets its cluster but no
    chain: there is no virtualInbound to hold it.)
    """
    own_ip = next((ip for ip in proxy.ip_addresses if _global_unicast(ip)), WILDCARD_IP)
    out: dict[int, InboundPort] = {}
    for listener in sidecar.ingress:
        bind_to_port = _bind_to_port(listener.capture_mode, proxy)
        protocol = listener.port.app_protocol
        if protocol == Protocol.UDP:
            continue
        tls = listener.tls if listener.tls is not None and listener.tls.terminates else None
        if tls is not None:
            # As istiod's AfterTLSTermination: HTTPS is HTTP inside, TLS is TCP.
            protocol = Protocol.HTTP if protocol == Protocol.HTTPS else Protocol.TCP
        address, port = _endpoint(listener, proxy)
        number = listener.port.number
        out.setdefault(
            number,
            InboundPort(
                target_port=number,
                protocol=protocol,
                bind=listener.bind or own_ip,
                bind_to_port=bind_to_port,
                endpoint=address,
                endpoint_port=port,
                tls=tls,
                connection_pool=sidecar.inbound_pool_for(number),
                from_sidecar=True,
            ),
        )
    return tuple(out[p] for p in sorted(out))
