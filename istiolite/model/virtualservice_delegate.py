"""VirtualService delegation: root `http[].delegate` routes merged with their delegates' routes.

As istiod does it (pilot/pkg/model/virtualservice.go: mergeVirtualServicesIfNeeded,
mergeHTTPRoutes, mergeHTTPRoute, mergeHTTPMatchRequests, hasConflict, stringMatchConflict), once
per push, before anything is indexed:

- A VirtualService without hosts is a delegate; it never routes by itself. A root is one with
  hosts and at least one `http[].delegate` route; every other one is left as it is.
- Each delegating route is replaced, in place, by the delegate's routes merged with it (as many
  as the delegate has, in its order). A delegate that does not exist, is not a delegate (has
  hosts), or is not exported to the root's namespace drops only that route, with a warning.
- Short destination hosts and gateway names are resolved in the namespace of the object that
  wrote them (istiod resolves short names on every VirtualService before merging).
- Matches: every match of a delegate route must combine with at least one root match without a
  conflict, or that delegate route is dropped (a warning). Combined: the delegate's value where
  it sets one, else the root's; headers, withoutHeaders, queryParams and sourceLabels are the
  union (the delegate's value wins for a name in both); names join `root-delegate`.
- Route policies the delegate route leaves unset come from the root route: rewrite,
  directResponse, timeout, retries, fault, mirror, mirrorPercentage, mirrors, corsPolicy,
  headers. Its name joins `root-delegate` too.

The model module is the home because the rules belong to the VirtualService API, not to one
consumer: the functions are pure (objects in, objects out, a host resolver injected), and
PushContext applies them where it indexes VirtualServices, so sidecars and gateways alike route
from the merged roots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from istiolite.model.virtualservice import (
    Destination,
    HTTPMatch,
    HTTPRoute,
    Mirror,
    StringMatch,
    VirtualService,
)
from istiolite.model.visibility import exported_to

# (host, namespace) -> FQDN: how a short host written in `namespace` resolves.
HostResolver = Callable[[str, str], str]
NamedMatches = tuple[tuple[str, StringMatch | None], ...]

# A header / query parameter written as `{}` ("present"): a StringMatch with no type, which
# conflicts with any other condition on the same name, as in istiod.
_NO_TYPE = StringMatch("", "")


@dataclass(frozen=True, slots=True)
class DelegateWarning:
    """Something about a root's delegation that drops routes: reported on the root."""

    root: VirtualService
    field: str  # spec.http[i].delegate
    message: str


@dataclass(frozen=True, slots=True)
class MergedVirtualServices:
    virtual_services: tuple[VirtualService, ...]  # roots merged, plain ones as given; no delegates
    warnings: tuple[DelegateWarning, ...]


def merge_delegates(
    virtual_services: Sequence[VirtualService], resolve_host: HostResolver
) -> MergedVirtualServices:
    """The VirtualServices that route, in the given order: each root with its delegating routes
    replaced by the merged delegate routes; delegates themselves left out."""
    by_key = {(vs.namespace, vs.meta.name): vs for vs in virtual_services}
    out: list[VirtualService] = []
    warnings: list[DelegateWarning] = []
    for vs in virtual_services:
        if vs.is_delegate:
            continue
        if not vs.is_root:
            out.append(vs)
            continue
        routes: list[HTTPRoute] = []
        for i, http in enumerate(vs.http):
            if http.delegate is None:
                routes.append(http)
                continue
            merged, problems = _delegated(vs, http, by_key, resolve_host)
            routes += merged
            where = f"spec.http[{i}].delegate"
            warnings += (DelegateWarning(vs, where, problem) for problem in problems)
        out.append(dataclasses.replace(vs, http=tuple(routes)))
    return MergedVirtualServices(tuple(out), tuple(warnings))


def _delegated(
    root_vs: VirtualService,
    http: HTTPRoute,
    by_key: dict[tuple[str, str], VirtualService],
    resolve_host: HostResolver,
) -> tuple[list[HTTPRoute], list[str]]:
    """What one delegating route of `root_vs` becomes, and why routes were left out."""
    ref = http.delegate
    assert ref is not None
    name = f"{ref.namespace}/{ref.name}"
    target = by_key.get((ref.namespace, ref.name))
    if target is None:
        return [], [f"VirtualService {name} not found; this route is left out"]
    if not target.is_delegate:
        return [], [
            f"VirtualService {name} has hosts, so it is not a delegate (only a VirtualService "
            "without hosts can be); this route is left out"
        ]
    if not exported_to(target.export_to, target.namespace, root_vs.namespace):
        return [], [
            f"delegate VirtualService {name} is not exported to namespace "
            f"{root_vs.namespace!r} (its exportTo: {', '.join(target.export_to)}); "
            "this route is left out"
        ]
    root = resolve_names(http, root_vs.namespace, resolve_host)
    routes: list[HTTPRoute] = []
    problems: list[str] = []
    for j, leaf in enumerate(target.http):
        merged, reason = merge_http_route(root, resolve_names(leaf, target.namespace, resolve_host))
        if merged is None:
            label = f"spec.http[{j}]" + (f" ({leaf.name!r})" if leaf.name else "")
            problems.append(
                f"route {label} of delegate VirtualService {name} conflicts with this route's "
                f"match ({reason}); that route is left out"
            )
        else:
            routes.append(merged)
    return routes, problems


def gateway_ref(ref: str, namespace: str) -> str:
    """A `gateways` entry as "ns/name" (a bare name, or `./name`, is in `namespace`); "mesh"
    stays."""
    if ref == "mesh":
        return ref
    if "/" not in ref:
        return f"{namespace}/{ref}"
    owner, _, name = ref.partition("/")
    return f"{namespace}/{name}" if owner == "." else ref


def resolve_names(route: HTTPRoute, namespace: str, resolve_host: HostResolver) -> HTTPRoute:
    """A route with its short destination hosts and match gateways resolved in `namespace`
    (the namespace of the VirtualService that wrote it), so it can move to another one."""

    def destination(d: Destination) -> Destination:
        return dataclasses.replace(d, host=resolve_host(d.host, namespace))

    return dataclasses.replace(
        route,
        match=tuple(
            dataclasses.replace(m, gateways=tuple(gateway_ref(g, namespace) for g in m.gateways))
            for m in route.match
        ),
        route=tuple(
            dataclasses.replace(rd, destination=destination(rd.destination)) for rd in route.route
        ),
        mirrors=tuple(
            dataclasses.replace(m, destination=destination(m.destination)) for m in route.mirrors
        ),
    )


def merge_http_routes(root: HTTPRoute, delegate: Sequence[HTTPRoute]) -> list[HTTPRoute]:
    """istiod's mergeHTTPRoutes: one merged route per delegate route that does not conflict."""
    out = []
    for leaf in delegate:
        merged, _ = merge_http_route(root, leaf)
        if merged is not None:
            out.append(merged)
    return out


def _joined(root: str, leaf: str) -> str:
    if not leaf:
        return root
    return f"{root}-{leaf}" if root else leaf


def merge_http_route(root: HTTPRoute, leaf: HTTPRoute) -> tuple[HTTPRoute | None, str]:
    """istiod's mergeHTTPRoute: the delegate route under the root route, or (None, why) when
    their matches conflict."""
    matches, reason = merge_match_requests(root.match, leaf.match)
    if matches is None:
        return None, reason
    return (
        dataclasses.replace(
            leaf,
            name=_joined(root.name, leaf.name),
            match=matches,
            rewrite=leaf.rewrite if leaf.rewrite is not None else root.rewrite,
            direct_response=leaf.direct_response
            if leaf.direct_response is not None
            else root.direct_response,
            timeout=leaf.timeout if leaf.timeout is not None else root.timeout,
            retries=leaf.retries if leaf.retries is not None else root.retries,
            fault=leaf.fault if leaf.fault is not None else root.fault,
            cors=leaf.cors if leaf.cors is not None else root.cors,
            headers=leaf.headers if leaf.headers is not None else root.headers,
            mirrors=_merged_mirrors(root, leaf),
            mirror_percentage=leaf.mirror_percentage
            if leaf.mirror_percentage is not None
            else root.mirror_percentage,
            delegate=None,
        ),
        "",
    )


def _merged_mirrors(root: HTTPRoute, leaf: HTTPRoute) -> tuple[Mirror, ...]:
    """`mirror`, `mirrorPercentage` and `mirrors` are each taken from the root when the
    delegate route leaves them unset (three separate fields in istiod)."""

    def single(route: HTTPRoute) -> Mirror | None:
        return next((m for m in route.mirrors if m.single), None)

    mirror = single(leaf) or single(root)
    if mirror is not None:
        percent = leaf.mirror_percentage
        if percent is None:
            percent = root.mirror_percentage
        mirror = dataclasses.replace(mirror, percent=100.0 if percent is None else percent)
    listed = tuple(m for m in leaf.mirrors if not m.single) or tuple(
        m for m in root.mirrors if not m.single
    )
    return ((mirror,) if mirror is not None else ()) + listed


def merge_match_requests(
    root: Sequence[HTTPMatch], leaf: Sequence[HTTPMatch]
) -> tuple[tuple[HTTPMatch, ...] | None, str]:
    """istiod's mergeHTTPMatchRequests: for each delegate match, its combination with every
    root match it does not conflict with (delegate match outer, root match inner). (None, why)
    when some delegate match fits no root match."""
    if not root:
        return tuple(leaf), ""
    if not leaf:
        return tuple(root), ""
    out: list[HTTPMatch] = []
    for sub in leaf:
        reasons = []
        for parent in root:
            reason = match_conflict(parent, sub)
            if reason:
                reasons.append(reason)
            else:
                out.append(merge_match_request(parent, sub))
        if len(reasons) == len(root):
            return None, reasons[0]
    return tuple(out), ""


def _union(root: NamedMatches, leaf: NamedMatches) -> NamedMatches:
    return tuple(sorted({**dict(root), **dict(leaf)}.items(), key=lambda item: item[0]))


def merge_match_request(root: HTTPMatch, leaf: HTTPMatch) -> HTTPMatch:
    """istiod's mergeHTTPMatchRequest: the delegate's condition where it has one, else the
    root's; maps united, the delegate's entry winning."""
    return dataclasses.replace(
        leaf,
        name=_joined(root.name, leaf.name),
        uri=leaf.uri if leaf.uri is not None else root.uri,
        scheme=leaf.scheme if leaf.scheme is not None else root.scheme,
        method=leaf.method if leaf.method is not None else root.method,
        authority=leaf.authority if leaf.authority is not None else root.authority,
        headers=_union(root.headers, leaf.headers),
        without_headers=_union(root.without_headers, leaf.without_headers),
        query_params=_union(root.query_params, leaf.query_params),
        port=leaf.port if leaf.port is not None else root.port,
        source_labels={**root.source_labels, **leaf.source_labels},
        source_namespace=leaf.source_namespace or root.source_namespace,
        gateways=leaf.gateways or root.gateways,
    )


def _describe(m: StringMatch | None) -> str:
    if m is None or not m.kind:
        return "present"
    return f"{m.kind} {m.value!r}"


def _named_conflict(what: str, root: NamedMatches, leaf: NamedMatches) -> str:
    parents = dict(root)
    for name, value in leaf:
        if name in parents:
            parent = parents[name] or _NO_TYPE
            if string_match_conflict(parent, value or _NO_TYPE):
                return (
                    f"{what} {name!r}: {_describe(value)} does not narrow the root's "
                    f"{_describe(parent)}"
                )
    return ""


def match_conflict(root: HTTPMatch, leaf: HTTPMatch) -> str:
    """istiod's hasConflict, with the reason: "" when the delegate match can live under the
    root match."""
    for what, parent, sub in (
        ("uri", root.uri, leaf.uri),
        ("scheme", root.scheme, leaf.scheme),
        ("method", root.method, leaf.method),
        ("authority", root.authority, leaf.authority),
    ):
        if string_match_conflict(parent, sub):
            return f"{what} {_describe(sub)} is not within the root's {_describe(parent)}"
    for what, parents, subs in (
        ("header", root.headers, leaf.headers),
        ("withoutHeaders", root.without_headers, leaf.without_headers),
        ("query parameter", root.query_params, leaf.query_params),
    ):
        reason = _named_conflict(what, parents, subs)
        if reason:
            return reason
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return "ignoreUriCase differs"
    if root.port is not None and leaf.port is not None and root.port != leaf.port:
        return f"port {leaf.port} is not the root's {root.port}"
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return f"sourceNamespace must be the root's {root.source_namespace!r}"
    for key, value in leaf.source_labels.items():
        if key in root.source_labels and root.source_labels[key] != value:
            return f"sourceLabels {key}={value!r} is not the root's {root.source_labels[key]!r}"
    if root.gateways and leaf.gateways and not set(leaf.gateways) <= set(root.gateways):
        return f"gateways {list(leaf.gateways)} are not among the root's {list(root.gateways)}"
    return ""


def _value(m: StringMatch, kind: str) -> str:
    return m.value if m.kind == kind else ""


def string_match_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """istiod's stringMatchConflict: can the delegate's condition not be a narrowing of the
    root's? Unset on either side never conflicts; a regex on either side conflicts with any
    condition on the other; an exact root takes only the same exact; a prefix root takes a
    prefix or exact value that starts with it."""
    if root is None or leaf is None:
        return False
    root_exact, root_prefix, root_regex = (_value(root, k) for k in ("exact", "prefix", "regex"))
    leaf_exact, leaf_prefix, leaf_regex = (_value(leaf, k) for k in ("exact", "prefix", "regex"))
    if root_regex and (leaf_regex or leaf_prefix or leaf_exact):
        return True
    if leaf_regex and (root_regex or root_prefix or root_exact):
        return True
    if root_exact:
        return bool(leaf_prefix) or leaf_exact != root_exact
    if root_prefix:
        if leaf_prefix:
            return not leaf_prefix.startswith(root_prefix)
        if leaf_exact:
            return not leaf_exact.startswith(root_prefix)
    return True
