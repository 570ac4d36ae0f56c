"""ConfigStore: per-source object sets merged deterministically; only real changes are announced."""

from __future__ import annotations

from typing import Any

from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.model.store import ChangeSet, ConfigStore

WEB = ObjectKey("Service", "shop", "web")
DB = ObjectKey("Service", "shop", "db")


def svc(name: str, port: int = 80) -> Any:
    _, obj = parse_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": port}]},
        }
    )
    return obj


class Recorder:
    def __init__(self) -> None:
        self.calls: list[ChangeSet] = []

    def __call__(self, changes: ChangeSet) -> None:
        self.calls.append(changes)


def test_first_load_reports_every_key_and_tells_listeners() -> None:
    store = ConfigStore()
    seen = Recorder()
    store.subscribe(seen)
    changes = store.replace_source("file:a.yaml", {WEB: svc("web"), DB: svc("db")})
    assert changes.keys == {WEB, DB}
    assert changes.kinds == {"Service"}
    assert seen.calls == [changes]
    assert dict(store.snapshot()) == {WEB: svc("web"), DB: svc("db")}


def test_replacing_with_equal_objects_changes_nothing_and_is_silent() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web"), DB: svc("db")})
    seen = Recorder()
    store.subscribe(seen)
    # Freshly parsed, equal objects: a re-read of an unchanged file.
    changes = store.replace_source("file:a.yaml", {WEB: svc("web"), DB: svc("db")})
    assert changes.keys == frozenset()
    assert seen.calls == []


def test_only_the_really_changed_key_is_reported() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web"), DB: svc("db")})
    seen = Recorder()
    store.subscribe(seen)
    changes = store.replace_source("file:a.yaml", {WEB: svc("web", port=8080), DB: svc("db")})
    assert changes.keys == {WEB}
    assert [c.keys for c in seen.calls] == [{WEB}]
    assert store.snapshot()[WEB].ports[0].port == 8080


def test_object_dropped_from_a_source_is_removed() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web"), DB: svc("db")})
    changes = store.replace_source("file:a.yaml", {WEB: svc("web")})
    assert changes.keys == {DB}
    assert DB not in store.snapshot()


def test_removing_a_source_removes_its_objects() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web")})
    store.replace_source("file:b.yaml", {DB: svc("db")})
    changes = store.replace_source("file:a.yaml", {})
    assert changes.keys == {WEB}
    assert set(store.snapshot()) == {DB}
    assert store.owners(WEB) == []


def test_removing_an_unknown_source_is_silent() -> None:
    store = ConfigStore()
    seen = Recorder()
    store.subscribe(seen)
    assert store.replace_source("file:never.yaml", {}).keys == frozenset()
    assert seen.calls == []


def test_source_sorting_last_wins_whatever_the_load_order() -> None:
    """As `kubectl apply -f DIR`: files are applied in name order, so the later one stays."""
    store = ConfigStore()
    store.replace_source("file:b.yaml", {WEB: svc("web", port=82)})
    assert store.replace_source("file:a.yaml", {WEB: svc("web", port=81)}).keys == frozenset()
    assert store.snapshot()[WEB].ports[0].port == 82
    assert store.owners(WEB) == ["file:a.yaml", "file:b.yaml"]

    other = ConfigStore()
    other.replace_source("file:a.yaml", {WEB: svc("web", port=81)})
    assert other.replace_source("file:b.yaml", {WEB: svc("web", port=82)}).keys == {WEB}
    assert other.snapshot()[WEB].ports[0].port == 82


def test_losing_source_changes_are_not_announced() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web", port=81)})
    store.replace_source("file:b.yaml", {WEB: svc("web", port=82)})
    seen = Recorder()
    store.subscribe(seen)
    assert store.replace_source("file:a.yaml", {WEB: svc("web", port=83)}).keys == frozenset()
    assert seen.calls == []


def test_removing_the_winner_reveals_the_other_definition() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web", port=81)})
    store.replace_source("file:b.yaml", {WEB: svc("web", port=82)})
    changes = store.replace_source("file:b.yaml", {})
    assert changes.keys == {WEB}
    assert store.snapshot()[WEB].ports[0].port == 81


def test_snapshot_does_not_follow_later_changes() -> None:
    store = ConfigStore()
    store.replace_source("file:a.yaml", {WEB: svc("web")})
    before = store.snapshot()
    store.replace_source("file:a.yaml", {DB: svc("db")})
    assert set(before) == {WEB}
    assert set(store.snapshot()) == {DB}


def test_a_file_wins_over_another_source_whatever_the_names() -> None:
    store = ConfigStore()
    store.replace_source("/etc/mesh/web.yaml", {WEB: svc("web", port=81)})
    store.update_source("kubernetes/Service", {WEB: svc("web", port=82)}, ())
    assert store.snapshot()[WEB].ports[0].port == 81
