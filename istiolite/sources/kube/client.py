"""The one module that talks to the Kubernetes API (kubernetes_asyncio): connection set-up from
`--kubeconfig` or the in-cluster config, and the calls istiolite makes. Responses are decoded
from raw JSON with orjson, not through the generated models (10-30x slower)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from istiolite.logs import get_logger
from istiolite.security.authn import TokenReviewResult

if TYPE_CHECKING:
    from kubernetes_asyncio import client

log = get_logger("kube")

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
REQUEST_TIMEOUT = 10.0  # seconds for one API call, connect included
MAX_RESPONSE_BYTES = 1024 * 1024


class KubeConfigError(ValueError):
    """The kubeconfig (or in-cluster config) cannot be used; the message says which and why."""


def in_cluster() -> bool:
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


class KubeClient:
    """An API connection verified with the kubeconfig's CA and authenticated with its
    credentials. Use `connect`; `close` when done."""

    def __init__(self, api: client.ApiClient, source: str) -> None:
        self._api = api
        self.source = source  # the kubeconfig path, or "in-cluster"

    @classmethod
    async def connect(cls, kubeconfig: Path | None) -> KubeClient | None:
        """From `kubeconfig`, else the in-cluster config inside a pod, else None (no cluster)."""
        if kubeconfig is None and not in_cluster():
            return None
        # Imported here: kubernetes_asyncio takes ~0.5 s to import, which a server without a
        # cluster should not pay at every start.
        from kubernetes_asyncio import client, config
        from kubernetes_asyncio.config.config_exception import ConfigException

        configuration = client.Configuration()
        try:
            if kubeconfig is not None:
                if not await asyncio.to_thread(kubeconfig.is_file):
                    raise KubeConfigError(f"--kubeconfig {kubeconfig}: no such file")
                await config.load_kube_config(
                    config_file=str(kubeconfig),
                    client_configuration=configuration,
                    persist_config=False,
                )
                source = str(kubeconfig)
            elif in_cluster():
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                source = "in-cluster"
            else:
                return None
        except (ConfigException, OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
            where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
            raise KubeConfigError(f"{where}: {str(err)[:300]}") from None
        log.info("kubernetes API", server=configuration.host, config=source)
        return cls(client.ApiClient(configuration), source)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST a JSON object; (HTTP status, decoded body). OSError-family errors propagate."""
        response = await self._api.call_api(
            path,
            "POST",
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        try:
            data = await response.content.read(MAX_RESPONSE_BYTES + 1)
            status = int(response.status)
        finally:
            response.release()
        if len(data) > MAX_RESPONSE_BYTES:
            raise ValueError(f"response from {path} larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            decoded = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            raise ValueError(f"response from {path} (HTTP {status}) is not JSON") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"response from {path} (HTTP {status}) is not a JSON object")
        return status, decoded

    async def review_token(self, token: str, audiences: list[str]) -> TokenReviewResult:
        """TokenReview (authentication.k8s.io/v1) of `token` for `audiences` (sent explicitly:
        a review without audiences is judged against the API server's own)."""
        status, body = await self._post(
            TOKEN_REVIEW_PATH,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": audiences},
            },
        )
        if not 200 <= status <= 299:
            message = body.get("message") if isinstance(body.get("message"), str) else ""
            raise ValueError(f"TokenReview failed: HTTP {status} {str(message)[:200]}".rstrip())
        review = body.get("status")
        if not isinstance(review, dict):
            review = {}
        user = review.get("user") if isinstance(review.get("user"), dict) else {}
        assert isinstance(user, dict)
        return TokenReviewResult(
            authenticated=review.get("authenticated") is True,
            username=_string(user.get("username")),
            groups=_strings(user.get("groups")),
            audiences=_strings(review.get("audiences")),
            error=_string(review.get("error")),
        )


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value[:100] if isinstance(v, str))
