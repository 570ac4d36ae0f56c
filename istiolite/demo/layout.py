"""Every address and port the demo uses, checked before anything starts, and the example mesh
moved onto them.

The defaults are the ones `examples/demo` is written for (and the README documents). Other
ports or upstream addresses let a second demo, or a test, run beside one that holds them: the
example YAML is then copied with the addresses and ports replaced.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo"
LOOPBACK = "127.0.0.1"
UPSTREAM_NAMES = ("hello-1", "hello-2", "world-1")


@dataclass(frozen=True)
class Option:
    flag: str
    default: int | str
    what: str


# Field name -> command-line option. The first four are written into examples/demo.
OPTIONS = {
    "service_port": Option("--service-port", 9080, "the sidecar Envoy's listener for the services"),
    "upstream_port": Option("--upstream-port", 9081, "the echo upstreams' port"),
    "gateway_http_port": Option("--gateway-http-port", 9090, "the ingress gateway's HTTP port"),
    "gateway_https_port": Option("--gateway-https-port", 9443, "the ingress gateway's HTTPS port"),
    "upstream_base": Option(
        "--upstream-base",
        "127.0.0.21",
        "first of three loopback addresses for hello-1, hello-2 and world-1",
    ),
    "grpc_port": Option("--grpc-port", 15010, "istiolite's xDS (gRPC) port"),
    "secure_grpc_port": Option(
        "--secure-grpc-port", 15012, "istiolite's secure port (TLS: xDS and the CA API)"
    ),
    "http_port": Option("--http-port", 8080, "istiolite's HTTP port: /ready, /debug/*"),
    "monitoring_port": Option("--monitoring-port", 15014, "istiolite's /metrics port"),
    "admin_port": Option("--admin-port", 15000, "the sidecar Envoy's admin port"),
    "gateway_admin_port": Option("--gateway-admin-port", 15100, "the gateway Envoy's admin port"),
}


@dataclass(frozen=True)
class Layout:
    service_port: int
    upstream_port: int
    gateway_http_port: int
    gateway_https_port: int
    upstream_base: str
    grpc_port: int
    secure_grpc_port: int
    http_port: int
    monitoring_port: int
    admin_port: int
    gateway_admin_port: int

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "addresses and ports", "defaults as documented; pick others when one is taken"
        )
        for name, opt in OPTIONS.items():
            kind = _loopback if isinstance(opt.default, str) else _port
            help_text = f"{opt.what} (default {opt.default})"
            group.add_argument(opt.flag, dest=name, type=kind, default=opt.default, help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Layout:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @property
    def upstreams(self) -> dict[str, str]:
        """address -> name of each echo upstream."""
        base = ipaddress.IPv4Address(self.upstream_base)
        return {str(base + i): name for i, name in enumerate(UPSTREAM_NAMES)}

    def binds(self) -> list[tuple[str, int, str]]:
        """(address, port, field name) of every listening socket of the demo."""
        on_loopback = [name for name in OPTIONS if name not in ("upstream_port", "upstream_base")]
        binds = [(LOOPBACK, getattr(self, name), name) for name in on_loopback]
        binds += [(ip, self.upstream_port, "upstream_port") for ip in self.upstreams]
        return binds

    def problems(self) -> str:
        """What stops the demo from listening where it should ("" if nothing): a clash among its
        own choices, or the address:ports something else holds and the options that move them."""
        clashes: list[str] = []
        taken: list[str] = []
        moves: dict[str, str] = {}
        seen: dict[tuple[str, int], str] = {}
        for host, port, name in self.binds():
            other = seen.setdefault((host, port), name)
            if other != name:
                clashes.append(f"{OPTIONS[other].flag} and {OPTIONS[name].flag} both use {port}")
            elif not _can_listen(host, port):
                where = f"{host}:{port}"
                taken.append(f"  {where:<17} {OPTIONS[name].what} ({OPTIONS[name].flag})")
                moves.setdefault(name, _suggest(name, port))
        if clashes:
            return "\n".join(f"{c}: give them different values" for c in clashes)
        if not taken:
            return ""
        return "\n".join(
            [
                "already in use (by another `make demo`?):",
                *taken,
                "Stop what holds them, or give the demo other ports, e.g.",
                f"  make demo DEMO_ARGS='{' '.join(moves.values())}'",
                "(python -m istiolite.demo --help lists every option)",
            ]
        )

    def example_values(self) -> tuple[dict[str, str], dict[int, int]]:
        """How examples/demo's upstream addresses and ports map onto this layout."""
        default = DEFAULT.upstreams
        addresses = dict(zip(default, self.upstreams, strict=True))
        ports = {int(OPTIONS[n].default): getattr(self, n) for n in list(OPTIONS)[:4]}
        return addresses, ports

    def mesh_dir(self, workdir: Path) -> Path:
        """The config directory to serve: examples/demo itself with the default layout (so
        editing it changes the running mesh), else a copy moved onto this layout."""
        addresses, ports = self.example_values()
        if all(k == v for k, v in (*addresses.items(), *ports.items())):
            return EXAMPLE
        mesh = workdir / "mesh"
        mesh.mkdir()
        for source in sorted(EXAMPLE.glob("*.yaml")):
            docs = [_relocate(d, addresses, ports) for d in yaml.safe_load_all(source.read_text())]
            header = f"# examples/demo/{source.name}, moved by the demo onto its ports/addresses\n"
            (mesh / source.name).write_text(header + yaml.safe_dump_all(docs, sort_keys=False))
        return mesh


def _loopback(value: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not address.is_loopback or not (address + len(UPSTREAM_NAMES) - 1).is_loopback:
        raise argparse.ArgumentTypeError(f"{value}: three addresses in 127.0.0.0/8 needed")
    return value


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{value}: not a TCP port")
    return port


def _suggest(name: str, port: int) -> str:
    """The option with a port near the taken one + 10000 that is free now."""
    start = port + 10000 if port < 55000 else port - 10000
    free = next((p for p in range(start, start + 50) if _can_listen(LOOPBACK, p)), start)
    return f"{OPTIONS[name].flag} {free}"


def _can_listen(host: str, port: int) -> bool:
    # SO_REUSEADDR ignores connections in TIME_WAIT; a socket listening there (even one with
    # SO_REUSEPORT, as Envoy and gRPC open them) still makes the bind fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError:
            return False
    return True


def _relocate(doc: dict[str, Any], addresses: dict[str, str], ports: dict[int, int]) -> Any:
    """The example object with its upstream addresses and its ports replaced."""
    kind = doc.get("kind")
    if kind == "Service":
        for p in doc["spec"].get("ports", []):
            p["port"] = ports.get(p["port"], p["port"])
            if isinstance(p.get("targetPort"), int):
                p["targetPort"] = ports.get(p["targetPort"], p["targetPort"])
    elif kind == "EndpointSlice":
        for p in doc.get("ports", []):
            p["port"] = ports.get(p["port"], p["port"])
        for endpoint in doc.get("endpoints", []):
            endpoint["addresses"] = [addresses.get(a, a) for a in endpoint["addresses"]]
    elif kind == "Gateway":
        for server in doc["spec"].get("servers", []):
            server["port"]["number"] = ports.get(server["port"]["number"], server["port"]["number"])
    return doc


DEFAULT = Layout(**{name: opt.default for name, opt in OPTIONS.items()})  # type: ignore[arg-type]
