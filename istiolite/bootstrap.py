"""`istiolite bootstrap`: an Envoy bootstrap whose ADS points at istiolite.

The shape follows the bootstrap pilot-agent writes for istiod (node identity and metadata, an
`xds-grpc` static cluster speaking HTTP/2, ADS for CDS and LDS), minus the agent: Envoy talks to
istiolite directly. With `--token-file` and `--xds-root-cert` it talks to the secure port: TLS
that verifies istiolite's serving certificate against the mesh root, and the service-account
token on every call (Envoy's Google gRPC client re-reads the file each time, so a rotated
projected token keeps working). The SDS secrets `default` and `ROOTCA` that mesh TLS uses come on
the same ADS stream (`sds_config: {ads: {}}` in the clusters and listeners istiolite sends):
the bootstrap needs no SDS cluster of its own.

The document is built as a real `Bootstrap` proto, so a misspelt field fails here rather than in
Envoy, and is written as JSON (Envoy picks the parser from the file extension: `.json`, or
`.yaml`/`.yml` with `--format yaml`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.grpc_credential.v3 import file_based_metadata_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.resource_monitors.downstream_connections.v3 import (
    downstream_connections_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from istiolite.model.proxy import parse_proxy
from istiolite.model.validation import ValidationError

# Keep the imports used: they register the descriptors the `@type`s below resolve to.
_DESCRIPTORS = (
    http_protocol_options_pb2,
    downstream_connections_pb2,
    file_based_metadata_pb2,
    http_connection_manager_pb2,
    router_pb2,
)

XDS_CLUSTER = "xds-grpc"
READINESS_CLUSTER = "envoy-admin-ready"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "envoy.extensions.filters.http.router.v3.Router"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:15000"
# As pilot-agent: 0s makes Envoy wait for CDS and LDS before it reports ready, so `/ready` means
# "has config from the control plane" rather than "gave up waiting".
DEFAULT_INITIAL_FETCH_TIMEOUT = "0s"
# The name istiod's serving certificate carries, which a proxy verifies (as pilot-agent does).
DEFAULT_XDS_SERVER_NAME = "istiod.istio-system.svc"
# Envoy's gRPC credentials plugin that reads a header value from a file on every call.
_FILE_METADATA = "envoy.grpc_credentials.file_based_metadata"
_FILE_METADATA_TYPE = "envoy.config.grpc_credential.v3.FileBasedMetadataConfig"
# A PEM root file is small; anything larger is not one.
_MAX_ROOT_CERT_BYTES = 1024 * 1024

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_DOWNSTREAM_CONNECTIONS = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
# Circuit-breaker limits of Istio's xds-grpc cluster: never the reason an xDS stream is refused.
_XDS_LIMITS = {"max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}
# A protobuf JSON Duration: seconds with up to 9 fractional digits.
_DURATION = re.compile(r"^[0-9]{1,10}(\.[0-9]{1,9})?s$")
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class BootstrapError(ValueError):
    """Bad input; `flag` names the command-line flag at fault."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


def parse_host_port(value: str, flag: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT`; HOST is an IP literal or an RFC 1123 host name."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise BootstrapError(flag, f"{value!r} is not [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BootstrapError(flag, f"{host!r} in {value!r} is not an IPv6 address") from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise BootstrapError(flag, f"{value!r} is not HOST:PORT")
        if ":" in host:
            raise BootstrapError(flag, f"{value!r}: write an IPv6 address in brackets, [::1]:PORT")
        if not _is_ip(host) and not _HOSTNAME.match(host):
            raise BootstrapError(flag, f"{host!r} in {value!r} is not an IP address or host name")
    lowest = 0 if allow_port_zero else 1
    if not port.isascii() or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise BootstrapError(flag, f"port {port!r} in {value!r} is not between {lowest} and 65535")
    return host, int(port)


def parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated `KEY=VALUE` flags; the value may be empty or contain `=`; the last one wins."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BootstrapError(flag, f"{pair!r} is not KEY=VALUE")
        if key != key.strip():
            raise BootstrapError(flag, f"key {key!r} has surrounding whitespace")
        out[key] = value
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _check_node_id(node_id: str, metadata: dict[str, Any]) -> None:
    """The node id must parse as Istio's, and carry the parts istiolite relies on."""
    try:
        proxy = parse_proxy(node_id, metadata)
    except ValidationError as err:
        flag = "--node-id" if err.field == "node.id" else "--meta"
        raise BootstrapError(flag, err.message) from None
    shape = "<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>"
    _, ip, pod_and_ns, domain = node_id.split("~")
    if not _is_ip(ip):
        raise BootstrapError("--node-id", f"{ip!r} in {node_id!r} is not an IP address")
    pod, _, namespace = pod_and_ns.partition(".")
    if not pod or not namespace or not domain or not proxy.namespace:
        raise BootstrapError("--node-id", f"{node_id!r} is not {shape}")


def _readable_file(path: str, flag: str) -> Path:
    """The file's absolute path (Envoy resolves relative ones against its own working
    directory); BootstrapError unless it is a readable regular file."""
    resolved = Path(path).expanduser().absolute()
    try:
        with resolved.open("rb"):
            pass
    except OSError as err:
        raise BootstrapError(flag, f"{path}: {err.strerror or err}") from None
    if not resolved.is_file():
        raise BootstrapError(flag, f"{path}: not a regular file")
    return resolved


def _root_cert(path: str) -> Path:
    resolved = _readable_file(path, "--xds-root-cert")
    data = resolved.read_bytes()[: _MAX_ROOT_CERT_BYTES + 1]
    if len(data) > _MAX_ROOT_CERT_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
        raise BootstrapError("--xds-root-cert", f"{path}: no PEM certificate in it")
    return resolved


def secure_grpc_service(
    target: str, *, token_file: Path | None, root_cert: Path, server_name: str
) -> dict[str, Any]:
    """ADS over TLS to the secure port: Envoy's Google gRPC client, which verifies the server
    against `root_cert` under `server_name` and sends `authorization: Bearer <token>` read from
    `token_file` on every call (Envoy's own gRPC client can add only fixed metadata)."""
    google_grpc: dict[str, Any] = {
        "target_uri": target,
        "stat_prefix": XDS_CLUSTER,
        "channel_credentials": {"ssl_credentials": {"root_certs": {"filename": str(root_cert)}}},
        # The address may be an IP or a Service name: the certificate names istiod.
        "channel_args": {"args": {"grpc.ssl_target_name_override": {"string_value": server_name}}},
    }
    if token_file is not None:
        google_grpc["credentials_factory_name"] = _FILE_METADATA
        google_grpc["call_credentials"] = [
            {
                "from_plugin": {
                    "name": _FILE_METADATA,
                    "typed_config": {
                        "@type": f"type.googleapis.com/{_FILE_METADATA_TYPE}",
                        "secret_data": {"filename": str(token_file)},
                        "header_key": "authorization",
                        "header_prefix": "Bearer ",
                    },
                }
            }
        ]
    return {"google_grpc": google_grpc}


def default_cluster(node_id: str, labels: dict[str, str], namespace: str) -> str:
    """Istio's service cluster: `<app label, else pod name>.<namespace>`."""
    pod = node_id.split("~")[2].partition(".")[0]
    return f"{labels.get('app') or pod}.{namespace}"


def build_bootstrap(
    *,
    node_id: str,
    xds_address: str,
    delta: bool = False,
    admin_address: str = DEFAULT_ADMIN_ADDRESS,
    metadata: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    cluster: str | None = None,
    initial_fetch_timeout: str = DEFAULT_INITIAL_FETCH_TIMEOUT,
    locality: str | None = None,
    token_file: str | None = None,
    xds_root_cert: str | None = None,
    xds_server_name: str = DEFAULT_XDS_SERVER_NAME,
    readiness_address: str | None = None,
) -> dict[str, Any]:
    """The bootstrap as a JSON-able dict (proto field names). Raises BootstrapError on bad input."""
    xds_host, xds_port = parse_host_port(xds_address, "--xds-address")
    if token_file is not None and xds_root_cert is None:
        raise BootstrapError(
            "--token-file", "a token is sent only over TLS: give --xds-root-cert too"
        )
    if not _HOSTNAME.match(xds_server_name) or _is_ip(xds_server_name):
        raise BootstrapError("--xds-server-name", f"{xds_server_name!r} is not a DNS name")
    secure = None
    if xds_root_cert is not None:
        target = f"[{xds_host}]:{xds_port}" if ":" in xds_host else f"{xds_host}:{xds_port}"
        secure = secure_grpc_service(
            target,
            token_file=_readable_file(token_file, "--token-file") if token_file else None,
            root_cert=_root_cert(xds_root_cert),
            server_name=xds_server_name,
        )
    # Port 0: the kernel picks one (read it back with envoy --admin-address-path).
    admin_host, admin_port = parse_host_port(admin_address, "--admin-address", allow_port_zero=True)
    if not _is_ip(admin_host):
        raise BootstrapError("--admin-address", f"{admin_host!r} must be an IP address to bind")
    node_metadata: dict[str, Any] = dict(metadata or {})
    if "LABELS" in node_metadata:
        raise BootstrapError("--meta", "set workload labels with --label KEY=VALUE, not LABELS")
    if labels:
        # A struct, as pilot-agent sends it (not a JSON string).
        node_metadata["LABELS"] = dict(labels)
    _check_node_id(node_id, node_metadata)
    namespace = node_metadata.get("NAMESPACE") or node_id.split("~")[2].partition(".")[2]
    node_metadata["NAMESPACE"] = namespace
    if not _DURATION.match(initial_fetch_timeout):
        raise BootstrapError(
            "--initial-fetch-timeout", f"{initial_fetch_timeout!r} is not a duration like 10s"
        )
    if cluster is not None and not cluster.strip():
        raise BootstrapError("--cluster", "must not be empty")
    service_cluster = cluster or default_cluster(node_id, labels or {}, namespace)
    node_locality: dict[str, str] = {}
    if locality:
        parts = locality.split("/")
        if len(parts) > 3 or not parts[0]:
            raise BootstrapError("--locality", f"{locality!r} is not REGION[/ZONE[/SUBZONE]]")
        node_locality = dict(zip(("region", "zone", "sub_zone"), parts, strict=False))

    config_source = {
        "ads": {},
        "initial_fetch_timeout": initial_fetch_timeout,
        "resource_api_version": "V3",
    }
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(xds_host, xds_port)}}]}
            ],
        },
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", **_XDS_LIMITS},
                {"priority": "HIGH", **_XDS_LIMITS},
            ]
        },
        # Notice a control plane that vanished without closing the connection.
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
        "typed_extension_protocol_options": {
            _HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # gRPC servers count a client PING sent within 5 minutes of the last one
                        # (with no data in between) as abuse and answer GOAWAY too_many_pings
                        # after two strikes; stay at that floor (Envoy adds jitter on top).
                        "connection_keepalive": {"interval": "300s", "timeout": "20s"}
                    }
                },
                # A reconnect opens a fresh connection, so it can land on another replica.
                "common_http_protocol_options": {"max_requests_per_connection": 1},
            }
        },
    }
    if xds_cluster["type"] == "STRICT_DNS":
        xds_cluster["dns_lookup_family"] = "V4_PREFERRED"

    raw: dict[str, Any] = {
        "node": {
            "id": node_id,
            "cluster": service_cluster,
            "metadata": node_metadata,
            **({"locality": node_locality} if node_locality else {}),
        },
        "admin": {"address": _socket_address(admin_host, admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [secure or {"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": dict(config_source),
            "lds_config": dict(config_source),
        },
        "static_resources": {"clusters": [xds_cluster]},
        # Sets a downstream connection limit, which also silences Envoy's start-up warning that
        # there is none (Istio's value).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": f"type.googleapis.com/{_DOWNSTREAM_CONNECTIONS}",
                        "max_active_downstream_connections": 2147483647,
                    },
                }
            ]
        },
        "layered_runtime": {
            "layers": [
                # As Istio: room for the regexes of VirtualService matches (Envoy's default
                # program-size limit of 100 rejects fairly ordinary ones).
                {
                    "name": "global config",
                    "static_layer": {"re2.max_program_size.error_level": 32768},
                },
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }
    if readiness_address is not None:
        if admin_port == 0:
            raise BootstrapError("--readiness-address", "needs a fixed --admin-address port")
        listener, admin_cluster = _readiness(readiness_address, admin_host, admin_port)
        raw["static_resources"]["clusters"].append(admin_cluster)
        raw["static_resources"]["listeners"] = [listener]
    message = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(raw, message)  # a ParseError here is a bug in this module
    as_dict = json_format.MessageToDict(message, preserving_proto_field_name=True)
    # Plain dicts all the way down (Any fields come back as OrderedDict, which YAML refuses).
    document: dict[str, Any] = json.loads(json.dumps(as_dict))
    return document


def _readiness(
    address: str, admin_host: str, admin_port: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A listener answering GET /healthz/ready with Envoy's own /ready (from its admin, which
    stays on loopback): what a kubelet probes on a pod's IP, as pilot-agent's 15021."""
    host, port = parse_host_port(address, "--readiness-address")
    if not _is_ip(host):
        raise BootstrapError("--readiness-address", f"{host!r} must be an IP address to bind")
    route = {
        "match": {"path": "/healthz/ready"},
        "route": {"cluster": READINESS_CLUSTER, "prefix_rewrite": "/ready", "timeout": "2s"},
    }
    manager = {
        "@type": f"type.googleapis.com/{_HCM}",
        "stat_prefix": "readiness",
        "route_config": {
            "name": "readiness",
            "virtual_hosts": [{"name": "readiness", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"type.googleapis.com/{_ROUTER}"},
            }
        ],
    }
    listener = {
        "name": "readiness",
        "address": _socket_address(host, port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    cluster = {
        "name": READINESS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": READINESS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket_address(admin_host, admin_port)}}
                    ]
                }
            ],
        },
    }
    return listener, cluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node-id",
        required=True,
        metavar="ID",
        help="Envoy node id: <sidecar|router>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>",
    )
    parser.add_argument(
        "--xds-address",
        required=True,
        metavar="HOST:PORT",
        help="istiolite's xDS address (IP or host name; IPv6 as [::1]:15010): the plaintext "
        "port (15010), or the secure one (15012) with --xds-root-cert",
    )
    parser.add_argument(
        "--delta", action="store_true", help="use Delta ADS (DELTA_GRPC) instead of SotW (GRPC)"
    )
    parser.add_argument(
        "--admin-address",
        default=DEFAULT_ADMIN_ADDRESS,
        metavar="HOST:PORT",
        help=f"Envoy admin listener (default {DEFAULT_ADMIN_ADDRESS})",
    )
    parser.add_argument(
        "--readiness-address",
        default=None,
        metavar="HOST:PORT",
        help="also serve GET /healthz/ready here (Envoy's /ready, proxied from the admin "
        "listener, which stays private): a kubelet's readiness probe, as pilot-agent's 15021",
    )
    parser.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="node metadata string, e.g. NAMESPACE, SERVICE_ACCOUNT, INTERCEPTION_MODE, "
        "ISTIO_VERSION (repeatable)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="workload label, sent as node metadata LABELS (repeatable)",
    )
    parser.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="node.cluster (default <app label or pod name>.<namespace>)",
    )
    parser.add_argument(
        "--locality",
        default=None,
        metavar="REGION[/ZONE[/SUBZONE]]",
        help="node.locality: where the proxy runs, for locality load balancing when istiolite "
        "cannot tell from its Pod's Node or its topology labels",
    )
    parser.add_argument(
        "--initial-fetch-timeout",
        default=DEFAULT_INITIAL_FETCH_TIMEOUT,
        metavar="DURATION",
        help="how long Envoy waits for CDS/LDS before starting anyway, e.g. 10s "
        f"(default {DEFAULT_INITIAL_FETCH_TIMEOUT}: wait for the control plane)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="service-account token sent as `authorization: Bearer` on every xDS call to "
        "the secure port (re-read each time: a rotated token keeps working); needs "
        "--xds-root-cert",
    )
    parser.add_argument(
        "--xds-root-cert",
        default=None,
        metavar="PATH",
        help="PEM root that istiolite's serving certificate chains to (the mesh root, "
        "root-cert.pem): ADS goes over TLS to --xds-address, the secure port (15012)",
    )
    parser.add_argument(
        "--xds-server-name",
        default=DEFAULT_XDS_SERVER_NAME,
        metavar="NAME",
        help=f"name verified in istiolite's certificate (default {DEFAULT_XDS_SERVER_NAME})",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="write here (default stdout); name it .json, or .yaml with --format yaml",
    )
    parser.add_argument("--format", choices=("json", "yaml"), default="json")


def render(document: dict[str, Any], fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(document, sort_keys=False))
    return json.dumps(document, indent=2) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step, so an Envoy starting meanwhile never reads half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    try:
        document = build_bootstrap(
            node_id=args.node_id,
            xds_address=args.xds_address,
            delta=args.delta,
            admin_address=args.admin_address,
            metadata=parse_pairs(args.meta, "--meta"),
            labels=parse_pairs(args.label, "--label"),
            cluster=args.cluster,
            initial_fetch_timeout=getattr(
                args, "initial_fetch_timeout", DEFAULT_INITIAL_FETCH_TIMEOUT
            ),
            locality=getattr(args, "locality", None),
            token_file=getattr(args, "token_file", None),
            xds_root_cert=getattr(args, "xds_root_cert", None),
            xds_server_name=getattr(args, "xds_server_name", DEFAULT_XDS_SERVER_NAME),
            readiness_address=getattr(args, "readiness_address", None),
        )
    except BootstrapError as err:
        print(f"istiolite bootstrap: {err}", file=sys.stderr)
        return 2
    text = render(document, getattr(args, "format", "json"))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        _write_atomically(Path(args.output), text)
    except OSError as err:
        print(f"istiolite bootstrap: -o {args.output}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`istiolite bootstrap` on its own: parse `argv` and run."""
    parser = argparse.ArgumentParser(prog="istiolite bootstrap", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
