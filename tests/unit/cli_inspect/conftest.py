"""A real Istiolite's debug pages served over HTTP on 127.0.0.1 (port 0), for the CLI to read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from istiolite.debug.pages import debug_routes
from istiolite.http_server import HttpServer
from istiolite.server import Istiolite
from tests.unit.debug import state


@dataclass
class Served:
    app: Istiolite
    url: str


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    app = state.make_app(tmp_path)
    server = HttpServer(debug_routes(state.status(app)))
    await server.start("127.0.0.1", 0)
    try:
        yield Served(app, f"http://127.0.0.1:{server.port}")
    finally:
        await server.stop()
