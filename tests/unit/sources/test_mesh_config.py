"""The mesh config file as the store sees it: loaded before the first push, reloaded when the
ConfigMap volume swaps its data (a symlink in the directory), a bad edit refused with the
field named while the last good config stays."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from istiolite.model.mesh_config import MESH_CONFIG_KEY
from istiolite.model.store import ConfigStore
from istiolite.sources.mesh_config import MeshConfigError, MeshConfigFile


def _configmap_volume(root: Path, text: str, generation: int) -> Path:
    """Write `mesh` as the kubelet does: data in a new directory, `..data` swapped to it."""
    data = root / f"..{generation}"
    data.mkdir()
    (data / "mesh").write_text(text)
    link = root / "..data_tmp"
    link.symlink_to(data.name)
    os.replace(link, root / "..data")
    if not (root / "mesh").is_symlink():
        (root / "mesh").symlink_to("..data/mesh")
    return root / "mesh"


def test_load_puts_the_config_in_the_store(tmp_path: Path) -> None:
    path = _configmap_volume(tmp_path, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", 1)
    store = ConfigStore()
    MeshConfigFile(path, store, trust_domain="cluster.local").load()
    assert store.snapshot()[MESH_CONFIG_KEY].outbound_mode == "REGISTRY_ONLY"


@pytest.mark.parametrize(
    ("text", "words"),
    [("outboundTrafficPolicy: {mode: DENY}\n", "outboundTrafficPolicy.mode: 'DENY'"), (None, "")],
)
def test_an_unusable_file_names_itself_and_the_field(
    tmp_path: Path, text: str | None, words: str
) -> None:
    path = tmp_path / "mesh"
    if text is not None:
        path.write_text(text)
    with pytest.raises(MeshConfigError) as err:
        MeshConfigFile(path, ConfigStore(), trust_domain="cluster.local").load()
    assert str(path) in str(err.value)
    assert words in str(err.value)


async def test_the_file_is_watched_and_a_bad_edit_keeps_the_last_good_config(
    tmp_path: Path,
) -> None:
    path = _configmap_volume(tmp_path, "outboundTrafficPolicy: {mode: ALLOW_ANY}\n", 1)
    store = ConfigStore()
    watched = MeshConfigFile(path, store, trust_domain="cluster.local")
    watched.load()
    changes: list[object] = []
    store.subscribe(changes.append)
    stop = asyncio.Event()
    task = asyncio.create_task(watched.run(stop))

    async def until(condition: object, what: str) -> None:
        for _ in range(200):  # 10 s at most
            if condition():  # type: ignore[operator]
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out: {what}")

    try:
        await asyncio.sleep(0.3)  # the watch is set up
        _configmap_volume(tmp_path, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", 2)
        await until(
            lambda: store.snapshot()[MESH_CONFIG_KEY].outbound_mode == "REGISTRY_ONLY",
            "the new mode in the store",
        )
        assert len(changes) == 1

        _configmap_volume(tmp_path, "outboundTrafficPolicy: {mode: NOPE}\n", 3)
        await until(lambda: watched.errors == 1, "the bad edit refused")
        assert store.snapshot()[MESH_CONFIG_KEY].outbound_mode == "REGISTRY_ONLY"
        assert len(changes) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
