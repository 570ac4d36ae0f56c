"""Failures the API server answered (a metav1.Status), as exceptions that name the object."""

from __future__ import annotations

from typing import Any

from istiolite.sources.kube.refs import ObjectRef


class KubeApiError(Exception):
    """The API server refused a call on `ref`; `status` is the HTTP code, `reason` the
    Status reason (NotFound, Conflict, AlreadyExists, Invalid, ...)."""

    def __init__(self, ref: ObjectRef, method: str, status: int, reason: str, message: str):
        self.ref = ref
        self.method = method
        self.status = status
        self.reason = reason
        self.message = message
        text = f"{method} {ref}: HTTP {status}"
        if reason:
            text += f" {reason}"
        if message:
            text += f": {message}"
        super().__init__(text)


class NotFound(KubeApiError):
    pass


class Conflict(KubeApiError):
    """409: a stale resourceVersion (reason Conflict) or a name already taken
    (reason AlreadyExists)."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


def api_error(ref: ObjectRef, method: str, status: int, body: dict[str, Any]) -> KubeApiError:
    reason = body.get("reason")
    message = body.get("message")
    reason = reason[:100] if isinstance(reason, str) else ""
    message = message[:300] if isinstance(message, str) else ""
    cls: type[KubeApiError] = KubeApiError
    if status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    return cls(ref, method, status, reason, message)
