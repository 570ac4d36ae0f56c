"""`istiolite render`: the config a proxy would get, computed offline from a config directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import json_format

from istiolite import type_urls
from istiolite.bootstrap import parse_pairs
from istiolite.debug.config_dump import config_dump
from istiolite.logs import configure_logging
from istiolite.model.proxy import parse_proxy
from istiolite.model.store import ConfigStore
from istiolite.model.validation import ValidationError
from istiolite.networking.generator import generate
from istiolite.push.context import PushContext
from istiolite.sources.files import FileSource


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", action="append", required=True, type=Path)
    parser.add_argument("--node-id", required=True, help="<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--domain", default="cluster.local", help="cluster DNS domain")


def render(config_dirs: list[Path], node_id: str, metadata: dict[str, object], domain: str) -> str:
    store = ConfigStore()
    FileSource(config_dirs, store).load_all()
    ctx = PushContext(store.snapshot(), domain=domain, version="render")
    proxy = parse_proxy(node_id, metadata)
    by_type = {t: generate(ctx, proxy, t) for t in type_urls.PUSH_ORDER}
    return json_format.MessageToJson(
        config_dump(by_type), indent=2, preserving_proto_field_name=True
    )


def run(args: argparse.Namespace) -> int:
    # Output is the config on stdout; only problems with the input go to stderr.
    configure_logging("console", "warning")
    try:
        metadata: dict[str, object] = dict(parse_pairs(args.meta, "--meta"))
        labels = parse_pairs(args.label, "--label")
        if labels:
            metadata["LABELS"] = labels
        print(render(args.config_dir, args.node_id, metadata, args.domain))
    except (ValueError, ValidationError) as err:
        print(f"istiolite render: {err}", file=sys.stderr)
        return 2
    return 0
