"""Golden tests: input YAML -> the config a proxy gets (config_dump JSON), one file per proxy.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/golden` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from istiolite.render import render

CASES = Path(__file__).parent / "cases"
NODES = sorted(CASES.glob("*/*.node.yaml"))


@pytest.mark.parametrize("node_file", NODES, ids=lambda p: f"{p.parent.name}/{p.name[:-10]}")
def test_rendered_config_matches_golden(node_file: Path) -> None:
    node = yaml.safe_load(node_file.read_text())
    metadata = dict(node.get("meta", {}))
    if node.get("labels"):
        metadata["LABELS"] = node["labels"]
    rendered = render([node_file.parent / "config"], node["id"], metadata, "cluster.local")
    golden = node_file.with_name(node_file.name.replace(".node.yaml", ".golden.json"))
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered + "\n")
    assert golden.exists(), f"no golden file {golden.name}: run with UPDATE_GOLDEN=1"
    assert json.loads(rendered) == json.loads(golden.read_text())


def test_every_case_has_a_golden_file_per_node() -> None:
    assert NODES, "no golden cases found"
    for case in CASES.iterdir():
        nodes = {p.name[:-10] for p in case.glob("*.node.yaml")}
        goldens = {p.name[:-12] for p in case.glob("*.golden.json")}
        assert nodes == goldens, f"{case.name}: nodes {nodes} vs golden files {goldens}"
