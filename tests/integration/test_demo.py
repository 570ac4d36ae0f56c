"""`make demo` works: the bundled example mesh through a real Envoy, as the README promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.net import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


@pytest.mark.parametrize("variant", [[], ["--delta"]], ids=["sotw", "delta"])
def test_demo_check_reaches_every_example_upstream(variant: list[str]) -> None:
    ports = {
        "--grpc-port": free_port(),
        "--admin-port": free_port(),
        "--gateway-admin-port": free_port(),
        "--http-port": free_port(),
        "--monitoring-port": free_port(),
    }
    argv = [sys.executable, "-m", "istiolite.demo", "--check", *variant]
    for flag, port in ports.items():
        argv += [flag, str(port)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello.demo served by: ['hello-1', 'hello-2']" in result.stdout
    assert "world.demo served by: world-1" in result.stdout
    both = "['hello-1', 'hello-2']"
    assert f"gateway HTTP: {both}; gateway HTTPS: {both}" in result.stdout
