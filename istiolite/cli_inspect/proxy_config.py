"""`istiolite proxy-config {clusters,listeners,routes,endpoints,secrets} PROXY`.

What istiolite would send one proxy now, from /debug/config_dump?proxyID=: a table with
istioctl's columns by default, or the resources themselves (Envoy's snake_case JSON, the objects
inside Envoy's /config_dump sections) with `-o json` / `-o yaml`.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys
from collections.abc import Callable
from typing import Any, cast

import yaml

from istiolite.cli_inspect import table
from istiolite.cli_inspect.client import CommandError, default_address, get_json

Resource = dict[str, Any]

# kind -> (section @type suffix, list field of the section, path to the resource in an item)
SECTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "clusters": ("ClustersConfigDump", "dynamic_active_clusters", ("cluster",)),
    "listeners": ("ListenersConfigDump", "dynamic_listeners", ("active_state", "listener")),
    "routes": ("RoutesConfigDump", "dynamic_route_configs", ("route_config",)),
    "endpoints": ("EndpointsConfigDump", "dynamic_endpoint_configs", ("endpoint_config",)),
    "secrets": ("SecretsConfigDump", "dynamic_active_secrets", ("secret",)),
}

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


# -- reading the dump --------------------------------------------------------------------------


def extract(dump: dict[str, Any], kind: str) -> list[Resource]:
    """The resources of one kind, in dump order, without their `@type`."""
    suffix, field, path = SECTIONS[kind]
    out: list[Resource] = []
    for section in dump.get("configs", []):
        if not str(section.get("@type", "")).endswith("." + suffix):
            continue
        for item in section.get(field, []):
            resource: Any = item
            for step in path:
                resource = resource.get(step, {}) if isinstance(resource, dict) else {}
            if resource:
                out.append({k: v for k, v in resource.items() if k != "@type"})
    return out


# -- clusters ----------------------------------------------------------------------------------


def cluster_parts(name: str) -> tuple[str, str, str, str]:
    """(fqdn, port, subset, direction) of an Istio cluster name `direction|port|subset|fqdn`;
    other names (PassthroughCluster...) are their own FQDN with "-" elsewhere."""
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("inbound", "outbound"):
        direction, port, subset, fqdn = parts
        return fqdn, port, subset or "-", direction
    return name, "-", "-", "-"


def cluster_rows(clusters: list[Resource]) -> list[list[str]]:
    rows = []
    for cluster in clusters:
        fqdn, port, subset, direction = cluster_parts(cluster.get("name", ""))
        if "type" in cluster:
            kind = cluster["type"]
        elif "cluster_type" in cluster:
            kind = cluster["cluster_type"].get("name", "CUSTOM")
        else:
            kind = "STATIC"  # the proto default
        rows.append([fqdn, port, subset, direction, kind])
    return sorted(rows, key=lambda r: (r[0], _port_key(r[1]), r[2], r[3]))


def _port_key(port: str) -> int:
    return int(port) if port.isdigit() else -1


# -- listeners ---------------------------------------------------------------------------------


def _socket(address: dict[str, Any]) -> tuple[str, str]:
    sock = address.get("socket_address")
    if sock:
        return sock.get("address", ""), str(sock.get("port_value", 0))
    if "pipe" in address:
        return address["pipe"].get("path", ""), "-"
    return json.dumps(address), "-"


def chain_match(match: dict[str, Any] | None) -> str:
    """istioctl's summary of a filter_chain_match; ALL when it matches everything."""
    if not match:
        return "ALL"
    parts = []
    if match.get("server_names"):
        parts.append("SNI: " + ",".join(match["server_names"]))
    if match.get("transport_protocol"):
        parts.append("Trans: " + match["transport_protocol"])
    if match.get("application_protocols"):
        parts.append("App: " + ",".join(match["application_protocols"]))
    prefixes = [
        f"{r.get('address_prefix', '')}/{r.get('prefix_len', 0)}"
        for r in match.get("prefix_ranges", [])
    ]
    port = match.get("destination_port")
    if prefixes or port is not None:
        where = ",".join(prefixes) or "*"
        parts.append(f"Addr: {where}:{port if port is not None else '*'}")
    return "; ".join(parts) or "ALL"


def chain_destination(chain: dict[str, Any]) -> str:
    """Where a filter chain sends traffic: its route configuration or its TCP cluster."""
    for flt in chain.get("filters", []):
        config = flt.get("typed_config", {})
        kind = config.get("@type", "")
        if kind.startswith(HCM):
            if "rds" in config:
                return cast(str, "Route: " + config["rds"].get("route_config_name", ""))
            inline = config.get("route_config", {})
            return cast(str, "Inline Route: " + inline.get("name", ""))
        if kind == TCP_PROXY:
            if "cluster" in config:
                return cast(str, "Cluster: " + config["cluster"])
            weighted = config.get("weighted_clusters", {}).get("clusters", [])
            return "Clusters: " + ",".join(c.get("name", "") for c in weighted)
    return "Non-HTTP/Non-TCP"


def listener_rows(listeners: list[Resource]) -> list[list[str]]:
    rows = []
    for listener in listeners:
        name = listener.get("name", "")
        address, port = _socket(listener.get("address", {}))
        chains = [
            (c, chain_match(c.get("filter_chain_match"))) for c in listener.get("filter_chains", [])
        ]
        if "default_filter_chain" in listener:
            chains.append((listener["default_filter_chain"], "DEFAULT"))
        if not chains:
            rows.append([name, address, port, "-", "-"])
        for chain, match in chains:
            rows.append([name, address, port, match, chain_destination(chain)])
    return rows


# -- routes ------------------------------------------------------------------------------------


def domains_summary(domains: list[str]) -> str:
    if not domains:
        return "-"
    if len(domains) == 1:
        return domains[0]
    return f"{domains[0]} + {len(domains) - 1} more..."


def route_match(match: dict[str, Any]) -> str:
    if "prefix" in match:
        return cast(str, match["prefix"] + "*")  # "/" → "/*", as istioctl shows a prefix
    if "path" in match:
        return cast(str, match["path"])
    if "safe_regex" in match:
        return cast(str, match["safe_regex"].get("regex", ""))
    if "path_separated_prefix" in match:
        return cast(str, match["path_separated_prefix"] + "/*")
    if "connect_matcher" in match:
        return "CONNECT"
    return "*"


def virtual_service(route: dict[str, Any]) -> str:
    """`name.namespace` of the VirtualService a route came from (Istio's route metadata)."""
    config = route.get("metadata", {}).get("filter_metadata", {}).get("istio", {}).get("config")
    if isinstance(config, str) and "/virtual-service/" in config:
        parts = config.strip("/").split("/")
        try:
            namespace = parts[parts.index("namespaces") + 1]
        except (ValueError, IndexError):
            namespace = ""
        return f"{parts[-1]}.{namespace}" if namespace else parts[-1]
    return "-"


def route_rows(routes: list[Resource]) -> list[list[str]]:
    rows = []
    for config in routes:
        name = config.get("name", "")
        for vhost in config.get("virtual_hosts", []):
            domains = domains_summary(vhost.get("domains", []))
            for route in vhost.get("routes", []) or [{}]:
                rows.append(
                    [
                        name,
                        vhost.get("name", ""),
                        domains,
                        route_match(route.get("match", {})) if route else "-",
                        virtual_service(route) if route else "-",
                    ]
                )
    return rows


# -- endpoints ---------------------------------------------------------------------------------


def endpoint_rows(assignments: list[Resource]) -> list[list[str]]:
    rows = []
    for cla in assignments:
        cluster = cla.get("cluster_name", "")
        for group in cla.get("endpoints", []):
            for lb in group.get("lb_endpoints", []):
                address, port = _socket(lb.get("endpoint", {}).get("address", {}))
                target = f"{address}:{port}" if port != "-" else address
                rows.append([target, lb.get("health_status", "UNKNOWN"), cluster])
    return rows


# -- secrets -----------------------------------------------------------------------------------


def _pem(source: dict[str, Any]) -> bytes | None:
    if "inline_bytes" in source:
        return base64.b64decode(source["inline_bytes"])
    if "inline_string" in source:
        return str(source["inline_string"]).encode()
    return None


def _subject_alt_names(cert: Any) -> str:
    """The URI SANs (a workload's SPIFFE identity), else the DNS names; "-" for none."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return "-"
    names = san.get_values_for_type(x509.UniformResourceIdentifier) or san.get_values_for_type(
        x509.DNSName
    )
    return ",".join(names) or "-"


def _certificate_columns(source: dict[str, Any] | None) -> list[str]:
    """VALID CERT, SERIAL NUMBER, NOT AFTER, NOT BEFORE, SAN of the first certificate in
    `source`."""
    pem = _pem(source or {})
    if not pem:
        return ["-", "-", "-", "-", "-"]
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        return ["false", "-", "-", "-", "-"]
    now = datetime.datetime.now(datetime.UTC)
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return [
        "true" if before <= now <= after else "false",
        format(cert.serial_number, "x"),
        after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        _subject_alt_names(cert),
    ]


def secret_rows(secrets: list[Resource]) -> list[list[str]]:
    rows = []
    for secret in secrets:
        if "tls_certificate" in secret:
            kind, cert = "Cert Chain", secret["tls_certificate"].get("certificate_chain")
        elif "validation_context" in secret:
            kind, cert = "CA", secret["validation_context"].get("trusted_ca")
        elif "generic_secret" in secret:
            kind, cert = "Generic", None
        else:
            kind, cert = "Other", None
        rows.append([secret.get("name", ""), kind, "ACTIVE", *_certificate_columns(cert)])
    return rows


# -- the command -------------------------------------------------------------------------------

TABLES: dict[str, tuple[tuple[str, ...], Callable[[list[Resource]], list[list[str]]]]] = {
    "clusters": (("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"), cluster_rows),
    "listeners": (("NAME", "ADDRESS", "PORT", "MATCH", "DESTINATION"), listener_rows),
    "routes": (("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"), route_rows),
    "endpoints": (("ENDPOINT", "STATUS", "CLUSTER"), endpoint_rows),
    "secrets": (
        (
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
            "SAN",
        ),
        secret_rows,
    ),
}

HELP = {
    "clusters": "clusters (CDS)",
    "listeners": "listeners (LDS)",
    "routes": "route configurations (RDS)",
    "endpoints": "endpoints of EDS clusters",
    "secrets": "secrets (SDS): certificate chains (serial, validity, SAN) and trust bundles; "
    "never a key",
}


def select(kind: str, resources: list[Resource], args: argparse.Namespace) -> list[Resource]:
    """istioctl's filters: --fqdn/--port/--subset/--direction for clusters, --address/--port
    for listeners, --name for routes, --cluster for endpoints."""

    def keep(resource: Resource) -> bool:
        if kind == "clusters":
            fqdn, port, subset, direction = cluster_parts(resource.get("name", ""))
            return (
                (not args.fqdn or args.fqdn in fqdn)
                and (args.port is None or port == str(args.port))
                and (not args.subset or subset == args.subset)
                and (not args.direction or direction == args.direction)
            )
        if kind == "listeners":
            address, port = _socket(resource.get("address", {}))
            return (not args.address or address == args.address) and (
                args.port is None or port == str(args.port)
            )
        if kind == "routes":
            return not args.name or resource.get("name") == args.name
        if kind == "endpoints":
            return not args.cluster or resource.get("cluster_name") == args.cluster
        return True

    return [r for r in resources if keep(r)]


def format_output(kind: str, resources: list[Resource], output: str) -> str:
    if output == "json":
        return json.dumps(resources, indent=2)
    if output == "yaml":
        return yaml.safe_dump(resources, sort_keys=False, default_flow_style=False).rstrip()
    headers, build = TABLES[kind]
    return table.render(headers, build(resources))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in SECTIONS:
        sub = kinds.add_parser(kind, help=HELP[kind])
        sub.add_argument("proxy", metavar="PROXY", help="node id, or <pod>.<namespace>")
        sub.add_argument(
            "--istiolite",
            default=default_address(),
            metavar="URL",
            help="istiolite's debug HTTP address "
            "(default: $ISTIOLITE_ADDR or http://127.0.0.1:8080)",
        )
        sub.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
        if kind == "clusters":
            sub.add_argument("--fqdn", help="only clusters whose service FQDN contains this")
            sub.add_argument("--subset", help="only clusters of this subset")
            sub.add_argument("--direction", choices=("inbound", "outbound"))
        if kind in ("clusters", "listeners"):
            sub.add_argument("--port", type=int, help="only this port")
        if kind == "listeners":
            sub.add_argument("--address", help="only listeners on this address")
        if kind == "routes":
            sub.add_argument("--name", help="only the route configuration of this name")
        if kind == "endpoints":
            sub.add_argument("--cluster", help="only the endpoints of this cluster")


def run(args: argparse.Namespace) -> int:
    try:
        dump = get_json(args.istiolite, "/debug/config_dump", {"proxyID": args.proxy})
    except CommandError as err:
        print(f"istiolite proxy-config: {err}", file=sys.stderr)
        return 1
    resources = select(args.kind, extract(dump, args.kind), args)
    print(format_output(args.kind, resources, args.output))
    if not resources and args.output == "table":
        print(f"no {args.kind} for {args.proxy}", file=sys.stderr)
    return 0
