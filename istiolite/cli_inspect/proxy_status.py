"""`istiolite proxy-status`: every connected proxy and whether it has what istiolite sent it.

A table like `istioctl proxy-status`, built from /debug/syncz. Per type: SYNCED (the last response
was ACKed), STALE (sent, not ACKed yet), NOT SENT (subscribed, nothing sent yet), ERROR (the last
response was NACKed; the proxy's message is printed under the table), IGNORED (not subscribed).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from istiolite.cli_inspect import table
from istiolite.cli_inspect.client import CommandError, default_address, get_json

TYPES = ("CDS", "LDS", "EDS", "RDS")
HEADERS = ("NAME", "CLUSTER", *TYPES, "ISTIOD", "VERSION")
WORDS = {"SYNCED": "SYNCED", "STALE": "STALE", "NOT_SENT": "NOT SENT", "ERROR": "ERROR"}
IGNORED = "IGNORED"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--istiolite",
        default=default_address(),
        metavar="URL",
        help="istiolite's debug HTTP address (default: $ISTIOLITE_ADDR or http://127.0.0.1:8080)",
    )


def _word(entry: dict[str, Any], short: str) -> str:
    state: dict[str, str] | None = entry.get("types", {}).get(short)
    if state is None:
        return IGNORED
    return WORDS.get(state.get("status", ""), state.get("status", "?"))


def rows(syncz: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            entry.get("name") or entry.get("proxy", ""),
            entry.get("cluster_id") or "-",
            *(_word(entry, t) for t in TYPES),
            entry.get("istiod") or "-",
            entry.get("istio_version") or "-",
        ]
        for entry in syncz
    ]


def errors(syncz: list[dict[str, Any]]) -> list[str]:
    """One line per rejected type: which proxy, which type and version, and the proxy's words."""
    out = []
    for entry in syncz:
        for short, state in entry.get("types", {}).items():
            nack = state.get("nack")
            if state.get("status") != "ERROR" or not nack:
                continue
            out.append(
                f"{entry.get('name') or entry.get('proxy')} {short} rejected version "
                f"{nack.get('rejected_version') or '-'}: {nack.get('message', '')}"
            )
    return out


def format_status(syncz: list[dict[str, Any]]) -> str:
    text = table.render(HEADERS, rows(syncz))
    problems = errors(syncz)
    if problems:
        text += "\n\nERRORS (config rejected by the proxy):\n" + "\n".join(problems)
    return text


def run(args: argparse.Namespace) -> int:
    try:
        syncz = get_json(args.istiolite, "/debug/syncz")
    except CommandError as err:
        print(f"istiolite proxy-status: {err}", file=sys.stderr)
        return 1
    if not isinstance(syncz, list):
        print("istiolite proxy-status: /debug/syncz is not a list of proxies", file=sys.stderr)
        return 1
    print(format_status(syncz))
    return 0
