"""A big /debug/config_dump is encoded in a worker thread: the event loop (pushes, other
streams) keeps running while it is served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.debug_stall import build_app
from bench.meshgen import write_mesh
from istiolite.debug import pages
from istiolite.http_server import Request
from tests.unit.debug import state as s
from tests.unit.debug.state import NODE_ID

SERVICES = 400


async def test_the_loop_keeps_running_while_a_big_dump_is_served(tmp_path: Path) -> None:
    """A ticker on the loop keeps ticking all through the page's work. Encoded on the loop (as
    the page used to), the same dump would let it tick not once until the body is done."""
    write_mesh(tmp_path / "mesh", SERVICES, endpoints=3)
    app = build_app(tmp_path / "mesh", SERVICES)  # one sidecar subscribed to everything
    status = s.status(app)
    conn = pages.find_connection(status, NODE_ID)
    assert conn is not None
    inline = pages.config_dump_response(pages.proxy_config_dump(status, conn))

    ticks: list[float] = []
    serving = True

    async def ticker() -> None:
        while serving:
            await asyncio.sleep(0)
            ticks.append(time.perf_counter())

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    handler = pages.debug_routes(status)["/debug/config_dump"]
    started = time.perf_counter()
    response = await handler(Request("/debug/config_dump", {"proxyID": [NODE_ID]}))  # type: ignore[misc]
    finished = time.perf_counter()
    serving = False
    await task

    assert response.status == 200
    assert response.body == inline.body
    assert len(response.body) > 1_000_000
    # Progress in the middle of the dump, not just around it: the loop was never held for the
    # whole of the encoding.
    margin = (finished - started) / 10
    middle = [t for t in ticks if started + margin < t < finished - margin]
    assert len(middle) >= 3, (len(middle), finished - started)
