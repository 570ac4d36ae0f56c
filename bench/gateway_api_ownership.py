"""Benchmark: Gateway API status ownership and cross-namespace certificates.

(1) The leader's Gateway API status writer against the test API server, in-process: N HTTPRoutes,
each already carrying another controller's `status.parents` entry, written (GET + PUT /status
each, theirs kept), then a second pass by a fresh writer that reads each and writes nothing.
(2) The SDS Secrets of one Gateway's router when G Gateways each use a certificate Secret of
another namespace through a ReferenceGrant (the authorization looks at every Gateway result):
a cold build (fresh PushContext) and a cached one.

    .venv/bin/python -m bench.gateway_api_ownership [--routes 500] [--gateways 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from istiolite import type_urls
from istiolite.logs import configure_logging
from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.model.proxy import parse_proxy
from istiolite.networking import generator
from istiolite.operator.gateway_api_status import GatewayApiStatusWriter
from istiolite.push.context import PushContext
from istiolite.sources.kube.client import KubeClient
from tests.support.certs import CertificateAuthority, tls_secret
from tests.support.kube_apiserver import KubeApiServer
from tests.support.objects import context

GW = "gateway.networking.k8s.io"
THEIRS = {
    "parentRef": {"group": GW, "kind": "Gateway", "name": "theirs"},
    "controllerName": "example.com/other",
    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}],
}


async def status_writes(routes: int) -> tuple[float, float, int, int]:
    with KubeApiServer() as api, tempfile.TemporaryDirectory() as tmp:
        crds = (Path(__file__).parents[1] / "manifests" / "gateway-api" / "crds.yaml").read_text()
        for crd in yaml.safe_load_all(crds):
            if crd:
                api.put(crd)
        objects: dict[ObjectKey, Any] = {}
        docs: list[dict[str, Any]] = [
            {
                "apiVersion": f"{GW}/v1",
                "kind": "Gateway",
                "metadata": {"name": "edge", "namespace": "web"},
                "spec": {
                    "gatewayClassName": "istio",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            }
        ]
        docs += [
            {
                "apiVersion": f"{GW}/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": f"r-{i}", "namespace": "web"},
                "spec": {"parentRefs": [{"name": "edge"}, {"name": "theirs"}]},
                "status": {"parents": [THEIRS]},
            }
            for i in range(routes)
        ]
        for doc in docs:
            key, obj = parse_object(api.put(doc))
            objects[key] = obj
        ctx = PushContext(objects, domain="cluster.local", version="1")
        kube = await KubeClient.connect(api.write_kubeconfig(Path(tmp) / "kubeconfig"))
        assert kube is not None
        keys = [k for k in ctx.gateway_api_status() if k.kind == "HTTPRoute"]
        try:
            first = GatewayApiStatusWriter(kube, ctx.gateway_api_status)
            t0 = time.monotonic()
            await asyncio.gather(*(first.reconcile(k) for k in keys))
            write = time.monotonic() - t0
            again = GatewayApiStatusWriter(kube, ctx.gateway_api_status)
            t0 = time.monotonic()
            await asyncio.gather(*(again.reconcile(k) for k in keys))
            recheck = time.monotonic() - t0
        finally:
            await kube.close()
        kept = sum(
            1
            for i in range(routes)
            if THEIRS
            in ((api.get(f"{GW}/v1", "HTTPRoute", "web", f"r-{i}") or {})["status"]["parents"])
        )
        return write, recheck, first.writes + again.writes, kept


def sds(gateways: int) -> tuple[float, float, int]:
    pair = CertificateAuthority("bench CA").issue("shared.example.com")
    raws: list[Any] = [tls_secret("shared", "certs", pair)]
    raws.append(
        {
            "apiVersion": f"{GW}/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "all", "namespace": "certs"},
            "spec": {
                "from": [{"group": GW, "kind": "Gateway", "namespace": "edge"}],
                "to": [{"group": "", "kind": "Secret"}],
            },
        }
    )
    for i in range(gateways):
        raws.append(
            {
                "apiVersion": f"{GW}/v1",
                "kind": "Gateway",
                "metadata": {"name": f"gw-{i}", "namespace": "edge"},
                "spec": {
                    "gatewayClassName": "istio",
                    "listeners": [
                        {
                            "name": "https",
                            "port": 443,
                            "protocol": "HTTPS",
                            "tls": {"certificateRefs": [{"name": "shared", "namespace": "certs"}]},
                        }
                    ],
                },
            }
        )
    proxy = parse_proxy(
        "router~10.0.0.2~gw-0-1.edge~edge.svc.cluster.local",
        {"LABELS": {"gateway.networking.k8s.io/gateway-name": f"gw-{gateways - 1}"}},
    )
    ctx = context(*raws)
    t0 = time.monotonic()
    found = generator.generate(ctx, proxy, type_urls.SECRET)
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    for _ in range(100):
        generator.generate(ctx, proxy, type_urls.SECRET)
    cached = (time.monotonic() - t0) / 100
    return cold, cached, len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=500)
    parser.add_argument("--gateways", type=int, default=1000)
    args = parser.parse_args()
    configure_logging("json", "warning")
    write, recheck, writes, kept = asyncio.run(status_writes(args.routes))
    print(f"status of {args.routes} HTTPRoutes with another controller's entry: written in "
          f"{write:.2f} s ({args.routes / write:.0f}/s), re-checked by a fresh writer in "
          f"{recheck:.2f} s; {writes} writes in all, theirs kept on {kept}")  # fmt: skip
    cold, cached, served = sds(args.gateways)
    print(f"SDS of one router among {args.gateways} Gateways with a granted cross-namespace "
          f"certificate: {served} secret, cold {cold * 1000:.1f} ms, cached "
          f"{cached * 1e6:.0f} us")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
