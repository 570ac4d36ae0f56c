"""The one module that talks to the Kubernetes API (kubernetes_asyncio): connection set-up from
`--kubeconfig` or the in-cluster config, and the calls istiolite makes. Responses are decoded
from raw JSON with orjson, not through the generated models (10-30x slower)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from istiolite.logs import get_logger
from istiolite.security.authn import TokenReviewResult
from istiolite.sources.kube.errors import KubeApiError, NotFound, api_error
from istiolite.sources.kube.refs import ObjectRef

if TYPE_CHECKING:
    from kubernetes_asyncio import client

log = get_logger("kube")

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
REQUEST_TIMEOUT = 10.0  # seconds for one API call, connect included
MAX_RESPONSE_BYTES = 1024 * 1024
# A list page (limit 500) of large objects; beyond it the page size is the problem.
MAX_LIST_BYTES = 256 * 1024 * 1024
FIELD_MANAGER = "istiolite"  # server-side apply's owner of the fields istiolite writes


class KubeConfigError(ValueError):
    """The kubeconfig (or in-cluster config) cannot be used; the message says which and why."""


class KubeUnavailable(ConnectionError):
    """The API server could not be reached, dropped the connection, or went silent."""


class ApiError(Exception):
    """The API server answered with an error status (its metav1.Status message kept)."""

    def __init__(self, path: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{path}: HTTP {status} {reason} {message}".rstrip())
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message


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
            data = await _read_bounded(response.content, MAX_RESPONSE_BYTES + 1)
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

    # --- reads ------------------------------------------------------------------------------

    async def get_json(
        self,
        path: str,
        query: dict[str, str] | None = None,
        *,
        max_bytes: int = MAX_LIST_BYTES,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """GET a JSON object (a list page, discovery); ApiError for an error status,
        KubeUnavailable when the server cannot be reached or answers too slowly, ValueError
        for a body that is too large or not a JSON object. Gzip'd answers are accepted and
        the size bound applies to the decompressed body."""
        try:
            response = await self._api.call_api(
                path,
                "GET",
                query_params=list((query or {}).items()),
                header_params=dict(_READ_HEADERS),
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=request_timeout,
            )
            try:
                status = int(response.status)
                data = await _read_bounded(response.content, max_bytes + 1)
            finally:
                response.release()
        except _failures() as err:
            raise KubeUnavailable(f"GET {path}: {_describe(err)}") from None
        if not 200 <= status <= 299:
            raise _api_error(path, status, data)
        if len(data) > max_bytes:
            raise ValueError(f"GET {path}: response larger than {max_bytes} bytes")
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ValueError(f"GET {path}: response is not JSON") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"GET {path}: response is not a JSON object")
        return decoded

    async def stream(
        self,
        path: str,
        query: dict[str, str],
        *,
        connect_timeout: float = REQUEST_TIMEOUT,
        read_timeout: float,
    ) -> WatchStream:
        """Open a streaming GET (a watch). The answer's headers are read here: an error status
        raises ApiError (after reading its bounded Status body); data then comes from
        `WatchStream.chunks`, which raises KubeUnavailable when nothing arrives for
        `read_timeout` seconds (a dead connection that never said so)."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        try:
            response = await self._api.call_api(
                path,
                "GET",
                query_params=list(query.items()),
                header_params=dict(_READ_HEADERS),
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except _failures() as err:
            raise KubeUnavailable(f"watch {path}: {_describe(err)}") from None
        status = int(response.status)
        if not 200 <= status <= 299:
            try:
                data = await _read_bounded(response.content, MAX_RESPONSE_BYTES)
            except _failures():
                data = b""
            finally:
                response.release()
            raise _api_error(path, status, data)
        return WatchStream(path, response)

    # --- writes ---------------------------------------------------------------------------
    # The operator's calls (istiolite/operator/): read-compare-write with resourceVersion
    # preconditions, merge patches and server-side apply. Errors name the object.

    async def _call(
        self,
        method: str,
        ref: ObjectRef,
        *,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        subresource: str = "",
        collection: bool = False,
    ) -> dict[str, Any]:
        """One call on `ref`; the decoded object. KubeApiError (NotFound, Conflict, ...) for an
        error status, KubeUnavailable when the server cannot be reached or is too slow."""
        path = ref.path(subresource=subresource, collection=collection)
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            try:
                data = await _read_bounded(response.content, MAX_RESPONSE_BYTES + 1)
                status = int(response.status)
            finally:
                response.release()
        except _failures() as err:
            raise KubeUnavailable(f"{method} {ref}: {_describe(err)}") from None
        if len(data) > MAX_RESPONSE_BYTES:
            raise KubeApiError(ref, method, status, "", f"response over {MAX_RESPONSE_BYTES} bytes")
        try:
            decoded = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise KubeApiError(ref, method, status, "", "response is not a JSON object")
        if not 200 <= status <= 299:
            raise api_error(ref, method, status, decoded)
        return decoded

    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]:
        """The object; NotFound when there is none."""
        return await self._call("GET", ref, subresource=subresource)

    async def get_or_none(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            return await self.get(ref)
        except NotFound:
            return None

    async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        """POST; AlreadyExists (a Conflict) when the name is taken."""
        return await self._call("POST", ref, body=_with_identity(ref, obj), collection=True)

    async def replace(
        self, ref: ObjectRef, obj: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        """PUT with the object's metadata.resourceVersion as precondition: Conflict when it is
        stale."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not meta.get("resourceVersion"):
            raise ValueError(f"replace {ref}: metadata.resourceVersion is required")
        return await self._call("PUT", ref, body=_with_identity(ref, obj), subresource=subresource)

    async def merge_patch(
        self, ref: ObjectRef, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        """RFC 7386 merge patch (a `metadata.resourceVersion` in it is a precondition)."""
        return await self._call(
            "PATCH",
            ref,
            body=patch,
            content_type="application/merge-patch+json",
            subresource=subresource,
        )

    async def apply(
        self, ref: ObjectRef, obj: dict[str, Any], *, force: bool = False, subresource: str = ""
    ) -> dict[str, Any]:
        """Server-side apply as field manager `istiolite` (creates the object when missing)."""
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        return await self._call(
            "PATCH",
            ref,
            body=_with_identity(ref, obj),
            content_type="application/apply-patch+yaml",
            query=query,
            subresource=subresource,
        )

    async def delete(self, ref: ObjectRef, *, resource_version: str = "") -> bool:
        """DELETE; False when it was already gone. With `resource_version`, Conflict when the
        object changed since."""
        body = None
        if resource_version:
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": resource_version},
            }
        try:
            await self._call("DELETE", ref, body=body)
        except NotFound:
            return False
        return True


class WatchStream:
    """An open watch: raw chunks as the server wrote them (not split at event boundaries)."""

    def __init__(self, path: str, response: Any) -> None:
        self._path = path
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        """Chunks until the server ends the stream; KubeUnavailable on a read timeout or a
        dropped connection."""
        content = self._response.content
        while True:
            try:
                data = await content.readany()
            except _failures() as err:
                raise KubeUnavailable(f"watch {self._path}: {_describe(err)}") from None
            if not data:
                return
            yield data

    def close(self) -> None:
        self._response.close()


_READ_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}


def _failures() -> tuple[type[BaseException], ...]:
    """The exceptions a failed HTTP exchange raises (aiohttp imported only with a cluster)."""
    import aiohttp

    return (aiohttp.ClientError, OSError, TimeoutError)


async def _read_bounded(content: Any, limit: int) -> bytes:
    """The body up to its end or `limit` bytes, whichever comes first (one `read(n)` returns
    only what has arrived so far)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {str(err)[:200]}".rstrip(": ")


def _api_error(path: str, status: int, data: bytes) -> ApiError:
    reason = message = ""
    try:
        body = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        body = {}
    if isinstance(body, dict):
        reason = _string(body.get("reason"))
        message = _string(body.get("message"))[:300]
    return ApiError(path, status, reason, message)


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value[:100] if isinstance(v, str))


def _with_identity(ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with apiVersion, kind, metadata.name and namespace of `ref` (what POST, PUT and
    apply require of a body)."""
    meta = dict(obj.get("metadata") or {})
    meta["name"] = ref.name
    if ref.namespace:
        meta["namespace"] = ref.namespace
    return {**obj, "apiVersion": ref.api_version, "kind": ref.kind, "metadata": meta}
