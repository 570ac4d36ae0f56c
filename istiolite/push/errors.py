"""Errors of generation: one config object whose translation raised was left out of a result.

Generators are pure, so an error travels with the result it was found in: it is reported into the
recording of the cache entry being built (`report`), stored with that entry, and stays current for
as long as the entry is kept (ResourceCache.errors). An object fixed or removed drops the entry,
and with it the error.
"""

from __future__ import annotations

from dataclasses import dataclass

from istiolite.push.dependencies import current_recording

# Client-written strings (names, exception text that may quote a value) are cut to this.
MAX_TEXT = 300
# Object kinds a metric label may name; anything else is "other" (bounded cardinality).
KINDS = frozenset(
    {"VirtualService", "DestinationRule", "Gateway", "Service", "ServiceEntry", "Sidecar", "Secret"}
)


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True, order=True)
class GenerationError:
    """`object`: "Kind namespace/name"; `dropped`: what was left out because of it."""

    object: str
    message: str
    field: str = ""
    dropped: str = ""

    @property
    def kind(self) -> str:
        kind = self.object.split(" ", 1)[0]
        return kind if kind in KINDS else "other"

    def as_dict(self) -> dict[str, str]:
        return {
            "object": self.object,
            "field": self.field,
            "message": self.message,
            "dropped": self.dropped,
        }


def report(error: GenerationError) -> bool:
    """Note the error in the build in progress; False when there is none (the caller logs)."""
    found = current_recording.get()
    if found is None:
        return False
    found.errors.add(error)
    return True
