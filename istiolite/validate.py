"""`istiolite validate FILE...`: the checks the file source applies, offline, for CI and editors.

Errors (the object would be rejected) make the exit code 1; warnings (it would load, but
something it refers to is missing, e.g. a subset no DestinationRule defines, or it sets a valid
field istiolite does not apply yet) are printed only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from istiolite.model.kinds import UnknownKind, parse_object
from istiolite.model.meta import describe_raw
from istiolite.model.validation import ValidationError
from istiolite.push.context import PushContext
from istiolite.sources.yaml_documents import ManifestSyntaxError, read_objects


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # error | warning
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--domain", default="cluster.local", help="cluster DNS domain")


def check_files(files: list[Path], domain: str = "cluster.local") -> list[Finding]:
    findings: list[Finding] = []
    parsed: list[tuple[str, int, Any]] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            findings.append(Finding("error", str(path), None, "", "", f"cannot read: {err}"))
            continue
        try:
            objects = read_objects(text, json_fallback=path.suffix == ".json")
        except ManifestSyntaxError as err:
            findings.append(Finding("error", str(path), err.line, "", "", err.message))
            continue
        for obj in objects:
            subject = describe_raw(obj.raw)
            if obj.problem is not None:
                field, message = obj.problem
                findings.append(
                    Finding("error", str(path), obj.line_of(field), subject, field, message)
                )
                continue
            try:
                key, model = parse_object(obj.raw)
            except UnknownKind:
                continue  # not istiolite's to judge
            except ValidationError as err:
                line = obj.line_of(err.field)
                findings.append(Finding("error", str(path), line, subject, err.field, err.message))
                continue
            parsed.append((str(path), obj.line, (key, model)))
    findings += _reference_warnings(parsed, domain)
    return findings


def _reference_warnings(parsed: list[tuple[str, int, Any]], domain: str) -> list[Finding]:
    """The same checks the server logs on every push: references to something missing, and
    valid settings istiolite does not apply yet. In file order (an object's in the order found)."""
    objects = {key: model for _, _, (key, model) in parsed}
    where = {str(key): (file, line) for file, line, (key, _) in parsed}
    ctx = PushContext(objects, domain=domain, version="validate")
    out = []
    for warning in ctx.reference_warnings():
        file, line = where.get(warning.object, ("", None))
        out.append(Finding("warning", file, line, warning.object, warning.field, warning.message))
    return sorted(out, key=lambda f: (f.file, f.line or 0))


def run(args: argparse.Namespace) -> int:
    findings = check_files(args.files, args.domain)
    for finding in findings:
        print(finding, file=sys.stderr if finding.severity == "error" else sys.stdout)
    errors = sum(1 for f in findings if f.severity == "error")
    if errors:
        print(f"{errors} error(s) in {len(args.files)} file(s)", file=sys.stderr)
        return 1
    return 0
