"""`make demo`: istiolite with the bundled example mesh, echo upstreams and a real Envoy.

Prints what to curl and runs until Ctrl-C. `--check` sends the requests itself and exits.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import yaml

from istiolite.demo.certs import CertificateAuthority, tls_secret
from istiolite.demo.echo import EchoServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo"
UPSTREAMS = {"127.0.0.21": "hello-1", "127.0.0.22": "hello-2", "127.0.0.23": "world-1"}
UPSTREAM_PORT = 9081
SERVICE_PORT = 9080
NODE_ID = "sidecar~127.0.0.1~client-1.demo~demo.svc.cluster.local"
GATEWAY_ID = "router~127.0.0.1~ingressgateway-1.istio-system~istio-system.svc.cluster.local"
GATEWAY_HTTP_PORT = 9090
GATEWAY_HTTPS_PORT = 9443
GATEWAY_HOST = "hello.example.com"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except OSError:
        return 0


def _wait(what: str, check: object, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"demo: a process exited while waiting for {what}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def _request(host: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", SERVICE_PORT, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    server = json.loads(body)["server"] if resp.status == 200 else ""
    return resp.status, server


def _gateway_request(ca_file: Path | None) -> tuple[int, str]:
    """GET hello.example.com through the gateway: HTTPS verified against the demo CA, or HTTP."""
    port = GATEWAY_HTTP_PORT if ca_file is None else GATEWAY_HTTPS_PORT
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
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


def _start_envoy(
    envoy: str,
    workdir: Path,
    name: str,
    boot: list[str],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    bootstrap = workdir / f"{name}.json"
    subprocess.run([*boot, "-o", str(bootstrap)], check=True)
    log = open(workdir / f"{name}.log", "wb")
    procs.append(
        subprocess.Popen(
            [envoy, "-c", str(bootstrap), "--use-dynamic-base-id", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m istiolite.demo", description=__doc__)
    parser.add_argument("--check", action="store_true", help="send requests, report, and exit")
    parser.add_argument("--delta", action="store_true", help="Envoy uses Delta ADS")
    parser.add_argument("--grpc-port", type=int, default=15010)
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--gateway-admin-port", type=int, default=15100)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--monitoring-port", type=int, default=15014)
    args = parser.parse_args()

    envoy = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    workdir = Path(tempfile.mkdtemp(prefix="istiolite-demo-"))
    upstreams = [EchoServer(ip, UPSTREAM_PORT, name).start() for ip, name in UPSTREAMS.items()]
    procs: list[subprocess.Popen[bytes]] = []
    ca_file = _write_credentials(workdir)
    try:
        serve = [
            sys.executable, "-m", "istiolite.cli", "serve", "--config-dir", str(EXAMPLE),
            "--config-dir", str(workdir / "secrets"),
            "--grpc-addr", f"127.0.0.1:{args.grpc_port}",
            "--http-addr", f"127.0.0.1:{args.http_port}",
            "--monitoring-addr", f"127.0.0.1:{args.monitoring_port}",
            "--log-format", "console",
        ]  # fmt: skip
        log = open(workdir / "istiolite.log", "wb")
        procs.append(subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT))
        _wait(
            "istiolite", lambda: _get(f"http://127.0.0.1:{args.http_port}/ready") == 200, procs, 30
        )
        boot = [
            sys.executable, "-m", "istiolite.cli", "bootstrap", "--node-id", NODE_ID,
            "--xds-address", f"127.0.0.1:{args.grpc_port}",
            "--admin-address", f"127.0.0.1:{args.admin_port}",
            "--meta", "NAMESPACE=demo", "--meta", "INTERCEPTION_MODE=NONE",
            "--label", "app=client",
        ]  # fmt: skip
        gateway_boot = [
            sys.executable, "-m", "istiolite.cli", "bootstrap", "--node-id", GATEWAY_ID,
            "--xds-address", f"127.0.0.1:{args.grpc_port}",
            "--admin-address", f"127.0.0.1:{args.gateway_admin_port}",
            "--meta", "NAMESPACE=istio-system", "--label", "istio=ingressgateway",
        ]  # fmt: skip
        if args.delta:
            boot.append("--delta")
            gateway_boot.append("--delta")
        _start_envoy(envoy, workdir, "envoy", boot, procs)
        _start_envoy(envoy, workdir, "gateway", gateway_boot, procs)
        _wait("envoy", lambda: _get(f"http://127.0.0.1:{args.admin_port}/ready") == 200, procs, 30)
        _wait("the first route", lambda: _request("hello.demo")[0] == 200, procs, 30)
        _wait(
            "the gateway",
            lambda: _get(f"http://127.0.0.1:{args.gateway_admin_port}/ready") == 200,
            procs,
            30,
        )

        if args.check:
            seen = {_request("hello.demo")[1] for _ in range(20)}
            world = _request("world.demo")
            print(f"hello.demo served by: {sorted(seen)}; world.demo served by: {world[1]}")
            via_gateway = {_gateway_request(None)[1] for _ in range(10)}
            via_https = {_gateway_request(ca_file)[1] for _ in range(10)}
            print(f"gateway HTTP: {sorted(via_gateway)}; gateway HTTPS: {sorted(via_https)}")
            sidecar_ok = seen == {"hello-1", "hello-2"} and world == (200, "world-1")
            gateway_ok = via_gateway == via_https == {"hello-1", "hello-2"}
            return 0 if sidecar_ok and gateway_ok else 1

        print(
            f"""
istiolite is serving the example mesh in {EXAMPLE} to a real Envoy.

  curl -H 'Host: hello.demo' http://127.0.0.1:{SERVICE_PORT}/     # alternates hello-1 / hello-2
  curl -H 'Host: world.demo' http://127.0.0.1:{SERVICE_PORT}/     # world-1
  curl -H 'Host: hello.example.com' http://127.0.0.1:{GATEWAY_HTTP_PORT}/  # via the gateway
  curl --cacert {ca_file} --resolve hello.example.com:{GATEWAY_HTTPS_PORT}:127.0.0.1 \\
      https://hello.example.com:{GATEWAY_HTTPS_PORT}/      # HTTPS, certificate from a Secret
  curl http://127.0.0.1:{args.admin_port}/config_dump               # what Envoy got
  .venv/bin/istiolite render --config-dir examples/demo --node-id {NODE_ID} \\
      --meta INTERCEPTION_MODE=NONE                  # the same, computed offline

Edit a file in examples/demo (e.g. remove an endpoint) and Envoy follows within a second.
Logs: {workdir}. Ctrl-C stops everything.
""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in upstreams:
            server.stop()
        if args.check:
            # Nothing to read afterwards; and it holds the demo certificate's private key.
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
