"""Compile protos/ into istiolite/_generated with grpcio-tools (`make protos` runs this; the
test session runs it too when the modules are missing, e.g. right after a merge)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "istiolite" / "_generated"


def build() -> None:
    from grpc_tools import protoc  # the test extras / `make venv` install grpcio-tools

    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={OUT}", f"--pyi_out={OUT}"]
    if protoc.main([*args, *(str(PROTOS / f) for f in files)]) != 0:
        raise SystemExit(f"protoc failed on {files}")
    for directory in [OUT, *(p for p in OUT.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (OUT / ".stamp").touch()


if __name__ == "__main__":
    build()
    sys.exit(0)
