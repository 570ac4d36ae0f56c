"""Which listeners of which Gateways a route attaches to, and why not (the spec's rules):
sectionName and port, the listener's allowed kinds and namespaces, and hostnames (a listener's
hostname intersected with the route's)."""

from __future__ import annotations

from dataclasses import dataclass

from istiolite.model.gatewayapi.common import GROUP
from istiolite.model.gatewayapi.gateway import Listener
from istiolite.model.gatewayapi.routes import Route

# The route kinds each listener protocol takes when `allowedRoutes.kinds` is not given.
DEFAULT_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("HTTP", ""): ("HTTPRoute", "GRPCRoute"),
    ("HTTPS", "Terminate"): ("HTTPRoute", "GRPCRoute"),
    ("TLS", "Passthrough"): ("TLSRoute",),
    ("TLS", "Terminate"): ("TCPRoute",),
    ("TCP", ""): ("TCPRoute",),
}


def supported_kinds(listener: Listener) -> tuple[tuple[str, ...], bool]:
    """The route kinds a listener takes, and whether every kind it lists is one it can take
    (False: `InvalidRouteKinds`)."""
    defaults = DEFAULT_KINDS.get((listener.protocol, listener.tls_mode), ())
    if not listener.kinds:
        return defaults, True
    wanted = [kind for group, kind in listener.kinds if group in (GROUP, "")]
    valid = all(group == GROUP and kind in defaults for group, kind in listener.kinds)
    return tuple(k for k in defaults if k in wanted), valid


def host_matches(pattern: str, host: str) -> bool:
    """A hostname pattern (`*.example.com` takes any number of labels in front) and a name."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect_hostnames(listener_host: str, route_hosts: tuple[str, ...]) -> tuple[str, ...]:
    """The hosts a route serves on a listener; () when they have none in common. No listener
    hostname: the route's (all: `*`); no route hostnames: the listener's."""
    if not route_hosts:
        return (listener_host or "*",)
    if not listener_host:
        return route_hosts
    out = []
    for host in route_hosts:
        if host == listener_host or host_matches(listener_host, host):
            out.append(host)
        elif host.startswith("*.") and host_matches(host, listener_host):
            out.append(listener_host)
        elif (
            host.startswith("*.")
            and listener_host.startswith("*.")
            and (listener_host.endswith(host[1:]))
        ):
            out.append(listener_host)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    message: str


# The spec's reasons for a route a parent refuses, most telling first.
NOT_ALLOWED = "NotAllowedByListeners"
NO_HOSTNAME = "NoMatchingListenerHostname"
NO_PARENT = "NoMatchingParent"
_ORDER = (NOT_ALLOWED, NO_HOSTNAME, NO_PARENT)


def first_refusal(refusals: list[Refusal]) -> Refusal:
    return min(refusals, key=lambda r: _ORDER.index(r.reason))


def listener_refusal(
    route: Route, listener: Listener, namespace_labels: dict[str, str], gateway_namespace: str
) -> Refusal | None:
    """Why `listener` does not take `route` (None: it does; the hostnames are checked apart)."""
    kinds, _ = supported_kinds(listener)
    if route.kind not in kinds:
        return Refusal(
            NOT_ALLOWED, f"listener {listener.name!r} does not allow {route.kind} routes"
        )
    if listener.namespaces_from == "Same" and route.namespace != gateway_namespace:
        return Refusal(
            NOT_ALLOWED,
            f"listener {listener.name!r} allows routes from namespace {gateway_namespace!r} only",
        )
    if listener.namespaces_from == "Selector":
        assert listener.namespace_selector is not None
        if not listener.namespace_selector.matches(namespace_labels):
            return Refusal(
                NOT_ALLOWED,
                f"listener {listener.name!r} does not allow routes from namespace "
                f"{route.namespace!r} (its labels do not match the selector)",
            )
    return None
