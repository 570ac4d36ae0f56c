"""Session set-up shared by every test directory."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path


def pytest_configure() -> None:
    # The Istio CA API's modules are generated, not committed (`make protos`): a checkout that
    # has not run make since protos/ appeared gets them here instead of an ImportError.
    try:
        present = importlib.util.find_spec("istiolite._generated.istio.v1.auth.ca_pb2")
    except ModuleNotFoundError:
        present = None
    if present is None:
        build = Path(__file__).resolve().parents[1] / "protos" / "build.py"
        runpy.run_path(str(build), run_name="build")["build"]()
