"""istiod's default retry policy for mesh routes."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from istiolite.networking.typed import pack, uint32


def default_retry_policy() -> rc.RetryPolicy:
    """istiod's default: two retries on connection failures and 503, each on another host."""
    return rc.RetryPolicy(
        retry_on="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        num_retries=uint32(2),
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
        retriable_status_codes=[503],
    )
