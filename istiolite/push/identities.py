"""Which services' identities a change of endpoints alters.

A cluster speaking Istio mutual TLS verifies the service accounts of the service's workloads
(`PushContext.service_identities`, recorded as a SERVICE_ACCOUNTS dependency). Endpoints come
and go all the time while that set rarely changes, so an endpoint change is compared here: only
when a service's identities differ between the old and the new context is its SERVICE_ACCOUNTS
dependency stale (and its clusters rebuilt); otherwise the change stays an endpoint-only push.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from istiolite.model.meta import ObjectKey
from istiolite.model.service import Service
from istiolite.push.context import PushContext
from istiolite.push.dependencies import SERVICE_ACCOUNTS, Dep

# Changes of other kinds rebuild every cluster anyway (STRUCTURAL) or cannot move an identity.
_ENDPOINT_SOURCES = frozenset({"EndpointSlice", "Pod", "WorkloadEntry"})


def _candidates(
    ctx: PushContext, key: ObjectKey, snapshots: Iterable[Mapping[ObjectKey, Any]]
) -> list[Service]:
    """Services whose endpoints the changed object is (or was) among."""
    found: list[Service] = []
    for snapshot in snapshots:
        obj = snapshot.get(key)
        if obj is None:
            continue
        match key.kind:
            case "EndpointSlice":
                host = f"{obj.service_name}.{key.namespace}.svc.{ctx.domain}"
                service = ctx.services_by_host.get(host)
                if service is not None:
                    found.append(service)
            case "Pod":
                found += ctx.services_selecting(key.namespace, obj.meta.labels)
            case "WorkloadEntry":
                found += ctx.workload_entry_services(obj)
    return found


def identity_deps(
    old_ctx: PushContext,
    new_ctx: PushContext,
    keys: Iterable[ObjectKey],
    old: Mapping[ObjectKey, Any],
    new: Mapping[ObjectKey, Any],
) -> set[Dep]:
    """SERVICE_ACCOUNTS dependencies made stale by endpoint changes among `keys`."""
    services: dict[str, Service] = {}
    for key in keys:
        if key.kind in _ENDPOINT_SOURCES:
            for service in _candidates(new_ctx, key, (old, new)):
                services.setdefault(new_ctx.hostname(service), service)
    out: set[Dep] = set()
    for host, service in services.items():
        before = old_ctx.services_by_host.get(host)
        after = new_ctx.service_identities(service)
        if before is None or old_ctx.service_identities(before) != after:
            out.add(Dep(SERVICE_ACCOUNTS, service.namespace, service.name))
    return out
