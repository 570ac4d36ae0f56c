"""`make demo`: as root on Linux, a whole mesh on network namespaces (istiolite.demo.mesh: the
bookinfo pods, their sidecars, istio-init interception, mTLS from istiolite's CA) with a live
per-service summary. Otherwise (or with --loopback): istiolite with the bundled example mesh,
echo upstreams and a real Envoy on loopback.

Prints what to curl and runs until Ctrl-C (or SIGTERM). `--check` sends the requests itself and
exits. However it stops, the child processes are stopped and the work directory (logs, the
gateway's private key) is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import yaml

from istiolite.demo.certs import CertificateAuthority, tls_secret
from istiolite.demo.echo import EchoServer
from istiolite.demo.layout import EXAMPLE, LOOPBACK, Layout

NODE_ID = "sidecar~127.0.0.1~client-1.demo~demo.svc.cluster.local"
GATEWAY_ID = "router~127.0.0.1~ingressgateway-1.istio-system~istio-system.svc.cluster.local"
GATEWAY_HOST = "hello.example.com"
READY = "Ctrl-C stops everything."  # the last line printed once everything answers


class DemoError(Exception):
    """The demo cannot go on; the message says why (and what to do)."""


class Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@dataclass
class Children:
    """The demo's processes, each with its log file in the work directory."""

    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "wb") as log:
            # Own session: a Ctrl-C in the terminal reaches the demo only, which stops the
            # children in order (and nothing is left half-stopped).
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check(self, doing: str) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DemoError(
                    f"{name} exited with code {proc.returncode} {doing}; the end of its log:\n"
                    + self.log_tail(name)
                )

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except OSError:
        return 0


def _wait(what: str, check: Callable[[], bool], children: Children, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check(f"while waiting for {what}")
        if check():
            return
        time.sleep(0.1)
    logs = "\n".join(f"{name}:\n{children.log_tail(name, 5)}" for name in children.procs)
    raise DemoError(f"timed out waiting for {what}; the end of each log:\n{logs}")


def _request(layout: Layout, host: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(LOOPBACK, layout.service_port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
    except OSError:
        return 0, ""
    finally:
        conn.close()
    server = json.loads(body)["server"] if resp.status == 200 else ""
    return resp.status, server


def _gateway_request(layout: Layout, ca_file: Path | None) -> tuple[int, str]:
    """GET hello.example.com through the gateway: HTTPS verified against the demo CA, or HTTP."""
    port = layout.gateway_http_port if ca_file is None else layout.gateway_https_port
    raw = socket.create_connection((LOOPBACK, port), timeout=5)
    sock: socket.socket = raw
    if ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        sock = ctx.wrap_socket(raw, server_hostname=GATEWAY_HOST)
    with sock:
        sock.sendall(
            f"GET / HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)["server"] if status == 200 else ""


def _write_credentials(workdir: Path) -> Path:
    """A demo CA and a certificate for hello.example.com, as the Secret the Gateway names.
    Returns the CA file clients verify with; the Secret file is readable by its owner only."""
    ca = CertificateAuthority("istiolite demo CA")
    pair = ca.issue(GATEWAY_HOST, dns=(GATEWAY_HOST,))
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700)
    path = secrets / "demo-cert.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(tls_secret("demo-cert", "istio-system", pair), out)
    ca_file = workdir / "demo-ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    return ca_file


def _make_workdir(chosen: Path | None) -> Path:
    if chosen is None:
        return Path(tempfile.mkdtemp(prefix="istiolite-demo-"))
    try:
        chosen.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        raise DemoError(
            f"{chosen} exists; --workdir must name a new directory (the demo removes it at exit)"
        ) from None
    return chosen.resolve()


def _bootstrap(layout: Layout, node_id: str, admin_port: int, delta: bool) -> list[str]:
    argv = [
        sys.executable, "-m", "istiolite.cli", "bootstrap", "--node-id", node_id,
        "--xds-address", f"{LOOPBACK}:{layout.grpc_port}",
        "--admin-address", f"{LOOPBACK}:{admin_port}",
    ]  # fmt: skip
    return [*argv, "--delta"] if delta else argv


def _start_envoy(children: Children, envoy: str, name: str, boot: list[str]) -> None:
    bootstrap = children.workdir / f"{name}.json"
    subprocess.run([*boot, "-o", str(bootstrap)], check=True)
    children.start(name, [envoy, "-c", str(bootstrap), "--use-dynamic-base-id", "-l", "warning"])


def _run(args: argparse.Namespace, layout: Layout, cleanup: contextlib.ExitStack) -> int:
    envoy = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    workdir = _make_workdir(args.workdir)
    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    ca_file = _write_credentials(workdir)
    mesh = layout.mesh_dir(workdir)
    for ip, name in layout.upstreams.items():
        try:
            server = EchoServer(ip, layout.upstream_port, name).start()
        except OSError as err:
            where = f"{ip}:{layout.upstream_port}"
            raise DemoError(f"upstream {name} cannot listen on {where}: {err}") from err
        cleanup.callback(server.stop)
    children = Children(workdir)
    cleanup.callback(children.stop)

    children.start(
        "istiolite",
        [
            sys.executable, "-m", "istiolite.cli", "serve", "--config-dir", str(mesh),
            "--config-dir", str(workdir / "secrets"),
            "--grpc-addr", f"{LOOPBACK}:{layout.grpc_port}",
            "--secure-grpc-addr", f"{LOOPBACK}:{layout.secure_grpc_port}",
            "--http-addr", f"{LOOPBACK}:{layout.http_port}",
            "--monitoring-addr", f"{LOOPBACK}:{layout.monitoring_port}",
            "--webhook-addr", "off",  # the demo has no Kubernetes API server to call them
            "--log-format", "console",
            # The demo gateway terminates TLS with a Secret it fetches over loopback SDS.
            "--dev-plaintext-sds",
        ],
    )  # fmt: skip
    _wait("istiolite", lambda: _get(f"http://{LOOPBACK}:{layout.http_port}/ready") == 200, children)
    boot = _bootstrap(layout, NODE_ID, layout.admin_port, args.delta)
    boot += ["--meta", "NAMESPACE=demo", "--meta", "INTERCEPTION_MODE=NONE"]
    boot += ["--label", "app=client"]
    gateway_boot = _bootstrap(layout, GATEWAY_ID, layout.gateway_admin_port, args.delta)
    gateway_boot += ["--meta", "NAMESPACE=istio-system", "--label", "istio=ingressgateway"]
    _start_envoy(children, envoy, "envoy", boot)
    _start_envoy(children, envoy, "gateway", gateway_boot)
    _wait("envoy", lambda: _get(f"http://{LOOPBACK}:{layout.admin_port}/ready") == 200, children)
    _wait("the first route", lambda: _request(layout, "hello.demo")[0] == 200, children)
    _wait(
        "the gateway",
        lambda: _get(f"http://{LOOPBACK}:{layout.gateway_admin_port}/ready") == 200,
        children,
    )

    if args.check:
        seen = {_request(layout, "hello.demo")[1] for _ in range(20)}
        world = _request(layout, "world.demo")
        print(f"hello.demo served by: {sorted(seen)}; world.demo served by: {world[1]}")
        via_gateway = {_gateway_request(layout, None)[1] for _ in range(10)}
        via_https = {_gateway_request(layout, ca_file)[1] for _ in range(10)}
        print(f"gateway HTTP: {sorted(via_gateway)}; gateway HTTPS: {sorted(via_https)}")
        sidecar_ok = seen == {"hello-1", "hello-2"} and world == (200, "world-1")
        gateway_ok = via_gateway == via_https == {"hello-1", "hello-2"}
        return 0 if sidecar_ok and gateway_ok else 1

    shown = "examples/demo" if mesh == EXAMPLE else str(mesh)
    copy = "" if mesh == EXAMPLE else f"{shown} is a copy of examples/demo on the ports chosen.\n"
    svc, gw, gws = layout.service_port, layout.gateway_http_port, layout.gateway_https_port
    print(
        f"""
istiolite is serving the example mesh in {mesh} to a real Envoy.

  curl -H 'Host: hello.demo' http://127.0.0.1:{svc}/     # hello-1 or hello-2, at random
  curl -H 'Host: world.demo' http://127.0.0.1:{svc}/     # world-1
  curl -H 'Host: hello.example.com' http://127.0.0.1:{gw}/  # via the gateway
  curl --cacert {ca_file} --resolve hello.example.com:{gws}:127.0.0.1 \\
      https://hello.example.com:{gws}/      # HTTPS, certificate from a Secret
  curl http://127.0.0.1:{layout.admin_port}/config_dump               # what Envoy got
  .venv/bin/istiolite proxy-status --istiolite http://127.0.0.1:{layout.http_port}
  .venv/bin/istiolite render --config-dir {shown} --node-id {NODE_ID} \\
      --meta INTERCEPTION_MODE=NONE                  # the same, computed offline

{copy}Edit a file in {shown} (e.g. remove an endpoint) and Envoy follows within a second.
CA certificate: {ca_file}
Logs: {workdir} (removed when the demo stops, as is the gateway's private key).
{READY}
""",
        flush=True,
    )
    try:
        while True:
            children.check("while the demo was running")
            time.sleep(0.5)
    except Stopped as stop:
        print(f"demo: stopping ({stop})", file=sys.stderr, flush=True)
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m istiolite.demo", description=__doc__)
    parser.add_argument("--check", action="store_true", help="send requests, report, and exit")
    parser.add_argument("--delta", action="store_true", help="Envoy uses Delta ADS")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="a new directory for the logs, certificates and bootstraps (default: a new "
        "temporary directory); removed when the demo stops",
    )
    parser.add_argument(
        "--loopback",
        action="store_true",
        help="the loopback demo even as root (no network namespaces)",
    )
    parser.add_argument(
        "--config-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="network-namespace mesh: another config directory of your own YAML (repeatable)",
    )
    parser.add_argument(
        "--mesh-config",
        action=_DeprecatedConfigDir,
        type=Path,
        dest="config_dir",
        metavar="DIR",
        help="deprecated: the old name of --config-dir (serve's --mesh-config is a file)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="network-namespace mesh: stop after this long (default: at Ctrl-C)",
    )
    Layout.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.loopback:
        from istiolite.demo.mesh.netns import unavailable_reason

        reason = unavailable_reason()
        loopback_only = _loopback_flags(parser, sys.argv[1:] if argv is None else argv)
        if reason is None and not loopback_only:
            return _mesh_demo(args)
        why = (
            f"the network-namespace mesh cannot run here ({reason})"
            if reason is not None
            else f"{', '.join(loopback_only)}: options of the loopback demo"
        )
        print(f"demo: {why}; running the loopback demo", file=sys.stderr, flush=True)
    layout = Layout.from_args(args)

    problems = layout.problems()
    if problems:
        print(f"demo: cannot start: {problems}", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        with contextlib.ExitStack() as cleanup:
            # Undone in reverse: children, upstreams, the work directory; a second signal does
            # not cut the clean-up short.
            try:
                return _run(args, layout, cleanup)
            finally:
                _ignore_signals()
    except Stopped as stop:  # before the demo was serving, or during --check
        print(f"demo: stopped ({stop})", file=sys.stderr)
        return 128 + stop.signum
    except (DemoError, subprocess.CalledProcessError) as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1


class _DeprecatedConfigDir(argparse.Action):
    """`--mesh-config DIR`, the demo's old flag: still works, with a warning, because
    `istiolite serve --mesh-config` names Istio's mesh config file, not a directory."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(
            f"demo: {option_string} is deprecated, use --config-dir "
            "(istiolite serve --mesh-config is Istio's mesh config file)",
            file=sys.stderr,
            flush=True,
        )
        dirs = list(getattr(namespace, self.dest, None) or [])
        dirs.append(values)
        setattr(namespace, self.dest, dirs)


def _loopback_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The options given that only the loopback demo has (its ports, addresses, --workdir)."""
    mesh_flags = {
        *("--check", "--loopback", "--config-dir", "--mesh-config", "--duration", "-h", "--help")
    }
    known = {f for action in parser._actions for f in action.option_strings}
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}
    return sorted(f for f in given & known if f not in mesh_flags)


def _mesh_demo(args: argparse.Namespace) -> int:
    from istiolite.demo.mesh import run
    from istiolite.demo.mesh.cluster import MeshError

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        return run.main(args, before_teardown=_ignore_signals)
    except Stopped as stop:
        print(f"demo: stopped ({stop}); everything it made is removed", file=sys.stderr)
        return 0 if not args.check else 128 + stop.signum
    except MeshError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1


def _ignore_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
