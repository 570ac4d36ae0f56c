"""What the debug pages may read: a narrow, read-only view of the running control plane.

The server implements it with a small adapter (DebugStatusView in istiolite/server.py); tests
may pass any object of this shape. The pages never see the server object itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from istiolite.model.meta import ObjectKey
    from istiolite.model.proxy import Proxy
    from istiolite.networking.resource import Resource
    from istiolite.push.context import ConfigWarning, PushContext
    from istiolite.push.errors import GenerationError
    from istiolite.xds.ads import Connection


@dataclass(frozen=True, slots=True)
class SourcesState:
    """The config sources as /debug/configz shows them."""

    loaded: bool  # every source has done its initial load
    # Each object in the store -> the sources that hold it; the store keeps the first one's.
    objects: Mapping[ObjectKey, Sequence[str]]
    errors: Sequence[Mapping[str, Any]]  # rejected files / objects, with file, object, field…
    # Objects of kinds istiolite does not translate (file, line, object, kind, message).
    unsupported: Sequence[Mapping[str, Any]] = ()


class DebugStatus(Protocol):
    def push_context(self) -> PushContext:
        """The context of the last push: what every proxy is being served now (immutable)."""
        ...

    def connections(self) -> Sequence[Connection]:
        """The open ADS streams (a snapshot list; each stream's state is live: read it on the
        event loop)."""
        ...

    def push_status(self) -> Mapping[str, Any]:
        """The last push: version, full or not, reasons, what changed, timings."""
        ...

    def warnings(self) -> Sequence[ConfigWarning]:
        """Loaded config that refers to something missing or sets what is not applied."""
        ...

    def sources(self) -> SourcesState: ...

    def generation_errors(self) -> Sequence[GenerationError]:
        """Config objects left out of the config being served, because translating them raised
        (current while the results that left them out are kept)."""
        ...

    def generate(self, proxy: Proxy, type_url: str) -> Mapping[str, Resource]:
        """What the server would send `proxy` of `type_url` now (from the live cache)."""
        ...
