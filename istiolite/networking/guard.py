"""Per-object isolation of translation: a config object whose translation raises (a value that
slipped past validation, a bug) is left out of the result, with a GenerationError naming it,
instead of failing the whole resource type and so every proxy's stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from istiolite.logs import get_logger
from istiolite.push.errors import GenerationError, bounded, report

T = TypeVar("T")
log = get_logger("generate")


class _Named(Protocol):
    @property
    def meta(self) -> Any: ...


def object_name(kind: str, obj: _Named) -> str:
    return bounded(f"{kind} {obj.meta.namespace}/{obj.meta.name}")


def guarded(
    build: Callable[[], T],
    obj: str | Callable[[], str],
    *,
    dropped: str,
    field: str = "",
) -> T | None:
    """`build()`, or None when it raised: then `obj` ("Kind namespace/name", or a function giving
    it, called only then) is reported as left out (`dropped`: what is missing because of it)."""
    try:
        return build()
    except Exception as err:  # any value that slipped through must not fail the whole type
        try:
            name = obj if isinstance(obj, str) else obj()
        except Exception:  # naming it failed too: still isolate it
            name = "unknown object"
        error = GenerationError(
            object=bounded(name),
            message=bounded(f"{type(err).__name__}: {err}"),
            field=field,
            dropped=bounded(dropped),
        )
        if not report(error):
            # Outside a cached build (a direct call from a test or tool): say it here.
            log.error("config object left out", **error.as_dict())
        return None
