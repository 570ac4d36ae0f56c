"""VirtualService http[] → Envoy routes, as istiod translates them: one Envoy route per match
condition, in order (first match wins), then the action (route, redirect or direct response)."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from istiolite.model.virtualservice import (
    CorsPolicy,
    Fault,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    Retries,
    RouteDestination,
    StringMatch,
    VirtualService,
    match_applies_on,
)
from istiolite.networking.filters import CORS_FILTER, FAULT_FILTER
from istiolite.networking.names import Direction, cluster_name
from istiolite.networking.retry import default_retry_policy
from istiolite.networking.traffic_policy import route_hash_policies
from istiolite.networking.typed import bool_value, duration, pack, uint32
from istiolite.push.context import PushContext

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def _string_matcher(match: StringMatch, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if match.kind == "exact":
        return string_pb2.StringMatcher(exact=match.value, ignore_case=ignore_case)
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))


def _header(name: str, match: StringMatch | None, *, invert: bool = False) -> rc.HeaderMatcher:
    if match is None:
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name, string_match=_string_matcher(match), invert_match=invert)


def route_match(match: HTTPMatch | None) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = match.uri if match else None
    if uri is None:
        out.prefix = "/"
    elif uri.kind == "exact":
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri.value))
    if match is None:
        return out
    if match.ignore_uri_case:
        out.case_sensitive.CopyFrom(bool_value(False))
    for name, value in match.headers:
        out.headers.append(_header(name, value))
    for name, value in match.without_headers:
        out.headers.append(_header(name, value, invert=True))
    for pseudo, value in ((":method", match.method), (":authority", match.authority)):
        if value is not None:
            out.headers.append(_header(pseudo, value))
    if match.scheme is not None:
        out.headers.append(_header(":scheme", match.scheme))
    for name, value in match.query_params:
        if value is None:
            out.query_parameters.append(rc.QueryParameterMatcher(name=name, present_match=True))
        else:
            out.query_parameters.append(
                rc.QueryParameterMatcher(name=name, string_match=_string_matcher(value))
            )
    return out


def _header_options(ops: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    options = [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for k, v in sorted(ops.set.items())
    ]
    options += [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v),
            append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
        )
        for k, v in sorted(ops.add.items())
    ]
    return options


def _apply_headers(target: rc.Route | rc.WeightedCluster.ClusterWeight, headers: Headers) -> None:
    target.request_headers_to_add.extend(_header_options(headers.request))
    target.request_headers_to_remove.extend(headers.request.remove)
    target.response_headers_to_add.extend(_header_options(headers.response))
    target.response_headers_to_remove.extend(headers.response.remove)


def retry_policy(retries: Retries | None) -> rc.RetryPolicy | None:
    """istiod's default when unset; none at all for attempts: 0. Status codes in retryOn
    become retriable_status_codes, as istiod does."""
    if retries is None:
        return default_retry_policy()
    if retries.attempts == 0:
        return None
    policy = default_retry_policy()
    policy.num_retries.CopyFrom(uint32(retries.attempts))
    if retries.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    if retries.retry_on:
        tokens = [t.strip() for t in retries.retry_on.split(",") if t.strip()]
        codes = [int(t) for t in tokens if t.isdigit()]
        names = [t for t in tokens if not t.isdigit()]
        if codes and "retriable-status-codes" not in names:
            names.append("retriable-status-codes")
        policy.retry_on = ",".join(names)
        del policy.retriable_status_codes[:]
        policy.retriable_status_codes.extend(codes)
    if retries.backoff:
        # Istio's mapping: the backoff is Envoy's base interval (max stays 10x base).
        policy.retry_back_off.base_interval.CopyFrom(duration(retries.backoff))
    return policy


def _destination(
    ctx: PushContext, vs: VirtualService, dest: RouteDestination, listener_port: int
) -> tuple[str, str, int]:
    """(host, subset, port) a destination names."""
    host = ctx.resolve_host(dest.destination.host, vs.namespace)
    port = dest.destination.port
    if port is None:
        service = ctx.services_by_host.get(host)
        # Unspecified: the service's only port, else the port the request came in on.
        port = service.ports[0].port if service and len(service.ports) == 1 else listener_port
    return host, dest.destination.subset, port


def _destination_cluster(
    ctx: PushContext, vs: VirtualService, dest: RouteDestination, listener_port: int
) -> str:
    host, subset, port = _destination(ctx, vs, dest, listener_port)
    return cluster_name(Direction.OUTBOUND, port, subset, host)


def _route_action(
    ctx: PushContext,
    vs: VirtualService,
    http: HTTPRoute,
    listener_port: int,
    route: rc.Route,
    namespace: str | None = None,
) -> None:
    action = route.route
    destinations = [d for d in http.route if d.weight > 0 or len(http.route) == 1]
    if len(destinations) == 1:
        action.cluster = _destination_cluster(ctx, vs, destinations[0], listener_port)
        if destinations[0].headers is not None:
            _apply_headers(route, destinations[0].headers)
    else:
        for dest in destinations:
            weighted = rc.WeightedCluster.ClusterWeight(
                name=_destination_cluster(ctx, vs, dest, listener_port),
                weight=uint32(dest.weight),
            )
            if dest.headers is not None:
                _apply_headers(weighted, dest.headers)
            action.weighted_clusters.clusters.append(weighted)
    # Consistent hashing (DestinationRule) hashes on the route; with several destinations only
    # when they all agree on the policy, as istiod does.
    policies = [
        route_hash_policies(ctx, *_destination(ctx, vs, d, listener_port), namespace)
        for d in destinations
    ]
    if policies and all(p == policies[0] for p in policies):
        action.hash_policy.extend(policies[0])
    action.timeout.CopyFrom(duration(http.timeout or 0))
    policy = retry_policy(http.retries)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    # istiod's mapping for Envoy: a set max_stream_duration would make Envoy ignore `timeout`.
    action.max_grpc_timeout.CopyFrom(duration(http.timeout or 0))
    if http.rewrite is not None:
        if http.rewrite.uri:
            action.prefix_rewrite = http.rewrite.uri
        if http.rewrite.uri_regex is not None:
            pattern, substitution = http.rewrite.uri_regex
            action.regex_rewrite.pattern.regex = pattern
            action.regex_rewrite.substitution = substitution
        if http.rewrite.authority:
            action.host_rewrite_literal = http.rewrite.authority


def _fraction(percent: float) -> percent_pb2.FractionalPercent:
    """Istio's 0-100 (fractional) percentage as Envoy's parts per million."""
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def _fault(fault: Fault) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        out.delay.fixed_delay.CopyFrom(duration(fault.delay))
        out.delay.percentage.CopyFrom(_fraction(fault.delay_percent))
    if fault.abort_status is not None:
        out.abort.http_status = fault.abort_status
        out.abort.percentage.CopyFrom(_fraction(fault.abort_percent))
    return out


def _cors(policy: CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_string_matcher(o) for o in policy.allow_origins],
        allow_methods=",".join(policy.allow_methods),
        allow_headers=",".join(policy.allow_headers),
        expose_headers=",".join(policy.expose_headers),
    )
    if policy.max_age is not None:
        out.max_age = str(int(policy.max_age))
    if policy.allow_credentials is not None:
        out.allow_credentials.CopyFrom(bool_value(policy.allow_credentials))
    return out


def _mirror_policies(
    ctx: PushContext, vs: VirtualService, http: HTTPRoute, listener_port: int
) -> list[rc.RouteAction.RequestMirrorPolicy]:
    return [
        rc.RouteAction.RequestMirrorPolicy(
            cluster=_destination_cluster(
                ctx, vs, RouteDestination(destination=m.destination), listener_port
            ),
            runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=_fraction(m.percent)),
        )
        for m in http.mirrors
    ]


def _applies(
    match: HTTPMatch | None, listener_port: int, source: Source | None, gateway: str, vs_ns: str
) -> bool:
    """A match pinned to another port, other source workloads, or other gateways does not
    apply here."""
    if match is None:
        return True
    if match.port is not None and match.port != listener_port:
        return False
    if not match_applies_on(match.gateways, gateway, vs_ns):
        return False
    if source is not None:
        namespace, labels = source
        if match.source_namespace and match.source_namespace != namespace:
            return False
        if any(labels.get(k) != v for k, v in match.source_labels.items()):
            return False
    return True


# The calling workload: (namespace, labels).
Source = tuple[str, Mapping[str, str]]


def http_routes(
    ctx: PushContext,
    vs: VirtualService,
    listener_port: int,
    source: Source | None = None,
    gateway: str = "mesh",
) -> list[rc.Route]:
    """The Envoy routes of a VirtualService for one listener port (and one calling workload,
    when matches name source labels or namespaces) on `gateway` ("mesh": sidecars, else the
    Gateway's "ns/name"), in its order."""
    routes: list[rc.Route] = []
    # The caller's namespace picks the DestinationRule (consistent hashing).
    namespace = source[0] if source is not None else None
    for http in vs.http:
        candidates: list[HTTPMatch | None] = list(http.match) or [None]
        matches = [
            m for m in candidates if _applies(m, listener_port, source, gateway, vs.namespace)
        ]
        for match in matches:
            name = ".".join(n for n in (http.name, match.name if match else "") if n)
            route = rc.Route(name=name, match=route_match(match))
            if http.direct_response is not None:
                route.direct_response.status = http.direct_response.status
                if http.direct_response.body:
                    route.direct_response.body.inline_string = http.direct_response.body
            elif http.redirect is not None:
                r = http.redirect
                route.redirect.response_code = _REDIRECT_CODES[r.code]
                if r.uri:
                    route.redirect.path_redirect = r.uri
                elif r.prefix:
                    route.redirect.prefix_rewrite = r.prefix
                if r.authority:
                    route.redirect.host_redirect = r.authority
                if r.scheme:
                    route.redirect.scheme_redirect = r.scheme
                if r.port is not None:
                    route.redirect.port_redirect = r.port
            else:
                _route_action(ctx, vs, http, listener_port, route, namespace)
                route.route.request_mirror_policies.extend(
                    _mirror_policies(ctx, vs, http, listener_port)
                )
            if http.headers is not None:
                _apply_headers(route, http.headers)
            if http.fault is not None:
                route.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(_fault(http.fault)))
            if http.cors is not None:
                route.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(_cors(http.cors)))
            routes.append(route)
    return routes
