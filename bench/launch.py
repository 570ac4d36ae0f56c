"""Start `istiolite serve` for a benchmark, through its public command line, on free ports.

Like tests.support.processes.IstioliteProcess (JSON logs to a file, /ready awaited, stopped by
PID), plus an optional cProfile wrapper: `python -m cProfile -o FILE -m istiolite.cli serve ...`.
istiolite leaves its loop on SIGTERM and returns from main, so the profile is written on stop.
"""

from __future__ import annotations

import io
import pstats
import sys
from pathlib import Path

from tests.support.net import free_port
from tests.support.processes import Process, http_get
from tests.support.wait import wait_for


class BenchIstiolite(Process):
    def __init__(
        self,
        config_dirs: list[Path],
        workdir: Path,
        *,
        debounce_after: float | None = 0.05,
        profile: Path | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.monitoring_port = free_port()
        self.profile = profile
        argv = [sys.executable]
        if profile is not None:
            argv += ["-m", "cProfile", "-o", str(profile)]
        argv += ["-m", "istiolite.cli", "serve"]
        for d in config_dirs:
            argv += ["--config-dir", str(d)]
        argv += [
            "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--monitoring-addr", f"127.0.0.1:{self.monitoring_port}",
            "--secure-grpc-addr", "127.0.0.1:0",
            "--webhook-addr", "127.0.0.1:0",
        ]  # fmt: skip
        if debounce_after is not None:
            argv += ["--debounce-after", str(debounce_after)]
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(argv, workdir / "istiolite.log")
        try:
            wait_for(self._ready, timeout=ready_timeout, what="istiolite /ready")
        except BaseException:
            self.stop()
            raise

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _ready(self) -> bool:
        if not self.alive():
            raise AssertionError(f"istiolite exited:\n{self.log()[-4000:]}")
        return http_get(f"http://127.0.0.1:{self.http_port}/ready", timeout=1)[0] == 200


def profile_summary(path: Path, top: int = 30) -> str:
    """The functions istiolite spent most time in (own time, then cumulative), as text."""
    if not path.exists():
        return f"(no profile written at {path})"
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()
