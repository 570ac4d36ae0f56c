"""/debug/registryz and /debug/configz (every service with its endpoints, every object) are built,
not only encoded, in the render thread: at 20k services building them on the event loop held it
for over a second per request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from istiolite.debug import pages
from istiolite.http_server import Request
from tests.unit.debug import state as s


@pytest.mark.parametrize(
    ("path", "builder"), [("/debug/registryz", "registryz"), ("/debug/configz", "configz_of")]
)
async def test_the_page_body_is_built_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, builder: str
) -> None:
    app = s.make_app(tmp_path)
    built_on: list[int] = []
    real: Callable[..., Any] = getattr(pages, builder)

    def spy(*args: Any) -> Any:
        built_on.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(pages, builder, spy)
    handler = pages.debug_routes(s.status(app))[path]
    response = await handler(Request(path))  # type: ignore[misc]
    assert response.status == 200
    assert b"reviews" in bytes(response.body)
    assert built_on and threading.get_ident() not in built_on, "built on the event loop thread"


def test_configz_lists_each_object_with_all_its_sources(tmp_path: Path) -> None:
    """The owners of every object, gathered in one pass over the sources (it was one pass per
    object: seconds at thousands of files), as the store reports them one by one."""
    app = s.make_app(tmp_path)
    page = pages.configz(s.status(app))
    assert page["objects"]
    for entry in page["objects"]:
        key = next(
            k
            for k in app.store.snapshot()
            if (k.kind, k.namespace, k.name) == (entry["kind"], entry["namespace"], entry["name"])
        )
        assert entry["sources"] == app.store.owners(key)
