"""How fast manifests are read and validated: libyaml (the usual path), the pure-Python loader
that text with a `:` before a flow indicator (`[1.2.3.4, 001:db8::]`) falls back to, and
`istiolite validate -o json` over a directory.

    .venv/bin/python -m bench.manifest_read --objects 2000 --runs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from istiolite.sources.yaml_documents import read_objects
from istiolite.validate import check_objects

_ENTRY = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-{i}, namespace: shop}}
spec:
  hosts: [ext-{i}.example.com]
  addresses: [10.{a}.{b}.1, {v6}]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: DNS
"""


def manifest(objects: int, v6: str) -> str:
    return "---\n".join(_ENTRY.format(i=i, a=i // 250, b=i % 250, v6=v6) for i in range(objects))


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for label, v6 in (("libyaml", "2001:db8::1"), ("pure-Python fallback", "2001:db8::")):
        text = manifest(args.objects, v6)
        seconds = best_of(args.runs, lambda text=text: read_objects(text))  # type: ignore[misc]
        size = len(text.encode()) / 1e6
        print(
            f"read {label}: {args.objects} objects, {size:.2f} MB: "
            f"{seconds * 1000:.0f} ms ({size / seconds:.2f} MB/s)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(10):
            part = manifest(args.objects // 10, "2001:db8::1").replace("ext-", f"ext{i}-")
            (Path(tmp) / f"entries-{i}.yaml").write_text(part)
        seconds = best_of(args.runs, lambda: check_objects([Path(tmp)]))
        per = seconds / args.objects * 1e6
        print(
            f"validate: {args.objects} objects in 10 files: "
            f"{seconds * 1000:.0f} ms ({per:.0f} µs/object)"
        )


if __name__ == "__main__":
    main()
