"""The mesh CA kept in the cluster, as istiod keeps it, so that every replica signs with one
root: Secret `cacerts` (the operator's plug-in CA) when present, else Secret `istio-ca-secret`
(type `istio.io/ca-root`, a self-signed root), created by the first replica that finds none.
Creation is a POST: when two replicas race, one wins and the other's 409 makes it re-read and
load the winner's root, so there is never a second root. `--ca-dir` wins over both (the server
does not use this then).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Protocol

from istiolite.logs import get_logger
from istiolite.security.ca import (
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    CAError,
    MeshCA,
    new_root_material,
    signer_from_secret,
)
from istiolite.sources.kube.errors import Conflict, KubeApiError, NotFound
from istiolite.sources.kube.refs import ObjectRef, secret

log = get_logger("ca-secret")

CA_SECRET = "istio-ca-secret"
PLUGIN_SECRET = "cacerts"
CA_SECRET_TYPE = "istio.io/ca-root"
PRIVATE_KEY = "key.pem"  # istiod writes it, empty, next to the others
_MAX_TRIES = 5
_PEM_END = b"-----END CERTIFICATE-----"


class SecretApi(Protocol):
    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]: ...

    async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]: ...


def decoded_data(obj: dict[str, Any], where: str) -> dict[str, bytes]:
    """A Secret's `data`, base64-decoded; CAError naming the key that is not base64."""
    data = obj.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CAError(f"{where}: data is not a map")
    out: dict[str, bytes] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise CAError(f"{where} key {key}: not a base64 string")
        try:
            out[str(key)] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise CAError(f"{where} key {key}: not valid base64") from None
    return out


def plugin_keys(data: dict[str, bytes]) -> dict[str, bytes]:
    """`cacerts` as istiod also takes it from cert-manager (a kubernetes.io/tls Secret:
    `tls.crt` the CA certificate and chain, `tls.key`, `ca.crt` the root) in Istio's names."""
    if data.get(CA_CERT) or not (data.get("tls.crt") and data.get("tls.key")):
        return data
    chain = data["tls.crt"]
    end = chain.find(_PEM_END)
    first = chain[: end + len(_PEM_END)] + b"\n" if end >= 0 else chain
    return {CA_CERT: first, CA_KEY: data["tls.key"], CERT_CHAIN: chain,
            ROOT_CERT: data.get("ca.crt", b"")}  # fmt: skip


class ClusterCA:
    """Loads (or creates once) the CA Secret into `ca`, and keeps it current (`watch`)."""

    def __init__(self, api: SecretApi, ca: MeshCA, *, namespace: str) -> None:
        self._api = api
        self._ca = ca
        self.namespace = namespace
        self.source = ""

    def _refs(self) -> tuple[ObjectRef, ObjectRef]:
        return secret(self.namespace, PLUGIN_SECRET), secret(self.namespace, CA_SECRET)

    async def load(self) -> str:
        """Install the cluster's CA in `ca`; the Secret it came from ("namespace/name").
        CAError when a Secret is there but unusable (never replaced by a new root);
        KubeApiError/OSError when the API cannot be reached."""
        plugin, own = self._refs()
        for _ in range(_MAX_TRIES):
            found = await self._get(plugin) or await self._get(own)
            if found is None:
                created = await self._create(own)
                if created is None:
                    continue  # another replica created it first: read theirs
                found = created
            ref, obj = found
            where = f"Secret {ref.namespace}/{ref.name}"
            signer = signer_from_secret(plugin_keys(decoded_data(obj, where)), where)
            self._ca.install(signer, where)
            self.source = f"{ref.namespace}/{ref.name}"
            return self.source
        raise CAError(f"Secret {own.namespace}/{own.name}: created and gone {_MAX_TRIES} times")

    async def _get(self, ref: ObjectRef) -> tuple[ObjectRef, dict[str, Any]] | None:
        try:
            return ref, await self._api.get(ref)
        except NotFound:
            return None

    async def _create(self, ref: ObjectRef) -> tuple[ObjectRef, dict[str, Any]] | None:
        cert_pem, key_pem = await asyncio.to_thread(
            new_root_material, self._ca.trust_domain, self._ca.key_type
        )
        data = {
            CA_CERT: cert_pem,
            CA_KEY: key_pem,
            CERT_CHAIN: b"",
            PRIVATE_KEY: b"",
            ROOT_CERT: b"",
        }
        body = {
            "type": CA_SECRET_TYPE,
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        try:
            created = await self._api.create(ref, body)
        except Conflict as err:
            if err.already_exists:
                log.info("CA secret created by another replica; loading it", secret=str(ref))
                return None
            raise
        log.info("CA root created in the cluster", secret=f"{ref.namespace}/{ref.name}")
        return ref, created

    async def watch(self, interval: float = 10.0) -> None:
        """Re-read the Secret every `interval` s and install what changed (a rotated or newly
        plugged-in root). Failures are logged; the current signer stays."""
        while True:
            await asyncio.sleep(interval)
            plugin, own = self._refs()
            try:
                found = await self._get(plugin) or await self._get(own)
                if found is None:
                    continue  # deleted: keep signing; the next start creates a new one
                ref, obj = found
                where = f"Secret {ref.namespace}/{ref.name}"
                signer = signer_from_secret(plugin_keys(decoded_data(obj, where)), where)
                if self._ca.install(signer, where):
                    self.source = f"{ref.namespace}/{ref.name}"
            except CAError as err:
                log.error("CA secret changed but cannot be used; still signing as before",
                          error=str(err))  # fmt: skip
            except (KubeApiError, OSError, TimeoutError, ValueError) as err:
                log.warning("cannot read the CA secret", error=str(err)[:300])
