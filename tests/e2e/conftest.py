"""e2e fixtures: network namespaces need root, iproute2 and iptables (make test installs the last
two when run as root). Without a working set-up the tests fail with the reason, never skip:
deselect them explicitly with -m "not e2e"."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from istiolite.demo.mesh import bookinfo
from istiolite.demo.mesh.cluster import Mesh
from istiolite.demo.mesh.netns import reap_stale, unavailable_reason
from tests.e2e.harness import MeshNetwork


@functools.cache
def _unavailable() -> str | None:
    reap_stale()
    return unavailable_reason()


def require_e2e() -> None:
    """Fail (never skip) with the reason when namespaces cannot be used here."""
    reason = _unavailable()
    if reason:
        pytest.fail(f"e2e set-up unavailable: {reason} (deselect with -m 'not e2e')")


@pytest.fixture(scope="module")
def mesh_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshNetwork]:
    """The network namespace with istiolite running; tests add upstreams and pods. Everything
    (processes, namespaces with their interfaces and iptables rules, files) is removed after the
    module, also when set-up fails half way."""
    reason = _unavailable()
    if reason:
        # Never a skip: a machine that cannot run them fails them, with the reason. Deselect
        # them on purpose with -m "not e2e".
        pytest.fail(f"e2e set-up unavailable: {reason} (deselect with -m 'not e2e')")
    with ExitStack() as stack:
        network = MeshNetwork.create(stack, tmp_path_factory.mktemp("e2e"))
        yield network


@pytest.fixture(scope="module")
def bookinfo_mesh() -> Iterator[Mesh]:
    """The demo's bookinfo mesh (istiolite.demo.mesh), torn down after the module."""
    require_e2e()
    with Mesh(bookinfo.SERVICES) as mesh:
        mesh.start()
        mesh.add_pods(bookinfo.PODS)
        yield mesh
