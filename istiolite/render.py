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
from istiolite.model.mesh_config import MESH_CONFIG_KEY
from istiolite.model.proxy import parse_proxy
from istiolite.model.store import ConfigStore
from istiolite.model.validation import ValidationError
from istiolite.networking.generator import generate
from istiolite.push.context import PushContext
from istiolite.sources.files import FileSource
from istiolite.sources.mesh_config import SOURCE as MESH_SOURCE
from istiolite.sources.mesh_config import MeshConfigError, read_mesh_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", action="append", required=True, type=Path)
    parser.add_argument("--node-id", required=True, help="<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--domain", default="cluster.local", help="cluster DNS domain")
    add_mesh_config_arguments(parser)


def add_mesh_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that make offline output follow serve's mesh config."""
    parser.add_argument(
        "--mesh-config",
        type=Path,
        metavar="FILE",
        help="Istio's mesh config file, as serve --mesh-config reads it",
    )
    parser.add_argument(
        "--trust-domain",
        default="",
        help="as serve --trust-domain (default: the mesh config's trustDomain, else --domain)",
    )


def render(
    config_dirs: list[Path],
    node_id: str,
    metadata: dict[str, object],
    domain: str,
    *,
    mesh_config: Path | None = None,
    trust_domain: str = "",
) -> str:
    """MeshConfigError when `mesh_config` cannot be used; trust domain precedence as serve's."""
    store = ConfigStore()
    FileSource(config_dirs, store).load_all()
    if mesh_config is not None:
        mesh = read_mesh_config(mesh_config).config
        store.replace_source(MESH_SOURCE, {MESH_CONFIG_KEY: mesh})
        trust_domain = trust_domain or mesh.trust_domain
    ctx = PushContext(store.snapshot(), domain=domain, version="render", trust_domain=trust_domain)
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
        out = render(
            args.config_dir,
            args.node_id,
            metadata,
            args.domain,
            mesh_config=args.mesh_config,
            trust_domain=args.trust_domain,
        )
        print(out)
    except (ValueError, ValidationError, MeshConfigError) as err:
        print(f"istiolite render: {err}", file=sys.stderr)
        return 2
    return 0
