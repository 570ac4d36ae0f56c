"""FileSource: manifests on disk reach the store, bad input is rejected alone, edits propagate."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from structlog.testing import capture_logs

from istiolite import metrics
from istiolite.model.endpointslice import EndpointSlice
from istiolite.model.meta import ObjectKey
from istiolite.model.service import Service
from istiolite.model.store import ConfigStore
from istiolite.sources import files
from istiolite.sources.files import FileSource

T = TypeVar("T")

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
"""

ENDPOINT_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: ["10.1.0.7"]
  conditions: {ready: true}
ports:
- name: http
  port: 8080
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels:
    app: web
spec:
  serviceAccountName: web
  containers:
  - name: app
    ports:
    - name: http
      containerPort: 8080
status:
  podIP: 10.1.0.7
"""

NS = ObjectKey("Namespace", "", "shop")
SVC = ObjectKey("Service", "shop", "web")
SLICE = ObjectKey("EndpointSlice", "shop", "web-abc12")
POD_KEY = ObjectKey("Pod", "shop", "web-1")


def service(name: str, port: int = 80) -> str:
    return SERVICE.replace("name: web\n", f"name: {name}\n").replace("port: 80", f"port: {port}")


def documents(*docs: str) -> str:
    return "---\n".join(docs)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line that contains `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def keys(store: ConfigStore) -> set[ObjectKey]:
    return set(store.snapshot())


async def eventually(condition: Callable[[], T], what: str, within: float = 5.0) -> T:
    """Poll until `condition()` is truthy; a bound on waiting, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def logged(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


class Watched:
    """A FileSource over one directory, watching in the background."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.store = ConfigStore()
        # A short idle tick: the watcher catches up with the disk on its first wake-up.
        self.source = FileSource([directory], self.store, idle_tick_seconds=0.05)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self, *, wait_watching: bool) -> None:
        self.source.load_all()
        self.task = asyncio.create_task(self.source.run(self.stop))
        if wait_watching:
            # So that the edits a test makes next arrive as file events, not through the rescan
            # that follows the watcher's start.
            await eventually(lambda: self.source.watching, "the watcher to start")

    def keys(self) -> set[ObjectKey]:
        return keys(self.store)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Watched]]]:
    started: list[Watched] = []

    async def start(directory: Path | None = None, *, wait_watching: bool = True) -> Watched:
        harness = Watched(directory or tmp_path)
        started.append(harness)
        await harness.start(wait_watching=wait_watching)
        return harness

    try:
        yield start
    finally:
        for harness in started:
            harness.stop.set()
            if harness.task is not None:
                await asyncio.wait_for(harness.task, timeout=10)


def load(directory: Path) -> tuple[FileSource, ConfigStore]:
    store = ConfigStore()
    source = FileSource([directory], store)
    source.load_all()
    return source, store


# -- initial load -------------------------------------------------------------------------------


def test_initial_load_reads_every_kind_of_a_multi_document_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(documents(NAMESPACE, SERVICE, ENDPOINT_SLICE, POD))
    store = ConfigStore()
    source = FileSource([tmp_path], store)
    assert not source.loaded

    source.load_all()

    assert source.loaded
    assert keys(store) == {NS, SVC, SLICE, POD_KEY}
    assert source.errors == []
    assert store.owners(SVC) == [str(path)]
    svc = store.snapshot()[SVC]
    assert isinstance(svc, Service) and svc.ports[0].port == 80
    eps = store.snapshot()[SLICE]
    assert isinstance(eps, EndpointSlice) and eps.service_name == "web"


def test_reads_subdirectories_yml_and_json_and_skips_hidden_and_editor_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "namespace.yml").write_text(NAMESPACE)
    (tmp_path / "svc.json").write_text(
        '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": '
        '"shop"}, "spec": {"ports": [{"name": "http", "port": 80}]}}'
    )
    (tmp_path / ".svc.yaml.swp").write_text(service("swap"))
    (tmp_path / "svc.yaml~").write_text(service("backup"))
    (tmp_path / "notes.txt").write_text(service("notes"))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "old.yaml").write_text(service("in-git"))

    source, store = load(tmp_path)

    assert keys(store) == {NS, SVC}
    assert source.errors == []


def test_json_indented_with_tabs_is_read(tmp_path: Path) -> None:
    # YAML 1.1 refuses tab indentation that JSON allows.
    (tmp_path / "ns.json").write_text(
        '{\n\t"apiVersion": "v1",\n\t"kind": "Namespace",\n\t"metadata": {"name": "shop"}\n}\n'
    )
    source, store = load(tmp_path)
    assert keys(store) == {NS}
    assert source.errors == []


def test_kind_list_items_are_loaded(tmp_path: Path) -> None:
    items = "".join(
        "- " + doc.replace("\n", "\n  ").rstrip() + "\n" for doc in (SERVICE, POD, service("api"))
    )
    (tmp_path / "list.yaml").write_text(f"apiVersion: v1\nkind: List\nitems:\n{items}")
    (tmp_path / "typed-list.yaml").write_text(
        "apiVersion: v1\nkind: NamespaceList\nitems:\n- " + NAMESPACE.replace("\n", "\n  ")
    )

    source, store = load(tmp_path)

    assert keys(store) == {SVC, POD_KEY, ObjectKey("Service", "shop", "api"), NS}
    assert source.errors == []


def test_invalid_item_of_a_list_names_the_item_line(tmp_path: Path) -> None:
    items = "".join(
        "- " + doc.replace("\n", "\n  ").rstrip() + "\n" for doc in (POD, service("bad", 0))
    )
    text = f"apiVersion: v1\nkind: List\nitems:\n{items}"
    path = tmp_path / "list.yaml"
    path.write_text(text)

    source, store = load(tmp_path)

    assert keys(store) == {POD_KEY}
    assert source.errors == [
        {
            "file": str(path),
            "line": line_of(text, "apiVersion: v1", 3),
            "object": "Service shop/bad",
            "field": "spec.ports[0].port",
            "message": "must be between 1 and 65535, got 0",
        }
    ]


def test_empty_documents_and_empty_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("---\n# nothing here\n---\n" + NAMESPACE + "---\n---\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# just a comment\n")
    source, store = load(tmp_path)
    assert keys(store) == {NS}
    assert source.errors == []


def test_invalid_object_is_dropped_alone_and_named(tmp_path: Path) -> None:
    bad_service = service("bad", port=0)
    unlinked_slice = ENDPOINT_SLICE.replace("    kubernetes.io/service-name: web\n", "    x: y\n")
    text = documents(NAMESPACE, bad_service, POD, unlinked_slice, SERVICE)
    path = tmp_path / "mesh.yaml"
    path.write_text(text)

    with capture_logs() as logs:
        source, store = load(tmp_path)

    assert keys(store) == {NS, POD_KEY, SVC}
    service_line = line_of(text, "kind: Service") - 1  # the document starts at its apiVersion
    slice_line = line_of(text, "kind: EndpointSlice") - 1
    assert source.errors == [
        {
            "file": str(path),
            "line": service_line,
            "object": "Service shop/bad",
            "field": "spec.ports[0].port",
            "message": "must be between 1 and 65535, got 0",
        },
        {
            "file": str(path),
            "line": slice_line,
            "object": "EndpointSlice shop/web-abc12",
            "field": "metadata.labels[kubernetes.io/service-name]",
            "message": "is required to link the slice to a Service",
        },
    ]
    rejected = logged(logs, "invalid object rejected")
    assert [(e["file"], e["line"], e["object"], e["field"]) for e in rejected] == [
        (str(path), service_line, "Service shop/bad", "spec.ports[0].port"),
        (
            str(path),
            slice_line,
            "EndpointSlice shop/web-abc12",
            "metadata.labels[kubernetes.io/service-name]",
        ),
    ]
    assert rejected[0]["log_level"] == "error"
    assert "65535" in rejected[0]["message"]
    # The exact line of the value at fault, for an editor to jump to.
    assert rejected[0]["field_line"] == line_of(text, "port: 0")


def test_unknown_kind_is_ignored(tmp_path: Path) -> None:
    crd = (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\n"
        "spec:\n  size: 3\n"
    )
    (tmp_path / "mixed.yaml").write_text(documents(crd, NAMESPACE))
    with capture_logs() as logs:
        source, store = load(tmp_path)
    assert keys(store) == {NS}
    assert source.errors == []
    assert [e for e in logs if e["log_level"] == "error"] == []


UNSUPPORTED = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: shop}
spec: {configPatches: []}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: edge, namespace: shop}
spec: {targetRefs: [{group: "", kind: Service, name: web}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: web, namespace: shop}
spec: {parentRefs: [{name: edge}]}
"""


def test_unsupported_kinds_are_reported_once_per_object_never_dropped_silently(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(documents(UNSUPPORTED, SERVICE))
    before = metrics.UNSUPPORTED_OBJECTS.value("EnvoyFilter")
    with capture_logs() as logs:
        source, store = load(tmp_path)
    assert keys(store) == {SVC}
    assert source.errors == []  # not invalid: valid objects istiolite does not translate
    reported = logged(logs, "object of unsupported kind has no effect")
    assert [(e["object"], e["line"]) for e in reported] == [
        ("EnvoyFilter shop/lua", 1),
        ("BackendTLSPolicy shop/edge", 6),
        ("UDPRoute shop/web", 11),
    ]
    assert all(e["log_level"] == "warning" for e in reported)
    # The Gateway API kinds istiolite does not translate say which ones it does.
    policy = reported[1]["message"]
    assert policy.startswith("not supported by istiolite: BackendTLSPolicy")
    assert "HTTPRoute" in policy
    assert [u["kind"] for u in source.unsupported] == [
        "EnvoyFilter",
        "BackendTLSPolicy",
        "UDPRoute",
    ]
    assert metrics.UNSUPPORTED_OBJECTS.value("EnvoyFilter") == before + 1


async def test_unsupported_object_is_reported_again_only_when_new(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(UNSUPPORTED)
    source, _ = load(tmp_path)
    # An edit elsewhere in the file re-reads it: the objects already reported stay quiet.
    path.write_text(documents(UNSUPPORTED, SERVICE))
    with capture_logs() as logs:
        source._apply(source._scan({str(path)}, set(), source._frozen_state()))
    assert logged(logs, "object of unsupported kind has no effect") == []
    assert len(source.unsupported) == 3
    path.unlink()
    source._apply(source._scan({str(path)}, set(), source._frozen_state()))
    assert source.unsupported == []


def test_object_in_two_files_uses_the_later_file_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("web", 81))
    (tmp_path / "b.yaml").write_text(service("web", 82))
    with capture_logs() as logs:
        _, store = load(tmp_path)
    svc = store.snapshot()[SVC]
    assert isinstance(svc, Service) and svc.ports[0].port == 82
    warning = logged(logs, "object defined by several sources")[-1]
    assert warning["object"] == "Service shop/web"
    assert warning["files"] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    assert warning["used"] == str(tmp_path / "b.yaml")


def test_same_object_twice_in_a_file_uses_the_later(tmp_path: Path) -> None:
    """As `kubectl apply -f` of the file: the later document is what stays."""
    text = documents(service("web", 80), NAMESPACE, service("web", 81))
    path = tmp_path / "dup.yaml"
    path.write_text(text)

    with capture_logs() as logs:
        source, store = load(tmp_path)

    assert keys(store) == {SVC, NS}
    svc = store.snapshot()[SVC]
    assert isinstance(svc, Service) and svc.ports[0].port == 81
    first, second = line_of(text, "kind: Service", 1) - 1, line_of(text, "kind: Service", 2) - 1
    (entry,) = logged(logs, "object defined twice in file")
    assert entry["log_level"] == "warning"
    assert entry["file"] == str(path)
    assert entry["object"] == "Service shop/web"
    assert (entry["line"], entry["first_line"]) == (second, first)
    (problem,) = source.errors
    assert problem["line"] == second
    assert f"lines {first} and {second}" in problem["message"]
    assert f"line {second} (the later) is used" in problem["message"]


def test_repeated_yaml_key_rejects_that_object(tmp_path: Path) -> None:
    # PyYAML would silently keep the last value; kubectl refuses such an object.
    text = documents(SERVICE.replace("    app: web\n", "    app: web\n    app: api\n"), NAMESPACE)
    path = tmp_path / "dup-key.yaml"
    path.write_text(text)
    source, store = load(tmp_path)
    assert keys(store) == {NS}
    (error,) = source.errors
    assert error["field"] == "spec.selector.app"
    assert error["object"] == "Service shop/web"
    assert f"lines {line_of(text, 'app: web')} and {line_of(text, 'app: api')}" in error["message"]


def test_syntax_error_on_first_load_names_file_and_line(tmp_path: Path) -> None:
    text = NAMESPACE + "  labels: [unclosed\n"
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    (tmp_path / "good.yaml").write_text(SERVICE)

    with capture_logs() as logs:
        source, store = load(tmp_path)

    assert keys(store) == {SVC}
    (entry,) = logged(logs, "config file does not parse")
    assert entry["file"] == str(path)
    assert entry["line"] == len(text.splitlines()) + 1  # reported where the input ran out
    assert entry["column"] == 1
    assert f"line {line_of(text, 'labels')}" in entry["error"]  # …and where the list began
    (error,) = source.errors
    assert error["file"] == str(path) and error["line"] == entry["line"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
        (b"kind: Service\x00\x01\n", "not allowed"),
        (b"- a\n- b\n- 3\n", "must be a mapping"),
        (b"just a sentence\n", "must be a mapping"),
        (b"[" * 50_000 + b"]" * 50_000, "nested more than"),
        (b"port: !!int eighty\n", "tagged value"),
        (b"? [a, b]\n: c\n", "unhashable"),
    ],
)
def test_hostile_file_is_reported_and_others_still_load(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "weird.yaml"
    path.write_bytes(content)
    (tmp_path / "ok.yaml").write_text(NAMESPACE)

    source, store = load(tmp_path)

    assert keys(store) == {NS}
    (error,) = source.errors
    assert error["file"] == str(path)
    assert message in error["message"]


def test_unreadable_entries_do_not_stop_the_load(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()  # a directory with a config-file name is walked, not read
    (tmp_path / "dir.yaml" / "ns.yaml").write_text(NAMESPACE)
    os.mkfifo(tmp_path / "pipe.yaml")  # reading it would block forever
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "svc.yaml").write_text(SERVICE)
    private = tmp_path / "private.yaml"
    private.write_text(POD)
    private.chmod(0)

    source, store = load(tmp_path)

    expected = {NS, SVC} if os.geteuid() != 0 else {NS, SVC, POD_KEY}  # root reads anything
    assert keys(store) == expected
    problems = {e["file"]: e["message"] for e in source.errors}
    assert problems[str(tmp_path / "pipe.yaml")] == "not a regular file"
    if os.geteuid() != 0:
        assert str(private) in problems


def test_missing_directory_is_logged_and_others_load(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    store = ConfigStore()
    with capture_logs() as logs:
        source = FileSource([tmp_path / "absent", tmp_path], store)
        source.load_all()
    assert keys(store) == {NS}
    assert source.loaded
    (entry,) = logged(logs, "config directory does not exist")
    assert entry["directory"] == str(tmp_path / "absent")


# -- watching -----------------------------------------------------------------------------------


async def test_modified_file_is_reloaded(tmp_path: Path, watched: Any) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(service("web", 80))
    w = await watched()
    assert w.keys() == {SVC}

    path.write_text(service("web", 8080))

    await eventually(lambda: w.store.snapshot()[SVC].ports[0].port == 8080, "port 8080")


async def test_created_file_is_loaded(tmp_path: Path, watched: Any) -> None:
    w = await watched()
    assert w.keys() == set()

    (tmp_path / "new.yaml").write_text(documents(NAMESPACE, POD))

    await eventually(lambda: w.keys() == {NS, POD_KEY}, "the new file's objects")


async def test_file_in_a_new_subdirectory_is_loaded(tmp_path: Path, watched: Any) -> None:
    w = await watched()
    sub = tmp_path / "team" / "shop"
    sub.mkdir(parents=True)
    (sub / "svc.yaml").write_text(SERVICE)
    await eventually(lambda: w.keys() == {SVC}, "the object in the new directory")


async def test_deleted_file_removes_its_objects(tmp_path: Path, watched: Any) -> None:
    (tmp_path / "a.yaml").write_text(documents(NAMESPACE, SERVICE))
    (tmp_path / "b.yaml").write_text(POD)
    w = await watched()
    assert w.keys() == {NS, SVC, POD_KEY}

    (tmp_path / "a.yaml").unlink()

    await eventually(lambda: w.keys() == {POD_KEY}, "a.yaml's objects to go")


async def test_removed_directory_removes_its_objects(tmp_path: Path, watched: Any) -> None:
    sub = tmp_path / "sub"
    (sub / "deeper").mkdir(parents=True)
    (sub / "deeper" / "svc.yaml").write_text(SERVICE)
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    w = await watched()
    assert w.keys() == {NS, SVC}

    shutil.rmtree(sub)

    await eventually(lambda: w.keys() == {NS}, "the directory's objects to go")


async def test_directory_moved_away_removes_its_objects(tmp_path: Path, watched: Any) -> None:
    conf = tmp_path / "conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "sub" / "svc.yaml").write_text(SERVICE)
    w = await watched(conf)
    assert w.keys() == {SVC}

    (conf / "sub").rename(tmp_path / "elsewhere")  # one event for the directory, none per file

    await eventually(lambda: w.keys() == set(), "the moved directory's objects to go")


async def test_renamed_file_keeps_objects_under_its_new_name(tmp_path: Path, watched: Any) -> None:
    (tmp_path / "old.yaml").write_text(SERVICE)
    w = await watched()

    (tmp_path / "old.yaml").rename(tmp_path / "new.yaml")

    await eventually(
        lambda: w.store.owners(SVC) == [str(tmp_path / "new.yaml")], "the new file to own it"
    )
    assert w.keys() == {SVC}


async def test_file_renamed_to_another_extension_is_unloaded(tmp_path: Path, watched: Any) -> None:
    (tmp_path / "svc.yaml").write_text(SERVICE)
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    w = await watched()

    (tmp_path / "svc.yaml").rename(tmp_path / "svc.yaml.disabled")

    await eventually(lambda: w.keys() == {NS}, "the renamed-away file's objects to go")


async def test_syntax_error_keeps_previous_objects(tmp_path: Path, watched: Any) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(documents(NAMESPACE, SERVICE))
    w = await watched()
    assert w.keys() == {NS, SVC}

    broken = documents(NAMESPACE, SERVICE.replace("  selector:\n", "  selector: {app: web\n"))
    with capture_logs() as logs:
        path.write_text(broken)
        entries = await eventually(
            lambda: logged(logs, "config file does not parse"), "the parse error"
        )

    assert w.keys() == {NS, SVC}
    assert entries[0]["file"] == str(path)
    assert entries[0]["line"] == line_of(broken, "app: web", 2)
    assert [e["file"] for e in w.source.errors] == [str(path)]

    # Fixing the file clears the problem and applies the new content.
    path.write_text(NAMESPACE)
    await eventually(lambda: w.keys() == {NS}, "the fixed file to apply")
    assert w.source.errors == []


async def test_invalid_edit_drops_only_that_object(tmp_path: Path, watched: Any) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(documents(NAMESPACE, SERVICE, POD))
    w = await watched()

    text = documents(NAMESPACE, service("web", 0), POD)
    path.write_text(text)

    await eventually(lambda: w.keys() == {NS, POD_KEY}, "the invalid Service to be dropped")
    (error,) = w.source.errors
    assert error["object"] == "Service shop/web"
    assert error["line"] == line_of(text, "kind: Service") - 1


async def test_configmap_volume_update_is_seen(tmp_path: Path, watched: Any) -> None:
    # kubelet's atomic writer: visible files are symlinks through `..data`, which is swapped.
    def publish(version: str, content: str) -> None:
        data = tmp_path / f"..{version}"
        data.mkdir()
        (data / "mesh.yaml").write_text(content)
        tmp_link = tmp_path / "..data_tmp"
        tmp_link.symlink_to(data.name, target_is_directory=True)
        tmp_link.rename(tmp_path / "..data")

    publish("2024_01_01", service("web", 80))
    (tmp_path / "mesh.yaml").symlink_to("..data/mesh.yaml")
    w = await watched()
    assert w.keys() == {SVC}
    assert w.store.owners(SVC) == [str(tmp_path / "mesh.yaml")]

    publish("2024_01_02", service("web", 9090))
    shutil.rmtree(tmp_path / "..2024_01_01")

    await eventually(lambda: w.store.snapshot()[SVC].ports[0].port == 9090, "the new version")
    assert w.store.owners(SVC) == [str(tmp_path / "mesh.yaml")]


async def test_config_directory_removed_and_recreated(tmp_path: Path, watched: Any) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "svc.yaml").write_text(SERVICE)
    w = await watched(conf)
    assert w.keys() == {SVC}

    shutil.rmtree(conf)
    await eventually(lambda: w.keys() == set(), "the directory's objects to go")

    conf.mkdir()
    (conf / "ns.yaml").write_text(NAMESPACE)
    await eventually(lambda: w.keys() == {NS}, "the recreated directory to load")

    (conf / "ns.yaml").write_text(documents(NAMESPACE, POD))
    await eventually(lambda: w.keys() == {NS, POD_KEY}, "edits in the recreated directory")


async def test_directory_missing_at_start_is_picked_up(tmp_path: Path, watched: Any) -> None:
    conf = tmp_path / "later"
    w = await watched(conf, wait_watching=False)
    assert w.source.loaded and w.keys() == set()

    conf.mkdir()
    (conf / "svc.yaml").write_text(SERVICE)

    await eventually(lambda: w.keys() == {SVC}, "the directory that appeared")


async def test_run_without_load_all_loads_first(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    store = ConfigStore()
    source = FileSource([tmp_path], store)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        await eventually(lambda: source.loaded, "the first load")
        assert keys(store) == {NS}
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_cancelling_run_stops_the_watcher(tmp_path: Path) -> None:
    store = ConfigStore()
    source = FileSource([tmp_path], store)
    source.load_all()
    task = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
    finally:
        if not task.done():
            task.cancel()
    assert task.cancelled()


# -- hostile files: each one's failure is its own ------------------------------------------------

DEEP_JSON = "[" * 10_000 + "]" * 10_000
BIG_INT = "9" * 5_000


def json_service(port: str, *, indent: str = "  ") -> str:
    """SERVICE as JSON with `port` written verbatim; tab indentation is JSON that YAML refuses."""
    return (
        (
            '{\n{i}"apiVersion": "v1", "kind": "Service",\n'
            '{i}"metadata": {"name": "web", "namespace": "shop"},\n'
            '{i}"spec": {"ports": [{"name": "http", "port": PORT}]}\n}\n'
        )
        .replace("{i}", indent)
        .replace("PORT", port)
    )


def rejects(reason: str) -> float:
    return metrics.INVALID_CONFIG.value(reason)


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("deep.json", DEEP_JSON, 1, "nested more than 500 levels deep"),
        ("deep-tabs.json", json_service(DEEP_JSON, indent="\t"), 4, "nested more than 500"),
        ("bigint.json", json_service(BIG_INT), 4, "integer of 5000 digits is too long"),
        ("bigint-tabs.json", json_service(BIG_INT, indent="\t"), 4, "integer of 5000 digits"),
        ("bigint.yaml", SERVICE.replace("port: 80", f"port: {BIG_INT}"), 11, "5000 digits"),
    ],
)
def test_bad_number_or_nesting_is_named_and_other_files_load(
    tmp_path: Path, name: str, content: str, line: int, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    (tmp_path / "pod.json").write_text(json.dumps(yaml.safe_load(POD)))
    before = rejects("config file does not parse")

    with capture_logs() as logs:
        source, store = load(tmp_path)

    assert keys(store) == {NS, POD_KEY}
    (error,) = source.errors
    assert error["file"] == str(path)
    assert error["line"] == line
    assert message in error["message"]
    (entry,) = logged(logs, "config file does not parse")
    assert entry["file"] == str(path) and message in entry["error"]
    assert rejects("config file does not parse") == before + 1


async def test_bad_json_file_does_not_stop_the_watcher(tmp_path: Path, watched: Any) -> None:
    good = tmp_path / "svc.yaml"
    good.write_text(service("web", 80))
    w = await watched()

    with capture_logs() as logs:
        (tmp_path / "deep.json").write_text(DEEP_JSON)
        await eventually(lambda: w.source.errors, "the bad file to be reported")
        (tmp_path / "bigint.json").write_text(json_service(BIG_INT))
        await eventually(lambda: len(w.source.errors) == 2, "the second bad file")
        good.write_text(service("web", 8080))
        await eventually(lambda: w.store.snapshot()[SVC].ports[0].port == 8080, "the edit")

    assert [e["file"] for e in w.source.errors] == [
        str(tmp_path / "bigint.json"),
        str(tmp_path / "deep.json"),
    ]
    assert not logged(logs, "config directory watcher failed; restarting")


async def test_unexpected_parser_failure_costs_only_that_file(
    tmp_path: Path, watched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = files.read_objects

    def flaky(text: str, *, json_fallback: bool = False) -> Any:
        if "boom" in text:
            raise RuntimeError("parser bug")
        return real(text, json_fallback=json_fallback)

    monkeypatch.setattr(files, "read_objects", flaky)
    (tmp_path / "boom.yaml").write_text(NAMESPACE + "  labels: {boom: x}\n")
    good = tmp_path / "svc.yaml"
    good.write_text(service("web", 80))

    w = await watched()

    assert w.keys() == {SVC}
    (error,) = w.source.errors
    assert error["file"] == str(tmp_path / "boom.yaml")
    assert error["message"] == "could not be parsed: RuntimeError: parser bug"
    good.write_text(service("web", 8080))
    await eventually(lambda: w.store.snapshot()[SVC].ports[0].port == 8080, "the edit")


def test_file_over_the_size_limit_is_named(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(NAMESPACE + "#" * files.MAX_FILE_BYTES)
    (tmp_path / "svc.yaml").write_text(SERVICE)
    before = rejects("config file too large")

    source, store = load(tmp_path)

    assert keys(store) == {SVC}
    (error,) = source.errors
    assert error["file"] == str(path)
    assert error["message"] == "larger than 4 MiB; split it into several files"
    assert rejects("config file too large") == before + 1


def billion_laughs() -> str:
    lines = ['  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(lines) + "\n"


def route_bomb(width: int) -> str:
    """A valid-looking VirtualService: `width` routes of `width` matches of 20 headers each."""
    headers = ", ".join(f"x-h{i}: {{exact: v{i}}}" for i in range(20))
    matches = ", ".join(["&m {headers: {" + headers + "}}"] + ["*m"] * (width - 1))
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: bomb, namespace: shop}\nspec:\n  hosts: [web]\n  http:\n"
        f"  - &r {{match: [{matches}], route: [{{destination: {{host: web}}}}]}}\n"
        + "".join("  - *r\n" for _ in range(width - 1))
    )


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize(
    "bomb",
    [
        NAMESPACE.replace("metadata:", "lol:\n" + billion_laughs() + "metadata:"),
        route_bomb(100),
    ],
    ids=["billion-laughs", "virtualservice"],
)
def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path, bomb: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(documents(SERVICE, bomb))
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    assert len(bomb) < 4_000
    peak = peak_rss_bytes()

    started = time.monotonic()
    source, store = load(tmp_path)
    elapsed = time.monotonic() - started

    assert keys(store) == {NS}  # the whole bomb file is refused, its other document too
    (error,) = source.errors
    assert error["file"] == str(path)
    assert error["line"] == line_of(documents(SERVICE, bomb), "apiVersion", 2)
    assert "aliases expand it to" in error["message"]
    assert "(they may add at most 100,000)" in error["message"]
    assert elapsed < 1.0
    assert peak_rss_bytes() - peak < 50 * 1024 * 1024


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    text = NAMESPACE + "  labels: &l {a: *l}\n"
    path.write_text(text)

    source, store = load(tmp_path)

    assert keys(store) == set()
    (error,) = source.errors
    assert error["line"] == 1
    anchor = line_of(text, "&l")
    assert error["message"] == f"document contains itself (an alias of the anchor at line {anchor})"


def test_moderate_alias_use_loads(tmp_path: Path) -> None:
    # 500 references to a 151-node mapping: 75,500 nodes added, under the limit.
    labels = ", ".join(f"k{i}: v{i}" for i in range(75))
    text = (
        NAMESPACE
        + f"  labels: &c {{{labels}}}\n"
        + "references:\n"
        + "".join("- *c\n" for _ in range(499))
    )
    (tmp_path / "aliases.yaml").write_text(text)

    source, store = load(tmp_path)

    assert source.errors == []
    assert store.snapshot()[NS].meta.labels["k74"] == "v74"


def test_merge_keys_still_load(tmp_path: Path) -> None:
    text = (
        NAMESPACE.replace("metadata:\n", "defaults: &d {app: web, tier: front}\nmetadata:\n")
        + "  labels:\n    <<: *d\n    tier: back\n"
    )
    (tmp_path / "merge.yaml").write_text(text)

    source, store = load(tmp_path)

    assert source.errors == []
    assert store.snapshot()[NS].meta.labels == {"app": "web", "tier": "back"}
