"""Config directories → the store: load every manifest once, then watch and reload what changed.

Each file is one store source (its absolute path), so a file's objects are replaced or removed
together and two files defining the same object are settled by the store, not by read order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import watchfiles

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.kinds import UnknownKind, UnsupportedKind, parse_object
from istiolite.model.meta import ObjectKey, describe_raw
from istiolite.model.store import ConfigStore, winner_of
from istiolite.model.validation import ValidationError
from istiolite.sources.yaml_documents import ManifestSyntaxError, RawObject, read_objects

log = get_logger("sources.files")

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# Room for a couple of objects at the API server's own cap (~1.5 MiB each) or a `kind: List` of
# thousands of small ones; a stray dump named *.yaml must not eat the process's memory or
# stall a reload (parsing runs at a few MB/s).
MAX_FILE_BYTES = 4 * 1024 * 1024
# Batch the bursts of one save (write, rename, chmod) but still propagate within a second.
DEBOUNCE_MS = 50
STEP_MS = 10
# How often an idle watcher wakes up to notice a config directory appearing or vanishing.
IDLE_TICK_SECONDS = 1.0

_PARSE_ERROR = "config file does not parse"
_INVALID_OBJECT = "invalid object rejected"
_DUPLICATE_OBJECT = "object defined twice in file"
_UNREADABLE = "config file unreadable"
_TOO_LARGE = "config file too large"
_FILE_EVENTS = (_PARSE_ERROR, _UNREADABLE, _TOO_LARGE)  # about the file, not one object


@dataclass(slots=True)
class _Problem:
    """Something wrong in one file: logged when found, listed by FileSource.errors until fixed."""

    event: str
    file: str
    line: int | None
    object: str = ""
    field_path: str = ""
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # extra log fields

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "object": self.object,
            "field": self.field_path,
            "message": self.message,
        }

    def emit(self) -> None:
        fields: dict[str, Any] = {"file": self.file, "line": self.line}
        if self.event in _FILE_EVENTS:
            fields["error"] = self.message
        else:
            fields.update(object=self.object, field=self.field_path, message=self.message)
        # A repeated object is still loaded (the later copy): a warning, not a rejection.
        emit = log.warning if self.event == _DUPLICATE_OBJECT else log.error
        emit(self.event, **fields, **self.details)
        metrics.INVALID_CONFIG.inc(self.event)


@dataclass(slots=True)
class _FileResult:
    source: str
    # loaded: objects replace the file's; failed: keep what the file had; gone: remove it all;
    # unchanged: same bytes as last read, nothing to do.
    state: Literal["loaded", "failed", "gone", "unchanged"]
    objects: dict[ObjectKey, Any] = field(default_factory=dict)
    problems: list[_Problem] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)  # unknown kinds, debug-logged
    # Mesh kinds istiolite does not translate: reported (log, metric, configz), never dropped
    # silently.
    unsupported: list[dict[str, Any]] = field(default_factory=list)
    digest: bytes | None = None


@dataclass(slots=True)
class _Scan:
    """What one pass over the disk found; built off the event loop, applied on it."""

    results: list[_FileResult] = field(default_factory=list)
    warnings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    present_roots: frozenset[str] = frozenset()
    restart_watch: bool = False


class FileSource:
    """Loads `*.yaml`, `*.yml` and `*.json` manifests under the given directories into the store.

    Hidden files and directories are skipped (editor swap files, `.git`), except that a change
    under `..data`-style directories (the atomic swap kubelet does for a mounted ConfigMap)
    rescans the directory holding them.
    """

    def __init__(
        self,
        directories: list[Path],
        store: ConfigStore,
        *,
        idle_tick_seconds: float = IDLE_TICK_SECONDS,
    ) -> None:
        # Absolute but not symlink-resolved: a ConfigMap file resolves to a path under a
        # timestamped directory that changes on every update, and the source id must not.
        self._roots: tuple[str, ...] = tuple(dict.fromkeys(os.path.abspath(d) for d in directories))
        self._store = store
        self._digests: dict[str, bytes] = {}
        self._known: set[str] = set()  # files that have objects in the store or problems listed
        self._problems: dict[str, list[_Problem]] = {}
        self._unsupported: dict[str, list[dict[str, Any]]] = {}
        self._missing_roots: set[str] = set()
        self.loaded = False
        # True while the watch is in place and caught up with the disk: edits made from then on
        # arrive as file events.
        self.watching = False
        self._tick = idle_tick_seconds

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The current problems of every file (file, line, object, field, message)."""
        return [p.as_dict() for source in sorted(self._problems) for p in self._problems[source]]

    @property
    def unsupported(self) -> list[dict[str, Any]]:
        """Objects of kinds istiolite does not translate (file, line, object, kind, message)."""
        return [u for source in sorted(self._unsupported) for u in self._unsupported[source]]

    def load_all(self) -> None:
        """Read every file now (blocking); meant for start-up, before the event loop is busy."""
        self._apply(self._scan(set(), set(self._roots), self._frozen_state()), initial=True)
        self.loaded = True

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Watch the directories and reload what changes, until `stop` is set or cancelled."""
        if not self.loaded:
            state = self._frozen_state()
            scan = await asyncio.to_thread(self._scan, set(), set(self._roots), state)
            self._apply(scan, initial=True)
            self.loaded = True
        halt = asyncio.Event()
        watcher = asyncio.create_task(self._watch(halt), name="config-file-watcher")
        tasks: set[asyncio.Task[Any]] = {watcher}
        if stop is not None:
            tasks.add(asyncio.create_task(stop.wait(), name="config-file-watcher-stop"))
        try:
            # asyncio.wait, not await: cancelling run() must not cancel the watcher mid-thread,
            # it must be told to halt so the watch thread ends with it.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.set()
            for task in tasks - {watcher}:
                task.cancel()
            await asyncio.wait(tasks)
        watcher.result()

    # -- watching --------------------------------------------------------------------------

    async def _watch(self, halt: asyncio.Event) -> None:
        previous: frozenset[str] | None = None
        while not halt.is_set():
            present = await asyncio.to_thread(self._present_roots)
            self._note_roots(present)
            try:
                if present:
                    previous = present
                    await self._watch_roots(present, halt)  # rescans on its first wake-up
                    continue
                if previous != present:
                    # Nothing left to watch, but the files of vanished directories must go.
                    previous = present
                    state = self._frozen_state()
                    self._apply(await asyncio.to_thread(self._scan, set(), set(self._roots), state))
            except Exception:  # never stop watching over one failure (a directory just removed…)
                log.exception("config directory watcher failed; restarting")
            # Nothing watchable (or a failure): poll until a directory appears.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self._tick)

    async def _watch_roots(self, present: frozenset[str], halt: asyncio.Event) -> None:
        """One watcher over the directories that exist; returns when that set must change."""
        changes = watchfiles.awatch(
            *sorted(present),
            watch_filter=None,  # our own rules: hidden paths matter for ConfigMap mounts
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=halt,
            rust_timeout=max(1, round(self._tick * 1000)),
            yield_on_timeout=True,
            ignore_permission_denied=True,
        )
        # The first wake-up (an event, or the idle tick) rescans everything, catching what
        # changed between the load (or the previous watcher) and the watch being in place.
        rescan = set(self._roots)
        try:
            async with contextlib.aclosing(changes):
                async for batch in changes:
                    scan = await self._scan_batch({path for _, path in batch}, rescan, present)
                    rescan = set()
                    self._apply(scan)
                    self.watching = True
                    if scan.restart_watch or halt.is_set():
                        return
        finally:
            self.watching = False

    async def _scan_batch(self, paths: set[str], trees: set[str], watched: frozenset[str]) -> _Scan:
        if not paths and not trees:  # idle tick: only check the directories still exist
            present = await asyncio.to_thread(self._present_roots)
            return _Scan(present_roots=present, restart_watch=present != watched)
        state = self._frozen_state()
        return await asyncio.to_thread(self._scan_changes, paths, trees, watched, state)

    # -- disk side (runs in a worker thread, touches no mutable state) ------------------------

    def _frozen_state(self) -> tuple[frozenset[str], dict[str, bytes]]:
        return frozenset(self._known), dict(self._digests)

    def _present_roots(self) -> frozenset[str]:
        return frozenset(r for r in self._roots if os.path.isdir(r))

    def _scan_changes(
        self,
        paths: set[str],
        trees: set[str],
        watched: frozenset[str],
        state: tuple[frozenset[str], dict[str, bytes]],
    ) -> _Scan:
        files: set[str] = set()
        trees = set(trees)
        restart = False
        for path in paths:
            if path in self._roots:
                restart = True  # the directory itself moved or was replaced: its watch is gone
            target = self._classify(path, state[0])
            if target is not None:
                (trees if target[0] == "tree" else files).add(target[1])
        scan = self._scan(files, trees, state)
        scan.restart_watch = restart or scan.present_roots != watched
        return scan

    def _classify(self, path: str, known: frozenset[str]) -> tuple[str, str] | None:
        """Which reload an event path calls for: ("file", path), ("tree", dir) or None."""
        root = self._root_of(path)
        if root is None:
            return None
        if path == root:
            return ("tree", root)
        parts = Path(os.path.relpath(path, root)).parts
        for i, part in enumerate(parts):
            if part.startswith(".."):
                # kubelet updates a ConfigMap volume by swapping the hidden `..data` symlink;
                # the visible files are symlinks through it and report no event of their own.
                return ("tree", os.path.join(root, *parts[:i]))
            if part.startswith("."):
                return None
        if os.path.isdir(path):
            return ("tree", path)
        if path.endswith(CONFIG_SUFFIXES):
            return ("file", path)
        prefix = path + os.sep
        if any(k.startswith(prefix) for k in known):
            return ("tree", path)  # a directory removed or renamed away
        return None

    def _root_of(self, path: str) -> str | None:
        for root in sorted(self._roots, key=len, reverse=True):
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                return root
        return None

    def _scan(
        self, files: set[str], trees: set[str], state: tuple[frozenset[str], dict[str, bytes]]
    ) -> _Scan:
        known, digests = state
        scan = _Scan(present_roots=self._present_roots())
        wanted = set(files)
        for top in sorted(trees):
            wanted.update(_walk(top, scan.warnings))
            # Known files no longer found are read too: reading them reports them gone.
            prefix = top.rstrip(os.sep) + os.sep
            wanted.update(k for k in known if k.startswith(prefix))
        scan.results = [_read_file_safely(path, digests.get(path)) for path in sorted(wanted)]
        return scan

    # -- store side (event loop) ----------------------------------------------------------

    def _note_roots(self, present: frozenset[str]) -> None:
        for root in self._roots:
            if root not in present and root not in self._missing_roots:
                self._missing_roots.add(root)
                log.error("config directory does not exist", directory=root)
            elif root in present and root in self._missing_roots:
                self._missing_roots.discard(root)
                log.info("config directory appeared", directory=root)

    def _apply(self, scan: _Scan, *, initial: bool = False) -> None:
        self._note_roots(scan.present_roots)
        for event, fields in scan.warnings:
            log.error(event, **fields)
        loaded = objects = 0
        for result in scan.results:
            source = result.source
            if result.state == "unchanged":
                continue
            if result.state == "gone":
                if source in self._known:
                    changes = self._store.replace_source(source, {})
                    log.info("config file removed", file=source, changed=len(changes.keys))
                self._known.discard(source)
                self._digests.pop(source, None)
                self._problems.pop(source, None)
                self._unsupported.pop(source, None)
                continue
            for ignored in result.ignored:
                log.debug("object of unknown kind ignored", **ignored)
            if result.state == "loaded":
                self._note_unsupported(source, result.unsupported)
            for problem in result.problems:
                problem.emit()
            if result.problems:
                self._problems[source] = result.problems
            else:
                self._problems.pop(source, None)
            if result.digest is not None:
                self._digests[source] = result.digest
            self._known.add(source)
            if result.state == "loaded":
                changes = self._store.replace_source(source, result.objects)
                self._warn_duplicates(source, result.objects)
                loaded += 1
                objects += len(result.objects)
                if not initial:
                    log.info(
                        "config file loaded",
                        file=source,
                        objects=len(result.objects),
                        changed=len(changes.keys),
                    )
        if initial:
            log.info(
                "config files loaded",
                directories=list(self._roots),
                files=loaded,
                objects=objects,
                problems=sum(len(p) for p in self._problems.values()),
            )

    def _warn_duplicates(self, source: str, objects: dict[ObjectKey, Any]) -> None:
        """An object this file defines that other sources define too: say which one is used."""
        for key in objects:
            owners = self._store.owners(key)
            if len(owners) > 1:
                log.warning(
                    "object defined by several sources",
                    object=str(key),
                    files=owners,
                    used=winner_of(owners),
                    rule="the source whose id sorts last wins (files: the later path)",
                )

    def _note_unsupported(self, source: str, found: list[dict[str, Any]]) -> None:
        """Report each object of an unsupported kind once: when it first appears in a file."""
        seen = {u["object"] for u in self._unsupported.get(source, [])}
        for item in found:
            if item["object"] not in seen:
                log.warning("object of unsupported kind has no effect", **item)
                metrics.UNSUPPORTED_OBJECTS.inc(item["kind"])
        if found:
            self._unsupported[source] = found
        else:
            self._unsupported.pop(source, None)


def config_files(top: str) -> list[str]:
    """The config files a --config-dir of `top` would load, in load order."""
    return list(_walk(top, []))


def _walk(top: str, warnings: list[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    """Config files under `top`, skipping hidden entries; symlinked directories are followed
    once each, so a link loop cannot trap the walk."""
    if not os.path.isdir(top):
        return

    def on_error(exc: OSError) -> None:
        warnings.append(
            ("config directory unreadable", {"directory": exc.filename, "error": str(exc)})
        )

    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, onerror=on_error, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.endswith(CONFIG_SUFFIXES):
                yield os.path.join(dirpath, name)


def _read_file_safely(path: str, previous_digest: bytes | None) -> _FileResult:
    """_read_file, with any failure it did not foresee turned into this file's error: one file
    must never stop the load or the watcher (which would then miss every later edit)."""
    try:
        return _read_file(path, previous_digest)
    except Exception as exc:
        # No digest: the next event for this file reads it again.
        return _FileResult(path, "failed", problems=[_unexpected(path, "read", exc)])


def _read_file(path: str, previous_digest: bytes | None) -> _FileResult:
    def failed(event: str, message: str, line: int | None = None, **details: Any) -> _FileResult:
        return _FileResult(
            path, "failed", problems=[_Problem(event, path, line, message=message, details=details)]
        )

    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _FileResult(path, "gone")
    except OSError as exc:
        return failed(_UNREADABLE, exc.strerror or str(exc))
    if stat.S_ISDIR(st.st_mode):
        return _FileResult(path, "gone")  # a directory now has this name; the walk reads it
    if not stat.S_ISREG(st.st_mode):
        return failed(_UNREADABLE, "not a regular file")  # a FIFO would block the read forever
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return _FileResult(path, "gone")
    except OSError as exc:
        return failed(_UNREADABLE, exc.strerror or str(exc))
    if len(data) > MAX_FILE_BYTES:
        limit = f"{MAX_FILE_BYTES // (1024 * 1024)} MiB"
        return failed(_TOO_LARGE, f"larger than {limit}; split it into several files")
    digest = hashlib.sha256(data).digest()
    if digest == previous_digest:
        return _FileResult(path, "unchanged")
    try:
        result = _parse_file(path, data)
    except Exception as exc:  # a parser bug costs this file, with its content remembered as bad
        result = _FileResult(path, "failed", problems=[_unexpected(path, "parsed", exc)])
    result.digest = digest
    return result


def _unexpected(path: str, what: str, exc: Exception) -> _Problem:
    log.debug(f"config file could not be {what}", file=path, exc_info=True)  # the traceback
    message = f"could not be {what}: {type(exc).__name__}: {str(exc)[:200]}"
    return _Problem(_PARSE_ERROR, path, None, message=message)


def _parse_file(path: str, data: bytes) -> _FileResult:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        return _FileResult(
            path, "failed", problems=[_Problem(_PARSE_ERROR, path, line, message=message)]
        )
    try:
        raws = read_objects(text, json_fallback=path.endswith(".json"))
    except ManifestSyntaxError as exc:
        problem = _Problem(
            _PARSE_ERROR, path, exc.line, message=exc.message, details={"column": exc.column}
        )
        return _FileResult(path, "failed", problems=[problem])
    return _build(path, raws)


def _build(path: str, raws: Iterable[RawObject]) -> _FileResult:
    result = _FileResult(path, "loaded")
    line_of: dict[ObjectKey, int] = {}
    for raw in raws:
        outcome = _check(path, raw, result)
        if isinstance(outcome, _Problem):
            result.problems.append(outcome)
            continue
        if outcome is None:
            continue
        key, obj = outcome
        if key in line_of:
            # As `kubectl apply` of the file would leave it: the later document stays.
            result.problems.append(
                _Problem(
                    _DUPLICATE_OBJECT,
                    path,
                    raw.line,
                    object=str(key),
                    message=f"defined at lines {line_of[key]} and {raw.line}; the one at line "
                    f"{raw.line} (the later) is used",
                    details={"first_line": line_of[key]},
                )
            )
        line_of[key] = raw.line
        result.objects[key] = obj
    return result


def _check(
    path: str, raw: RawObject, result: _FileResult
) -> tuple[ObjectKey, Any] | _Problem | None:
    """The parsed object, or the problem that rejects it, or None for a kind not read."""

    def rejected(field_path: str, message: str) -> _Problem:
        return _Problem(
            _INVALID_OBJECT,
            path,
            raw.line,
            object=describe_raw(raw.raw),
            field_path=field_path,
            message=message,
            details={"field_line": raw.line_of(field_path)},
        )

    if raw.problem is not None:
        return rejected(*raw.problem)
    try:
        return parse_object(raw.raw)
    except UnsupportedKind as exc:
        result.unsupported.append(
            {
                "file": path,
                "line": raw.line,
                "object": describe_raw(raw.raw),
                "kind": exc.kind,
                "apiVersion": exc.api_version,
                "message": str(exc),
            }
        )
        return None
    except UnknownKind as exc:
        result.ignored.append(
            {"file": path, "line": raw.line, "object": describe_raw(raw.raw), "kind": str(exc)}
        )
        return None
    except ValidationError as exc:
        return rejected(exc.field, exc.message)
    except Exception as exc:  # a model bug must cost one object, not the file or the watcher
        return rejected("", f"could not be parsed: {exc!r}")
