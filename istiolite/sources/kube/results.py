"""What the Kubernetes source concluded about each Istio object it read: the input of the
leader's status writer (status.conditions / status.validationMessages)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from istiolite.model.meta import ObjectKey


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """One Istio object as last read: the generation it was read at, the apiVersion it was
    served under, why it was rejected (field path, message; empty when accepted) and the
    warnings about fields it sets that istiolite accepts but does not apply."""

    generation: int
    api_version: str
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


# Called with the keys whose result was added, changed or removed.
ResultsListener = Callable[[frozenset[ObjectKey]], None]
