"""Validation errors that name the object and the field at fault."""

from __future__ import annotations

import re
from typing import Any


class ValidationError(ValueError):
    """An object failed validation; `field` points at the culprit, e.g. spec.ports[0].port."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def require_mapping(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a mapping, got {type(value).__name__}")
    return value


def require_list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(field, f"must be a list, got {type(value).__name__}")
    return value


def require_str(value: Any, field: str, *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise ValidationError(field, "is required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    return value


def require_port(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer port, got {value!r}")
    if not 1 <= value <= 65535:
        raise ValidationError(field, f"must be between 1 and 65535, got {value}")
    return value


def require_string_map(value: Any, field: str) -> dict[str, str]:
    mapping = require_mapping(value, field)
    for key, item in mapping.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(f"{field}.{key}", f"must be a string, got {item!r}")
    return dict(mapping)


def optional_bool(value: Any, field: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be true or false, got {value!r}")
    return value


# Envoy's protos: uint32 fields (weights, retries, circuit-breaker thresholds …) and durations.
# A google.protobuf.Duration holds 10,000 years, but Envoy reads its durations as int64
# nanoseconds and refuses (NACKs the whole update) any from 2^63 ns = 9223372036 s on.
UINT32_MAX = 2**32 - 1
MAX_DURATION_SECONDS = 9_223_372_035


def require_uint32(value: Any, field: str, *, minimum: int = 0) -> int:
    """An integer that fits the uint32 Envoy field it becomes (weights, attempts …)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer, got {value!r}")
    if not minimum <= value <= UINT32_MAX:
        raise ValidationError(field, f"must be between {minimum} and {UINT32_MAX}, got {value}")
    return value


# istiod's header name rule for header operations (validHeaderRegex) …
_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
# … and what Envoy refuses anywhere a header name or value goes (its HTTP_HEADER_* rules).
_HEADER_FORBIDDEN = re.compile(r"[\x00\r\n]")


def check_header_operation_name(name: Any, field: str) -> str:
    """A header to set, add or remove: Envoy rejects a whole RDS update that modifies a
    pseudo-header (`:path`) or `host`, and any name with CR, LF or NUL; istiod allows only
    letters, digits, '-' and '_'."""
    text = require_str(name, field, required=True)
    if text.startswith(":") or text.lower() == "host":
        raise ValidationError(
            field, f"header {clip(text)!r} cannot be modified (pseudo-headers and host are not)"
        )
    if not _HEADER_NAME.match(text):
        raise ValidationError(
            field,
            f"header name {clip(text)!r} may hold only letters, digits, '-' and '_'",
        )
    return text


def check_header_text(value: str, field: str, what: str = "header value") -> str:
    """A string Envoy puts in a header (name or value): CR, LF and NUL make it NACK."""
    if _HEADER_FORBIDDEN.search(value):
        raise ValidationError(field, f"{what} must not contain CR, LF or NUL: {clip(value)!r}")
    return value


def clip(text: str, limit: int = 64) -> str:
    """User text quoted in an error, cut short: errors are logged and shown on debug pages."""
    return text if len(text) <= limit else text[:limit] + "…"
