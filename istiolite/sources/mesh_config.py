"""`serve --mesh-config FILE`: the mesh config file (istiod reads /etc/istio/config/mesh, the
`istio` ConfigMap mounted), loaded into the config store and reloaded when it changes.

A ConfigMap volume is updated by swapping a symlink in the file's directory, so the directory
is watched and the file read again whenever anything in it changes; an unchanged text is no
change. A file that becomes invalid is refused with the field named, and the last good config
stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import watchfiles

from istiolite.logs import get_logger
from istiolite.model.mesh_config import (
    MAX_BYTES,
    MESH_CONFIG_KEY,
    MeshConfig,
    ParsedMeshConfig,
    parse_mesh_config,
)
from istiolite.model.store import ConfigStore
from istiolite.model.validation import ValidationError

log = get_logger("mesh-config")

SOURCE = "mesh-config"


class MeshConfigError(Exception):
    """The mesh config file cannot be used; the message names the file and the field."""


def read_mesh_config(path: Path) -> ParsedMeshConfig:
    """The file's mesh config; MeshConfigError naming the file (and field) otherwise."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise MeshConfigError(f"mesh config {path}: {err.strerror or err}") from None
    try:
        return parse_mesh_config(data.decode())
    except UnicodeDecodeError:
        raise MeshConfigError(f"mesh config {path}: not UTF-8 text") from None
    except ValidationError as err:
        raise MeshConfigError(f"mesh config {path}: {err}") from None


class MeshConfigFile:
    """Keeps the store's mesh config object equal to the file's last valid content."""

    def __init__(self, path: Path, store: ConfigStore, *, trust_domain: str) -> None:
        self.path = path
        self._store = store
        # The trust domain in use (the CA's): a file naming another one is not applied live.
        self._trust_domain = trust_domain
        self._digest = b""
        self.config = MeshConfig()
        self.reloads = 0
        self.errors = 0

    def load(self) -> MeshConfig:
        """The first load: an unusable file is an error (MeshConfigError), not a warning."""
        parsed = read_mesh_config(self.path)
        self._digest = self._file_digest()
        self._apply(parsed, first=True)
        return self.config

    def reload(self) -> bool:
        """Read the file again; True if a new config went into the store."""
        digest = self._file_digest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            parsed = read_mesh_config(self.path)
        except MeshConfigError as err:
            self.errors += 1
            log.error("mesh config refused, the previous one stays in force", error=str(err))
            return False
        return self._apply(parsed, first=False)

    def _file_digest(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                return hashlib.sha256(f.read(MAX_BYTES + 1)).digest()
        except OSError:
            return b"unreadable"

    def _apply(self, parsed: ParsedMeshConfig, *, first: bool) -> bool:
        config = parsed.config
        for note in parsed.notes:
            log.warning("mesh config field", file=str(self.path), note=note)
        if config.trust_domain and config.trust_domain != self._trust_domain:
            log.warning(
                "mesh config trustDomain not applied",
                file=str(self.path),
                trust_domain=config.trust_domain,
                in_use=self._trust_domain,
                why="--trust-domain was given" if first else "takes effect on restart",
            )
        changed = first or config != self.config
        self.config = config
        if changed:
            self._store.replace_source(SOURCE, {MESH_CONFIG_KEY: config})
            self.reloads += 0 if first else 1
            log.info(
                "mesh config loaded" if first else "mesh config reloaded",
                file=str(self.path),
                outbound_traffic_policy=config.outbound_mode,
                trust_domain=config.trust_domain or self._trust_domain,
                discovery_address=config.discovery_address or "(not set)",
                root_namespace=config.root_namespace,
            )
        return changed and not first

    async def run(self, stop: asyncio.Event) -> None:
        """Reload on every change in the file's directory until `stop`."""
        directory = self.path.parent
        while not stop.is_set():
            try:
                async for _changes in watchfiles.awatch(
                    directory, stop_event=stop, debounce=200, recursive=False
                ):
                    self.reload()
            except (OSError, RuntimeError) as err:
                # The directory is gone (or not yet there): look again shortly.
                log.warning("mesh config directory not watchable", error=str(err)[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=2.0)
                self.reload()
