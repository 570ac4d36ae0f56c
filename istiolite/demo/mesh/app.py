"""One service of the bookinfo-like demo application, run inside a pod's network namespace.

    python -m istiolite.demo.mesh.app --service reviews --version v2 --pod reviews-v2 \\
        --port 9080 --call ratings:9080

Every GET answers JSON: which service, version and pod answered, the `x-forwarded-client-cert`
it saw (the caller's identity, as its sidecar vouches for it) and, for each `--call`, what the
next hop answered (called by service name, so the name resolves through the pod's /etc/hosts to
a ClusterIP that only the sidecar can route). A failed next hop is reported, not raised: the
page then says which hop failed and how, and the answer is 502 unless `--tolerate` names it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A next hop on a loaded machine (CI runs the whole suite on 2 cores) can take seconds; a
# hop that times out turns the caller's answer into a 502.
CALL_TIMEOUT = 10.0
MAX_BODY = 64 * 1024  # a next hop's answer is cut here


def call(target: str, headers: dict[str, str]) -> dict[str, Any]:
    """GET http://<target>/ with the given (propagated) headers; what came back."""
    host, _, port = target.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=CALL_TIMEOUT)
    try:
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY).decode(errors="replace")
    except OSError as err:
        return {"target": target, "status": 0, "error": f"{type(err).__name__}: {err}"}
    finally:
        conn.close()
    # `server` tells a sidecar's own answer (envoy: no route, upstream reset, timeout) from the
    # next app's.
    result: dict[str, Any] = {
        "target": target,
        "status": resp.status,
        "server": resp.getheader("server", ""),
    }
    try:
        result["answer"] = json.loads(body)
    except ValueError:
        result["body"] = body[:200]
    return result


def make_handler(
    service: str, version: str, pod: str, calls: list[str], tolerate: set[str]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle + the peer's delayed ACK
        # hold the body ~40 ms on a kept-alive connection.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            propagated = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("x-request-id", "end-user", "user-agent")
            }
            hops = [call(target, propagated) for target in calls]
            failed = [h for h in hops if h["status"] != 200 and h["target"] not in tolerate]
            body = json.dumps(
                {
                    "service": service,
                    "version": version,
                    "pod": pod,
                    "xfcc": self.headers.get("x-forwarded-client-cert", ""),
                    "calls": hops,
                }
            ).encode()
            self.send_response(502 if failed else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--pod", required=True)
    parser.add_argument("--port", type=int, default=9080)
    parser.add_argument("--call", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--tolerate", action="append", default=[], metavar="HOST:PORT")
    args = parser.parse_args(argv)
    handler = make_handler(args.service, args.version, args.pod, args.call, set(args.tolerate))
    httpd = ThreadingHTTPServer(("0.0.0.0", args.port), handler)
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{args.pod}: serving {args.service} {args.version} on :{args.port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
