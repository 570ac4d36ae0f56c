"""The bookinfo-like application: productpage → details and reviews (v1, v2, v3); reviews v2 and
v3 → ratings. Plus `sleep`, a client pod with a sidecar and no app (requests are made from it),
and `legacy`, a pod without a sidecar (no Envoy, no interception, not `tlsMode: istio`)."""

from __future__ import annotations

from pathlib import Path

from istiolite.demo.mesh.cluster import PodSpec, ServiceSpec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "bookinfo"

NAMESPACE = "bookinfo"
PORT = 9080
SERVICES = [
    ServiceSpec(name, PORT, NAMESPACE) for name in ("details", "productpage", "ratings", "reviews")
]


def _sa(service: str) -> str:
    return f"bookinfo-{service}"


PODS = [
    PodSpec("details-v1", "details", _sa("details")),
    PodSpec("ratings-v1", "ratings", _sa("ratings")),
    PodSpec("reviews-v1", "reviews", _sa("reviews"), "v1"),
    PodSpec("reviews-v2", "reviews", _sa("reviews"), "v2", calls=(f"ratings:{PORT}",)),
    PodSpec("reviews-v3", "reviews", _sa("reviews"), "v3", calls=(f"ratings:{PORT}",)),
    PodSpec(
        "productpage-v1",
        "productpage",
        _sa("productpage"),
        calls=(f"details:{PORT}", f"reviews:{PORT}"),
    ),
    PodSpec("sleep", None, "sleep"),
    PodSpec("legacy", None, "legacy", sidecar=False),
]
