"""e2e fixtures: network namespaces need root, iproute2 and iptables (make test installs the last
two when run as root). Not root: skipped, with the reason. Root (as CI runs) without a working
set-up: failed, so a broken machine never passes silently."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.e2e.harness import MeshNetwork
from tests.support.netns import reap_stale, unavailable_reason


@functools.cache
def _unavailable() -> str | None:
    reap_stale()
    return unavailable_reason()


@pytest.fixture(scope="module")
def mesh_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshNetwork]:
    """The network namespace with istiolite running; tests add upstreams and pods. Everything
    (processes, namespaces with their interfaces and iptables rules, files) is removed after the
    module, also when set-up fails half way."""
    reason = _unavailable()
    if reason:
        if os.geteuid() == 0:
            pytest.fail(f"e2e set-up unavailable as root: {reason}")
        pytest.skip(reason)
    with ExitStack() as stack:
        network = MeshNetwork.create(stack, tmp_path_factory.mktemp("e2e"))
        yield network
