"""exportTo: the namespaces that see a Service, ServiceEntry, VirtualService or DestinationRule.

Values, as Istio's `visibility.Instance`: `.` the object's own namespace, `*` every namespace
(the default when the list is empty), `~` no namespace at all (services only), or a namespace
name. A Kubernetes Service carries the list in the `networking.istio.io/exportTo` annotation,
comma-separated; the Istio kinds in `spec.exportTo`.
"""

from __future__ import annotations

import re
from typing import Any

from istiolite.model.validation import ValidationError, require_list

PRIVATE = "."
PUBLIC = "*"
NONE = "~"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_export_to(
    values: list[Any], where: str, namespace: str, *, allow_none: bool
) -> tuple[str, ...]:
    """Istio's validateExportTo: each entry `.`, `*`, a DNS-label namespace or (for services
    only) `~`; no duplicates (`.` counts as the own namespace); `*` and `~` stand alone."""
    seen: set[str] = set()
    out: list[str] = []
    for i, value in enumerate(values):
        at = f"{where}[{i}]"
        if not isinstance(value, str):
            raise ValidationError(at, f"must be a string, got {type(value).__name__}")
        key = namespace if value == PRIVATE else value
        if key in seen:
            raise ValidationError(
                at,
                f"duplicate entries in exportTo: . and current namespace {namespace}"
                if key != value
                else f"duplicate entries in exportTo for entry {value!r}",
            )
        if value == NONE and not allow_none:
            raise ValidationError(
                at, "exportTo ~ (none) is not allowed for Istio configuration objects"
            )
        if value not in (PRIVATE, PUBLIC, NONE) and not _DNS_LABEL.match(value):
            raise ValidationError(
                at, f"{value!r}: only ., *, ~ or a valid DNS-1123 label (a namespace) is allowed"
            )
        seen.add(key)
        out.append(value)
    if PUBLIC in out and len(out) != 1:
        raise ValidationError(
            where, "cannot have both public (*) and non-public exportTo values for a resource"
        )
    if NONE in out and len(out) != 1:
        raise ValidationError(where, "cannot export to no one (~) and someone")
    return tuple(out)


def parse_export_to(
    raw: Any, where: str, namespace: str, *, allow_none: bool = False
) -> tuple[str, ...]:
    """`spec.exportTo` of an Istio object, validated."""
    return validate_export_to(require_list(raw, where), where, namespace, allow_none=allow_none)


def parse_export_annotation(annotations: dict[str, str], namespace: str) -> tuple[str, ...]:
    """A Service's `networking.istio.io/exportTo` annotation (comma-separated), validated."""
    text = annotations.get(EXPORT_TO_ANNOTATION)
    if text is None:
        return ()
    where = f"metadata.annotations[{EXPORT_TO_ANNOTATION}]"
    if not text.strip():
        raise ValidationError(where, "must list at least one value when set")
    return validate_export_to(
        [part.strip() for part in text.split(",")], where, namespace, allow_none=True
    )


def is_public(export_to: tuple[str, ...]) -> bool:
    """Exported to every namespace: no list (the mesh default) or `*`."""
    return not export_to or PUBLIC in export_to


def exported_to(export_to: tuple[str, ...], owner: str, namespace: str | None) -> bool:
    """istiod's IsServiceVisible: does an object of namespace `owner` reach `namespace`?
    (`None`: no namespace in particular, so only what is public.)"""
    if is_public(export_to):
        return True
    if namespace is None:
        return False
    return (PRIVATE in export_to and namespace == owner) or namespace in export_to
