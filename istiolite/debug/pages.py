"""Debug pages on the HTTP port (/debug/*): read-only views of istiolite's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from istiolite.debug.http import Handler

if TYPE_CHECKING:
    from istiolite.server import Istiolite


def debug_routes(app: Istiolite) -> dict[str, Handler]:
    return {}
