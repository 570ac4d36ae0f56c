"""Network namespaces for tests: the helpers live in the package (`istiolite.demo.mesh.netns`,
which the demo's mesh uses too); this name stays for the tests that import it from here."""

from istiolite.demo.mesh.netns import (
    ETC_NETNS_DIR,
    NETNS_DIR,
    PREFIX,
    PROXY_GID,
    PROXY_UID,
    Netns,
    istio_iptables_rules,
    reap_stale,
    unavailable_reason,
    veth,
    which,
)

__all__ = [
    "ETC_NETNS_DIR",
    "NETNS_DIR",
    "PREFIX",
    "PROXY_GID",
    "PROXY_UID",
    "Netns",
    "istio_iptables_rules",
    "reap_stale",
    "unavailable_reason",
    "veth",
    "which",
]
