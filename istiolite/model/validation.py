"""Validation errors that name the object and the field at fault."""

from __future__ import annotations

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
