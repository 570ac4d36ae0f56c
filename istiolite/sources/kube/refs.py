"""Which Kubernetes object a call is about, and its REST path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object (or, with an empty name, a collection) of one resource."""

    api_version: str  # "v1", "coordination.k8s.io/v1"
    kind: str  # "Lease"
    plural: str  # "leases"
    namespace: str  # "" for cluster-scoped resources
    name: str = ""

    @property
    def group(self) -> str:
        group, _, _version = self.api_version.rpartition("/")
        return group

    def named(self, name: str, namespace: str | None = None) -> ObjectRef:
        return ObjectRef(
            self.api_version,
            self.kind,
            self.plural,
            self.namespace if namespace is None else namespace,
            name,
        )

    def path(self, *, subresource: str = "", collection: bool = False) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespace:
            base += f"/namespaces/{self.namespace}"
        base += f"/{self.plural}"
        if collection:
            return base
        if not self.name:
            raise ValueError(f"{self.kind}: a call on one object needs its name")
        base += f"/{self.name}"
        return f"{base}/{subresource}" if subresource else base

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


def lease(namespace: str, name: str) -> ObjectRef:
    return ObjectRef("coordination.k8s.io/v1", "Lease", "leases", namespace, name)


def config_map(namespace: str, name: str) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", "configmaps", namespace, name)


def secret(namespace: str, name: str) -> ObjectRef:
    return ObjectRef("v1", "Secret", "secrets", namespace, name)
