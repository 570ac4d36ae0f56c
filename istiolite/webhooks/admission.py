"""AdmissionReview (admission.k8s.io/v1) in and out, shared by /validate and /inject.

The API server POSTs a review whose `request` carries the object; the webhook answers with the
same review kind whose `response` echoes the request's uid. A body that is not such a review is
the caller's mistake: `BadReview` (the server answers 400 with its message), never a crash.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
# Two objects (object + oldObject) of at most ~1.5 MB each, as etcd stores them.
MAX_REVIEW_BYTES = 4 * 1024 * 1024
# The API server truncates warnings past 120 characters each and 4 KiB in all; more of them
# say nothing more to the user of `kubectl apply`.
MAX_WARNINGS = 16
MAX_WARNING_CHARS = 240
MAX_MESSAGE_CHARS = 1024
_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


class BadReview(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview; the message says which part."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    operation: str  # CREATE, UPDATE, DELETE or CONNECT
    group: str  # of request.kind
    version: str
    kind: str
    namespace: str
    name: str
    object: Mapping[str, Any] | None  # None for DELETE
    dry_run: bool = False

    def describe(self) -> str:
        """'Kind ns/name' for messages; an object with only generateName has no name yet."""
        name = self.name or _str_at(self.object, "metadata", "generateName") or "<unnamed>"
        return f"{self.kind} {self.namespace}/{name}" if self.namespace else f"{self.kind} {name}"


def _str_at(obj: Mapping[str, Any] | None, *path: str) -> str:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return ""
        value = value.get(key)
    return value if isinstance(value, str) else ""


def _string(value: Any, where: str, *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise BadReview(f"{where}: is required")
        return ""
    if not isinstance(value, str):
        raise BadReview(f"{where}: must be a string, got {type(value).__name__}")
    return value


def parse_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview body (JSON), checked as far as the webhooks rely on it."""
    if len(body) > MAX_REVIEW_BYTES:
        raise BadReview(f"body: larger than {MAX_REVIEW_BYTES} bytes")
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadReview(f"body: not JSON: {str(err)[:200]}") from None
    if not isinstance(review, dict):
        raise BadReview(f"body: must be a JSON object, got {type(review).__name__}")
    api_version = review.get("apiVersion")
    if api_version != API_VERSION or review.get("kind") != KIND:
        raise BadReview(
            f"apiVersion/kind: {api_version!r}/{review.get('kind')!r}; expected "
            f"{API_VERSION}/{KIND} (set admissionReviewVersions: [v1] in the webhook "
            "configuration)"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("request: is required and must be an object")
    uid = _string(request.get("uid"), "request.uid", required=True)
    operation = _string(request.get("operation"), "request.operation", required=True)
    if operation not in _OPERATIONS:
        raise BadReview(f"request.operation: {operation!r} is not one of {sorted(_OPERATIONS)}")
    kind = request.get("kind")
    if not isinstance(kind, dict):
        raise BadReview("request.kind: is required and must be an object")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise BadReview(f"request.object: must be an object, got {type(obj).__name__}")
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise BadReview(f"request.object: is required for {operation}")
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        group=_string(kind.get("group"), "request.kind.group"),
        version=_string(kind.get("version"), "request.kind.version", required=True),
        kind=_string(kind.get("kind"), "request.kind.kind", required=True),
        namespace=_string(request.get("namespace"), "request.namespace"),
        name=_string(request.get("name"), "request.name"),
        object=obj,
        dry_run=request.get("dryRun") is True,
    )


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _bounded(warnings: Iterable[str]) -> list[str]:
    out: list[str] = []
    for text in warnings:
        if len(out) == MAX_WARNINGS:
            out.append("… more warnings not shown (istiolite validate FILE lists them all)")
            break
        out.append(text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 1] + "…")
    return out


def allow(
    request: AdmissionRequest,
    *,
    warnings: Iterable[str] = (),
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An allowing review; with `patch`, a JSONPatch (RFC 6902) the API server applies."""
    response: dict[str, Any] = {"uid": request.uid, "allowed": True}
    listed = _bounded(warnings)
    if listed:
        response["warnings"] = listed
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return _review(response)


def deny(request: AdmissionRequest, message: str, *, code: int = 400) -> dict[str, Any]:
    """A denying review; kubectl prints `message` after 'admission webhook … denied the request'."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return _review(
        {
            "uid": request.uid,
            "allowed": False,
            "status": {"code": code, "message": message, "reason": "BadRequest"},
        }
    )
