"""Settings istiolite accepts but does not apply reach the server log (once, when new) and
`/debug/configz`, next to the warnings about missing references."""

from __future__ import annotations

import time
from pathlib import Path

from structlog.testing import capture_logs

from istiolite.debug import pages
from istiolite.model.kinds import parse_object
from istiolite.server import DebugStatusView, Istiolite
from istiolite.settings import Settings

ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryRemoteLocalities: true}
"""

RETRIES_WARNING = {
    "object": "VirtualService shop/reviews",
    "field": "spec.http[0].retries.retryRemoteLocalities",
    "message": "accepted but not applied yet",
}


def app_over(tmp_path: Path) -> Istiolite:
    config = tmp_path / "config"
    config.mkdir()
    (config / "routes.yaml").write_text(ROUTES)
    app = Istiolite(Settings(config_dirs=[config]))
    app.files.load_all()
    return app


def logged(logs: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(e["event"], e["object"], e["field"]) for e in logs if e["log_level"] == "warning"]


def test_logged_once_when_new_and_listed_in_configz(tmp_path: Path) -> None:
    app = app_over(tmp_path)
    with capture_logs() as logs:
        app.pusher.start()
    assert logged(logs) == [
        ("config setting not applied", RETRIES_WARNING["object"], RETRIES_WARNING["field"])
    ]
    with capture_logs() as logs:  # the next build: nothing new
        app.pusher.start()
    assert logged(logs) == []
    assert pages.configz(DebugStatusView(app))["warnings"] == [RETRIES_WARNING]


async def test_a_workload_entry_only_push_reports_its_fields(tmp_path: Path) -> None:
    """A WorkloadEntry change is an endpoint-only push, yet its own fields may be unapplied."""
    app = app_over(tmp_path)
    app.pusher.start()
    key, entry = parse_object(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": "vm-1", "namespace": "shop"},
            "spec": {"address": "10.128.0.7", "network": "vm-net"},
        }
    )
    changes = app.store.replace_source("vms", {key: entry})
    with capture_logs() as logs:
        await app._push([(time.monotonic(), changes)])
    assert app.push_status["full"] is False
    assert logged(logs) == [
        ("config setting not applied", "WorkloadEntry shop/vm-1", "spec.network")
    ]
    assert [w["object"] for w in pages.configz(DebugStatusView(app))["warnings"]] == [
        "VirtualService shop/reviews",
        "WorkloadEntry shop/vm-1",
    ]
