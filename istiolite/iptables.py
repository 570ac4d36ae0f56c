"""`istiolite iptables`: the istio-init container's job for the envoy injection flavour — the
nat rules that send a pod's TCP through its sidecar, as Istio's `istio-iptables` writes them in
REDIRECT mode, loaded with `iptables-restore` (or printed with `--dry-run`).

Outbound: every TCP connection the pod makes goes to the proxy's outbound port (15001), except
the proxy's own (owner uid or gid), loopback traffic of the app, 127.0.0.1, and the ranges
excluded. Inbound: every TCP connection arriving goes to the inbound port (15006), except the
excluded ports and HBONE (15008). The flags are istio-iptables' own, so the injector passes the
same arguments to either.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import subprocess
import sys
from dataclasses import dataclass

HBONE_PORT = 15008
# what the restore tools are tried in order: the system default backend, then the legacy one
RESTORE_TOOLS = ("iptables-restore", "iptables-legacy-restore")


class IptablesError(ValueError):
    """A flag's value is not usable; the message names the flag."""


@dataclass(frozen=True, slots=True)
class Capture:
    outbound_port: int = 15001
    inbound_port: int = 15006
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    include_outbound: tuple[str, ...] = ("*",)  # CIDRs, or "*" for everything
    exclude_outbound: tuple[str, ...] = ()
    include_inbound_ports: tuple[str, ...] = ("*",)  # ports, or "*" for every port
    exclude_inbound_ports: tuple[int, ...] = (15090, 15021, 15020)


def _port(value: str, flag: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise IptablesError(f"{flag}: {value!r} is not a port")
    return int(value)


def _id(value: str, flag: str) -> int:
    if not value.isdigit() or len(value) > 10:
        raise IptablesError(f"{flag}: {value!r} is not a numeric id")
    return int(value)


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _cidrs(value: str, flag: str) -> tuple[str, ...]:
    items = _list(value)
    if items == ["*"]:
        return ("*",)
    out = []
    for item in items:
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise IptablesError(f"{flag}: {item!r} is not an IP range (CIDR) or *") from None
        if network.version == 4:  # IPv6 ranges belong to ip6tables, which this does not set up
            out.append(str(network))
    return tuple(out)


def rules(capture: Capture) -> str:
    """iptables-restore input for the nat table."""
    lines = [
        "*nat",
        ":ISTIO_INBOUND - [0:0]",
        ":ISTIO_REDIRECT - [0:0]",
        ":ISTIO_IN_REDIRECT - [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        f"-A ISTIO_INBOUND -p tcp --dport {HBONE_PORT} -j RETURN",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {capture.outbound_port}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {capture.inbound_port}",
    ]
    if capture.include_inbound_ports:
        lines.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        if capture.include_inbound_ports == ("*",):
            lines += [
                f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"
                for port in capture.exclude_inbound_ports
            ]
            lines.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        else:
            lines += [
                f"-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                for port in capture.include_inbound_ports
            ]
    lines += ["-A OUTPUT -p tcp -j ISTIO_OUTPUT", "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN"]
    for kind, ident in (("uid", capture.proxy_uid), ("gid", capture.proxy_gid)):
        lines += [
            f"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport {HBONE_PORT}"
            f" -m owner --{kind}-owner {ident} -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --{kind}-owner {ident} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --{kind}-owner {ident} -j RETURN",
        ]
    lines.append("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN")
    lines += [f"-A ISTIO_OUTPUT -d {cidr} -j RETURN" for cidr in capture.exclude_outbound]
    if capture.include_outbound == ("*",):
        lines.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    else:
        lines += [
            f"-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT" for cidr in capture.include_outbound
        ]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--envoy-port", default="15001", help="outbound capture port")
    p.add_argument("-z", "--inbound-capture-port", default="15006", help="inbound capture port")
    p.add_argument("-u", "--proxy-uid", default="1337", help="the proxy's uid (its traffic passes)")
    p.add_argument("-g", "--proxy-gid", default=None, help="the proxy's gid (default: the uid)")
    p.add_argument(
        "-m", "--istio-inbound-interception-mode", default="REDIRECT", help="only REDIRECT"
    )
    p.add_argument("-i", "--istio-service-cidr", default="*", help="outbound ranges captured")
    p.add_argument("-x", "--istio-service-exclude-cidr", default="", help="outbound ranges not")
    p.add_argument("-b", "--istio-inbound-ports", default="*", help="inbound ports captured")
    p.add_argument("-d", "--istio-local-exclude-ports", default="", help="inbound ports not")
    p.add_argument("--dry-run", action="store_true", help="print the rules, change nothing")


def capture_of(args: argparse.Namespace) -> Capture:
    if args.istio_inbound_interception_mode != "REDIRECT":
        raise IptablesError(
            f"-m: {args.istio_inbound_interception_mode!r}: only REDIRECT is supported"
        )
    uid = _id(args.proxy_uid, "-u")
    inbound = _list(args.istio_inbound_ports)
    return Capture(
        outbound_port=_port(args.envoy_port, "-p"),
        inbound_port=_port(args.inbound_capture_port, "-z"),
        proxy_uid=uid,
        proxy_gid=uid if args.proxy_gid is None else _id(args.proxy_gid, "-g"),
        include_outbound=_cidrs(args.istio_service_cidr, "-i"),
        exclude_outbound=_cidrs(args.istio_service_exclude_cidr, "-x"),
        include_inbound_ports=(
            ("*",) if inbound == ["*"] else tuple(str(_port(p, "-b")) for p in inbound)
        ),
        exclude_inbound_ports=tuple(_port(p, "-d") for p in _list(args.istio_local_exclude_ports)),
    )


def run(args: argparse.Namespace) -> int:
    try:
        text = rules(capture_of(args))
    except IptablesError as err:
        print(f"istiolite iptables: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    errors = []
    for tool in RESTORE_TOOLS:
        path = shutil.which(tool)
        if path is None:
            continue
        result = subprocess.run(
            [path, "--noflush"], input=text, capture_output=True, text=True, timeout=60
        )
        if result.returncode == 0:
            print(f"istiolite iptables: rules loaded with {tool}")
            return 0
        errors.append(f"{tool}: {result.stderr.strip()[:500]}")
    print(
        "istiolite iptables: could not load the rules: "
        + ("; ".join(errors) or "no iptables-restore on PATH"),
        file=sys.stderr,
    )
    return 1
