"""`istiolite validate FILE|DIR...`: the file source's checks, offline, for CI and editors.

Errors (the object would be rejected) make the exit code 1; warnings (it would load, but
something it refers to is missing, e.g. a subset no DestinationRule defines, or it sets a valid
field istiolite does not apply yet) and objects of kinds istiolite does not translate are printed
only. `-o json` prints one entry per object instead, for CI pipelines.

Objects defined more than once follow serve's rule (store.winner_of): of two files, the one whose
path sorts last; within one file, the later document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from istiolite.model.kinds import UnknownKind, UnsupportedKind, parse_object
from istiolite.model.mesh_config import MESH_CONFIG_KEY, MeshConfig
from istiolite.model.meta import ObjectKey
from istiolite.model.store import winner_of
from istiolite.model.validation import ValidationError
from istiolite.push.context import PushContext
from istiolite.sources.files import config_files
from istiolite.sources.mesh_config import MeshConfigError, read_mesh_config
from istiolite.sources.yaml_documents import ManifestSyntaxError, RawObject, read_objects


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # error | warning | unsupported
    file: str
    line: int | None
    object: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        subject = f" {self.object}:" if self.object else ""
        field = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity}:{subject}{field} {self.message}"

    @property
    def text(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(slots=True)
class ObjectReport:
    """One object (or one file that yields none: unreadable, not YAML) in `-o json`."""

    file: str
    line: int | None
    api_version: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    status: str = "ok"  # ok | unsupported | invalid
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "status": self.status,
            "messages": [f.text for f in self.findings],
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="manifests, or directories of them"
    )
    parser.add_argument("--domain", default="cluster.local", help="cluster DNS domain")
    parser.add_argument(
        "--mesh-config",
        type=Path,
        metavar="FILE",
        help="Istio's mesh config file, checked and used as serve --mesh-config uses it",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (for people, the default) or json (one entry per object, for CI)",
    )


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; a directory stands for its config files, as serve's --config-dir reads
    them (hidden entries skipped)."""
    out: dict[str, Path] = {}  # by absolute path: a file named twice is read once
    for path in paths:
        found = [Path(f) for f in config_files(str(path))] if path.is_dir() else [path]
        for item in found:
            out.setdefault(os.path.abspath(item), item)
    return list(out.values())


def check_files(files: list[Path], domain: str = "cluster.local") -> list[Finding]:
    return [f for report in check_objects(files, domain) for f in report.findings]


def check_objects(
    files: list[Path], domain: str = "cluster.local", mesh_config: Path | None = None
) -> list[ObjectReport]:
    """A report per object of `files` (directories expanded), in file order; first the mesh
    config file's, when one is given."""
    reports: list[ObjectReport] = []
    mesh: MeshConfig | None = None
    if mesh_config is not None:
        mesh_report, mesh = _check_mesh_config(mesh_config)
        reports.append(mesh_report)
    parsed: dict[ObjectKey, list[tuple[str, int, ObjectReport, Any]]] = {}
    for path in expand_paths(files):
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            reports.append(_file_error(name, None, f"cannot read: {err}"))
            continue
        try:
            objects = read_objects(text, json_fallback=path.suffix == ".json")
        except ManifestSyntaxError as err:
            reports.append(_file_error(name, err.line, err.message))
            continue
        for obj in objects:
            report, model = _check_object(name, obj)
            reports.append(report)
            if model is not None:
                key, value = model
                parsed.setdefault(key, []).append((name, obj.line, report, value))
    winners = _settle_duplicates(parsed)
    _add_reference_warnings(winners, domain, mesh)
    return reports


def _check_mesh_config(path: Path) -> tuple[ObjectReport, MeshConfig | None]:
    """The mesh config file read as serve reads it: an error if serve would refuse it, its
    notes (fields read but not applied) as warnings."""
    name = str(path)
    report = ObjectReport(name, None, kind="MeshConfig")
    try:
        parsed = read_mesh_config(path)
    except MeshConfigError as err:
        report.status = "invalid"
        report.findings.append(Finding("error", name, None, "", "", str(err)))
        return report, None
    for note in parsed.notes:
        report.findings.append(Finding("warning", name, None, "", "", f"mesh config: {note}"))
    return report, parsed.config


def _file_error(file: str, line: int | None, message: str) -> ObjectReport:
    report = ObjectReport(file, line, status="invalid")
    report.findings.append(Finding("error", file, line, "", "", message))
    return report


def _check_object(file: str, obj: RawObject) -> tuple[ObjectReport, tuple[ObjectKey, Any] | None]:
    raw: dict[str, Any] = obj.raw if isinstance(obj.raw, dict) else {}
    metadata = raw.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    report = ObjectReport(
        file,
        obj.line,
        api_version=_text(raw.get("apiVersion")),
        kind=_text(raw.get("kind")),
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
    )
    subject = _subject(report)

    def invalid(field_path: str, message: str) -> tuple[ObjectReport, None]:
        report.status = "invalid"
        line = obj.line_of(field_path)
        report.findings.append(Finding("error", file, line, subject, field_path, message))
        return report, None

    if not isinstance(obj.raw, dict):
        return invalid("<document>", f"must be a mapping, got {type(obj.raw).__name__}")
    if obj.problem is not None:
        return invalid(*obj.problem)
    try:
        key, model = parse_object(obj.raw)
    except UnsupportedKind as err:
        report.status = "unsupported"
        report.findings.append(Finding("unsupported", file, obj.line, subject, "", str(err)))
        return report, None
    except UnknownKind:
        return report, None  # not istiolite's to judge (a Deployment, a CRD of another project)
    except ValidationError as err:
        return invalid(err.field, err.message)
    # Namespaced objects without one land in `default`, as serve reads them.
    report.namespace = key.namespace
    return report, (key, model)


def _settle_duplicates(
    parsed: dict[ObjectKey, list[tuple[str, int, ObjectReport, Any]]],
) -> dict[ObjectKey, tuple[str, int, ObjectReport, Any]]:
    """Pick each object's definition by serve's rule; every other copy draws a warning."""
    winners = {}
    for key, copies in parsed.items():
        last_in_file: dict[str, tuple[str, int, ObjectReport, Any]] = {}
        for copy in copies:
            last_in_file[os.path.abspath(copy[0])] = copy  # later documents replace earlier
        used_source = winner_of(list(last_in_file))
        used = last_in_file[used_source]
        winners[key] = used
        for file, line, report, _ in copies:
            if report is used[2]:
                continue
            message = (
                f"{key} is also defined at {used[0]}:{used[1]}, which is used "
                "(of two files the one whose path sorts last wins; in one file, the later)"
            )
            report.findings.append(Finding("warning", file, line, str(key), "", message))
    return winners


def _add_reference_warnings(
    winners: dict[ObjectKey, tuple[str, int, ObjectReport, Any]],
    domain: str,
    mesh: MeshConfig | None = None,
) -> None:
    """The same checks the server logs on every push: references to something missing, and
    valid settings istiolite does not apply yet."""
    objects: dict[ObjectKey, Any] = {key: model for key, (_, _, _, model) in winners.items()}
    if mesh is not None:
        objects[MESH_CONFIG_KEY] = mesh
    ctx = PushContext(objects, domain=domain, version="v")
    by_name = {str(key): used for key, used in winners.items()}
    for warning in ctx.reference_warnings():
        used = by_name.get(warning.object)
        if used is None:
            continue
        file, line, report, _ = used
        report.findings.append(
            Finding("warning", file, line, warning.object, warning.field, warning.message)
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _subject(report: ObjectReport) -> str:
    kind = report.kind or "<no kind>"
    name = report.name or "<no name>"
    return f"{kind} {report.namespace}/{name}" if report.namespace else f"{kind} {name}"


def run(args: argparse.Namespace) -> int:
    reports = check_objects(args.files, args.domain, args.mesh_config)
    invalid = sum(1 for r in reports if r.status == "invalid")
    if args.output == "json":
        print(json.dumps([r.as_dict() for r in reports], indent=2))
        return 1 if invalid else 0
    errors = 0
    for report in reports:
        for finding in report.findings:
            errors += finding.severity == "error"
            print(finding, file=sys.stderr if finding.severity == "error" else sys.stdout)
    if errors:
        files = len({r.file for r in reports})
        print(f"{errors} error(s) in {files} file(s)", file=sys.stderr)
        return 1
    return 0
