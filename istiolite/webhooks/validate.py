"""/validate: Istio config checked as the translator would read it, before it is stored.

The same `parse_object` the sources use decides: an object it refuses is denied with the field
named; fields it accepts but does not translate come back as warnings, which `kubectl apply`
prints. Mesh kinds istiolite does not translate (EnvoyFilter, Telemetry, WasmPlugin, …) are
allowed with a warning naming the kind, since they would have no effect; istiolite has no grounds
to refuse them. Other kinds pass untouched. DELETE is always allowed.
"""

from __future__ import annotations

import copy
from typing import Any

from istiolite.model.kinds import (
    KINDS,
    UnknownKind,
    UnsupportedKind,
    parse_object,
    unsupported_kind,
)
from istiolite.model.validation import ValidationError
from istiolite.webhooks.admission import AdmissionRequest, allow, deny

ISTIO_GROUPS = frozenset({"networking.istio.io", "security.istio.io"})
VALIDATED_KINDS = {name: kind for name, kind in KINDS.items() if kind.group in ISTIO_GROUPS}
# Every kind istiolite translates, as the API server names it (the Gateway API's too).
_TRANSLATED = frozenset((kind.group, kind.kind) for kind in KINDS.values())


def _with_request_identity(request: AdmissionRequest) -> dict[str, Any]:
    """The object with the namespace and name the API server gives it: a CREATE body may omit
    metadata.namespace (it comes from the URL) or carry only generateName."""
    assert request.object is not None
    obj = copy.deepcopy(dict(request.object))
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if isinstance(meta, dict):
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        if not meta.get("name"):
            # generateName: the name is made after admission; check the rest with a stand-in.
            meta["name"] = request.name or "generated-name"
    return obj


def _model_warnings(model: Any) -> list[tuple[str, str]]:
    """(field, message) pairs of settings accepted but not applied: the schema's, and those the
    kind's model finds only in some values or combinations."""
    out = list(model.meta.unapplied)
    unapplied = getattr(model, "unapplied", None)
    if callable(unapplied):
        out += [pair for pair in unapplied() if pair not in out]
    return out


def _unsupported_warning(subject: str, err: UnsupportedKind) -> str:
    return f"{subject}: {err}"


def validate_review(request: AdmissionRequest) -> dict[str, Any]:
    if request.operation in ("DELETE", "CONNECT"):
        return allow(request)
    subject = request.describe()
    kind = VALIDATED_KINDS.get(request.kind)
    if kind is None or kind.group != request.group:
        api_version = f"{request.group}/{request.version}".lstrip("/")
        translated = (request.group, request.kind) in _TRANSLATED
        unsupported = None if translated else unsupported_kind(request.kind, api_version)
        if unsupported is None:
            return allow(request)
        return allow(request, warnings=[_unsupported_warning(subject, unsupported)])
    try:
        _key, model = parse_object(_with_request_identity(request))
    except UnsupportedKind as err:
        return allow(request, warnings=[_unsupported_warning(subject, err)])
    except UnknownKind:  # an apiVersion the kind table lacks: not istiolite's to judge
        return allow(request)
    except ValidationError as err:
        return deny(request, f"configuration is invalid: {subject}: {err.field}: {err.message}")
    warnings = [f"{subject}: {field}: {message}" for field, message in _model_warnings(model)]
    return allow(request, warnings=warnings)
