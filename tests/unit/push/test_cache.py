"""ResourceCache: entries are dropped exactly when something they were built from changes — a
kind they declared, an object they read, or another entry they used — and kept otherwise."""

from __future__ import annotations

from istiolite import type_urls
from istiolite.push.cache import ENDPOINT_KINDS, Invalidation, ResourceCache, memoized
from istiolite.push.dependencies import ANY, SERVICE_ENDPOINTS, Dep, record


class Ctx:
    """A stand-in context: the cache only compares identities."""


def _advanced(cache: ResourceCache, old: Ctx, *changed: Dep) -> tuple[Ctx, Invalidation]:
    new = Ctx()
    return new, cache.advance(old, new, changed)


def test_an_entry_is_dropped_when_an_object_it_read_changes_and_kept_otherwise() -> None:
    cache, ctx = ResourceCache(), Ctx()
    cache.use(ctx)

    def build() -> str:
        record("Pod", "shop", "web-0")
        return "assignment"

    cache.get(("cla", "web"), build, kinds=frozenset(), type_url=type_urls.ENDPOINT, name="web")
    ctx, dropped = _advanced(cache, ctx, Dep("Pod", "shop", "web-1"), Dep("Secret", "shop", "x"))
    assert ("cla", "web") in cache and not dropped.dropped
    ctx, dropped = _advanced(cache, ctx, Dep("Pod", "shop", "web-0"))
    assert ("cla", "web") not in cache
    assert dropped.eds_clusters == {"web"}
    assert dropped.types == {type_urls.ENDPOINT}


def test_a_namespace_wide_read_is_dropped_by_any_object_there() -> None:
    cache, ctx = ResourceCache(), Ctx()
    cache.use(ctx)
    cache.get("sds", lambda: record("Secret", "a", ANY), kinds=frozenset(), type_url="sds")
    ctx, _ = _advanced(cache, ctx, Dep("Secret", "b", "cert"))
    assert "sds" in cache
    ctx, _ = _advanced(cache, ctx, Dep("Secret", "a", "new-one"))
    assert "sds" not in cache


def test_declared_kinds_drop_on_any_object_of_the_kind() -> None:
    cache, ctx = ResourceCache(), Ctx()
    cache.use(ctx)
    cache.get("cla", lambda: 1, kinds=ENDPOINT_KINDS, type_url=type_urls.ENDPOINT)
    ctx, _ = _advanced(cache, ctx, Dep("VirtualService", "shop", "routes"))
    assert "cla" in cache  # endpoints do not read routes
    ctx, _ = _advanced(cache, ctx, Dep("DestinationRule", "other", "dr"))
    assert "cla" not in cache


def test_an_entry_built_from_another_is_dropped_with_it_and_counts_its_own_type() -> None:
    cache, ctx = ResourceCache(), Ctx()
    cache.use(ctx)

    def child() -> int:
        record(SERVICE_ENDPOINTS, "shop", "web")
        return 1

    def parent() -> int:
        return cache.get("child", child, kinds=frozenset(), type_url=type_urls.ENDPOINT) + 1

    cache.get("parent", parent, kinds=frozenset(), type_url=type_urls.CLUSTER)
    assert cache.get("parent", lambda: 99) == 2  # kept: built once
    ctx, dropped = _advanced(cache, ctx, Dep(SERVICE_ENDPOINTS, "shop", "web"))
    assert "parent" not in cache and "child" not in cache
    assert dropped.types == {type_urls.ENDPOINT, type_urls.CLUSTER}


def test_a_parent_that_used_a_cached_child_depends_on_it_too() -> None:
    # The child already exists when the parent is built: the hit still links them.
    cache, ctx = ResourceCache(), Ctx()
    cache.use(ctx)
    cache.get("child", lambda: record("Pod", "ns", "p"), kinds=frozenset())
    cache.get("parent", lambda: cache.get("child", lambda: None), kinds=frozenset())
    ctx, _ = _advanced(cache, ctx, Dep("Pod", "ns", "p"))
    assert "parent" not in cache


def test_memoized_outside_a_generator_just_builds() -> None:
    calls = []
    assert memoized("k", lambda: calls.append(1) or "v") == "v"
    assert memoized("k", lambda: calls.append(1) or "v") == "v"
    assert len(calls) == 2


def test_a_context_it_was_not_advanced_to_starts_it_over() -> None:
    cache, ctx = ResourceCache(), Ctx()
    cache.use(ctx)
    cache.get("k", lambda: 1, kinds=frozenset())
    cache.use(Ctx())  # e.g. a test or `render` with a context of its own
    assert "k" not in cache
    # Advancing from a context it does not serve: everything may have changed.
    cache.get("k", lambda: 1, kinds=frozenset())
    _, dropped = _advanced(cache, Ctx())
    assert dropped.everything and len(cache) == 0


def test_past_its_bound_the_cache_starts_over_and_the_next_push_is_full() -> None:
    cache, ctx = ResourceCache(max_entries=3), Ctx()
    cache.use(ctx)
    for i in range(5):
        cache.get(i, lambda i=i: i, kinds=frozenset())
    assert len(cache) <= 3
    _, dropped = _advanced(cache, ctx)
    assert dropped.everything
