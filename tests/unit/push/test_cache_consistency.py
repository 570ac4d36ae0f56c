"""The live path (Pusher: context derived from the previous one, cache advanced, entries kept
where nothing they read changed) gives exactly what a fresh build gives, for every golden case,
after removing and restoring each object of it in turn. If an entry forgot a dependency, some
removal here leaves a proxy with stale config."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite import type_urls
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.model.store import ConfigStore
from istiolite.networking.generator import ConfigGenerator, generate
from istiolite.push.cache import ResourceCache
from istiolite.push.context import PushContext
from istiolite.push.pusher import Pusher
from istiolite.sources.files import FileSource

CASES = Path(__file__).parents[2] / "golden" / "cases"
DOMAIN = "cluster.local"


def _proxies(case: Path) -> list[Proxy]:
    out = []
    for node_file in sorted(case.glob("*.node.yaml")):
        node = yaml.safe_load(node_file.read_text())
        metadata = dict(node.get("meta", {}))
        if node.get("labels"):
            metadata["LABELS"] = node["labels"]
        out.append(parse_proxy(node["id"], metadata))
    return out


def _versions(resources: Any) -> dict[str, str]:
    return {name: r.version for name, r in resources.items()}


@pytest.mark.parametrize("case", sorted(CASES.iterdir()), ids=lambda p: p.name)
def test_kept_entries_match_a_fresh_build_after_every_change(case: Path) -> None:
    loaded = ConfigStore()
    FileSource([case / "config"], loaded).load_all()
    objects = dict(loaded.snapshot())
    store = ConfigStore()
    for key, obj in objects.items():  # one source per object, so each can come and go alone
        store.replace_source(str(key), {key: obj})
    cache = ResourceCache()
    live = ConfigGenerator(cache)
    published: list[PushContext] = []
    pusher = Pusher(store, cache, domain=DOMAIN, publish=lambda ctx, _: published.append(ctx))
    pusher.start()
    proxies = _proxies(case)

    def check(step: str) -> None:
        ctx = published[-1]
        fresh = PushContext(store.snapshot(), domain=DOMAIN, version="fresh")
        for proxy in proxies:
            for type_url in type_urls.PUSH_ORDER:
                got = _versions(live(ctx, proxy, type_url))
                want = _versions(generate(fresh, proxy, type_url))
                assert got == want, f"{step}: {proxy.id} {type_urls.short_name(type_url)}"

    check("start")
    for key in sorted(objects, key=str):
        for step, content in (("removed", {}), ("restored", {key: objects[key]})):
            changes = store.replace_source(str(key), content)
            pusher.push([(time.monotonic(), changes)])
            check(f"{key} {step}")
