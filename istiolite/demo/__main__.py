"""`make demo`: istiolite with the bundled example mesh, echo upstreams and a real Envoy.

Prints what to curl and runs until Ctrl-C. `--check` sends the requests itself and exits.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from istiolite.demo.echo import EchoServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo"
UPSTREAMS = {"127.0.0.21": "hello-1", "127.0.0.22": "hello-2", "127.0.0.23": "world-1"}
UPSTREAM_PORT = 9081
SERVICE_PORT = 9080
NODE_ID = "sidecar~127.0.0.1~client-1.demo~demo.svc.cluster.local"


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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m istiolite.demo", description=__doc__)
    parser.add_argument("--check", action="store_true", help="send requests, report, and exit")
    parser.add_argument("--delta", action="store_true", help="Envoy uses Delta ADS")
    parser.add_argument("--grpc-port", type=int, default=15010)
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--monitoring-port", type=int, default=15014)
    args = parser.parse_args()

    envoy = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    workdir = Path(tempfile.mkdtemp(prefix="istiolite-demo-"))
    upstreams = [EchoServer(ip, UPSTREAM_PORT, name).start() for ip, name in UPSTREAMS.items()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        serve = [
            sys.executable, "-m", "istiolite.cli", "serve", "--config-dir", str(EXAMPLE),
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
        bootstrap = workdir / "envoy.json"
        boot = [
            sys.executable, "-m", "istiolite.cli", "bootstrap", "--node-id", NODE_ID,
            "--xds-address", f"127.0.0.1:{args.grpc_port}",
            "--admin-address", f"127.0.0.1:{args.admin_port}",
            "--meta", "NAMESPACE=demo", "--meta", "INTERCEPTION_MODE=NONE",
            "--label", "app=client", "-o", str(bootstrap),
        ]  # fmt: skip
        if args.delta:
            boot.append("--delta")
        subprocess.run(boot, check=True)
        envoy_log = open(workdir / "envoy.log", "wb")
        procs.append(
            subprocess.Popen(
                [envoy, "-c", str(bootstrap), "--use-dynamic-base-id", "-l", "warning"],
                stdout=envoy_log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait("envoy", lambda: _get(f"http://127.0.0.1:{args.admin_port}/ready") == 200, procs, 30)
        _wait("the first route", lambda: _request("hello.demo")[0] == 200, procs, 30)

        if args.check:
            seen = {_request("hello.demo")[1] for _ in range(20)}
            world = _request("world.demo")
            print(f"hello.demo served by: {sorted(seen)}; world.demo served by: {world[1]}")
            return 0 if seen == {"hello-1", "hello-2"} and world == (200, "world-1") else 1

        print(
            f"""
istiolite is serving the example mesh in {EXAMPLE} to a real Envoy.

  curl -H 'Host: hello.demo' http://127.0.0.1:{SERVICE_PORT}/     # alternates hello-1 / hello-2
  curl -H 'Host: world.demo' http://127.0.0.1:{SERVICE_PORT}/     # world-1
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


if __name__ == "__main__":
    sys.exit(main())
