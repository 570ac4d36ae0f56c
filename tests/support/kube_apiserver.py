"""A small Kubernetes API server for tests: HTTPS with its own CA, bearer-token client
authentication, real API paths and objects, strict about what it accepts as a real one is.

Serves the resource API as kube-apiserver does (state in `kube_resources.py`): discovery, LIST
with label/field selectors, `limit`/`continue` and resourceVersion, WATCH as chunked JSON lines
whose chunk boundaries are not line boundaries (ADDED/MODIFIED/DELETED/BOOKMARK, 410 as an ERROR
event, `sendInitialEvents` only when `streaming_lists`), create / replace (resourceVersion
required, stale → 409) / merge, JSON, strategic and apply patches / delete, `/status`
subresources, CRDs that can be installed and removed while clients watch, gzip for large
responses, MicroTime checks on Leases, and TokenReview from a registry of service-account tokens.
Tests drive it from their side with `put`, `delete`, `compact`, `end_watches` and
`go_down`/`come_up` (an outage on the same port). Runs its own event loop in a thread, so sync
tests, async tests and istiolite subprocesses can all use it. `write_kubeconfig` writes what
`kubectl` and `kubernetes_asyncio` load.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.kube_resource_api import ResourceApi
from tests.support.kube_resource_api import status_response as _status
from tests.support.kube_resources import (
    BUILTIN_TYPES,
    INITIAL_NAMESPACES,
    ISTIO_CRDS,
    ApiError,
    ResourceState,
    crd_object,
    crd_types,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
# What a real API server judges a review without spec.audiences against.
API_SERVER_AUDIENCES = ("https://kubernetes.default.svc.cluster.local",)


@dataclass(frozen=True)
class ServiceAccountToken:
    namespace: str
    service_account: str
    audiences: tuple[str, ...] = ("istio-ca",)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    query: dict[str, str] = field(default_factory=dict)


def _serving_pair(host: str) -> tuple[bytes, bytes, bytes]:
    """(CA PEM, server chain PEM, server key PEM) for `host` (an IP address)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test kube-apiserver CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


@dataclass
class KubeApiServer:
    """Use as a context manager (or `start` / `stop`)."""

    host: str = "127.0.0.1"
    tokens: dict[str, ServiceAccountToken] = field(default_factory=dict)
    # Tokens for which the server answers authenticated with these audiences whatever was asked
    # (an API server that ignores spec.audiences: the client must check status.audiences).
    lying_audiences: dict[str, tuple[str, ...]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    port: int = 0
    # A real server ends each watch after a while (minRequestTimeout, jittered); so does this one.
    watch_timeout: float = 45.0
    bookmark_interval: float = 1.0
    # Whether WATCH accepts sendInitialEvents (the WatchList feature); otherwise 422.
    streaming_lists: bool = False
    istio_crds: bool = True

    def __post_init__(self) -> None:
        self.client_token = secrets.token_urlsafe(24)  # the kubeconfig's credential
        self.ca_pem, self._cert_pem, self._key_pem = _serving_pair(self.host)
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", TOKEN_REVIEW_PATH): self._token_review,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()
        self._state = ResourceState()
        self._api = ResourceApi(
            self._state,
            self._lock,
            watch_timeout=self.watch_timeout,
            bookmark_interval=self.bookmark_interval,
            streaming_lists=self.streaming_lists,
        )
        for rtype in BUILTIN_TYPES:
            self._state.register(rtype)
        for namespace in INITIAL_NAMESPACES:
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        if self.istio_crds:
            for group, kind, plural, versions in ISTIO_CRDS:
                self.install_crd(group, kind, plural, versions)

    # --- registry ------------------------------------------------------------------------

    def add_token(
        self, namespace: str, service_account: str, *, audiences: tuple[str, ...] = ("istio-ca",)
    ) -> str:
        """A new service-account token valid for `audiences`."""
        token = "sa." + secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = ServiceAccountToken(namespace, service_account, audiences)
        return token

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve another API path (exact match), authenticated like the rest."""
        self._routes[(method.upper(), path)] = handler

    # --- objects, from the test's side ----------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace `obj` (status included) as if another client wrote it; watchers see
        ADDED or MODIFIED. Returns the stored object."""
        meta = obj.get("metadata") or {}
        with self._lock:
            rtype = self._state.type_of(obj["apiVersion"], obj["kind"])
            namespace = (meta.get("namespace") or "default") if rtype.namespaced else ""
            body = json.loads(json.dumps(obj))
            body["metadata"].pop("resourceVersion", None)
            self._state.validate_object(rtype, body, namespace)
            try:
                self._state.get(rtype, namespace, meta["name"])
            except ApiError:
                stored = self._state.create(rtype, namespace, body, with_status=True)
                if rtype.kind == "CustomResourceDefinition":
                    for t in crd_types(body):
                        self._state.register(t)
                return stored
            return self._state.replace(rtype, namespace, body, subresource="all", require_rv=False)

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete as a client would (owned objects are garbage-collected unless Orphan)."""
        with self._lock:
            rtype = self._state.type_of(api_version, kind)
            try:
                gone = self._state.delete(
                    rtype, namespace if rtype.namespaced else "", name, propagation=propagation
                )
            except ApiError:
                return False
            if kind == "CustomResourceDefinition":
                spec = gone.get("spec") or {}
                self._state.drop(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            return True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            try:
                rtype = self._state.type_of(api_version, kind)
                return self._state.get(rtype, namespace if rtype.namespaced else "", name)
            except ApiError:
                return None

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            rtype = self._state.type_of(api_version, kind)
            return [
                self._state.present(rtype, o)
                for o in self._state.select(rtype, namespace, lambda _: True, lambda _: True)
            ]

    def install_crd(
        self,
        group: str,
        kind: str,
        plural: str,
        versions: tuple[str, ...] = ("v1",),
        *,
        namespaced: bool = True,
    ) -> None:
        """Install a CustomResourceDefinition: its object appears and discovery serves it."""
        self.put(crd_object(group, kind, plural, versions, namespaced))

    def uninstall_crd(self, group: str, plural: str) -> None:
        self.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", f"{plural}.{group}")

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._state.rv)

    def compact(self) -> None:
        """Forget the event history: a watch or a list continuation from before now gets 410."""
        with self._lock:
            self._state.compact()

    def end_watches(self) -> None:
        """Close every open watch now, as the server's own watch timeout does."""
        self._api.end_watches()

    def go_down(self) -> None:
        """An outage: stop listening and drop every connection (state is kept)."""
        assert self._loop is not None
        self._api.end_watches()
        asyncio.run_coroutine_threadsafe(self._cleanup(), self._loop).result(15)

    def come_up(self) -> None:
        """Listen again on the same port, with the state as it was."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(15)

    def reviews(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == TOKEN_REVIEW_PATH]

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def write_kubeconfig(self, path: Path, *, token: str | None = None) -> Path:
        """A kubeconfig naming this server, its CA (inline) and the client token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "istiolite", "user": {"token": token or self.client_token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "istiolite"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body: Any = None
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    dict(request.headers),
                    body,
                    dict(request.query),
                )
            )
        if request.headers.get("Authorization") != f"Bearer {self.client_token}":
            return _status(401, "Unauthorized", "Unauthorized")
        route = self._routes.get((request.method, request.path))
        if route is None:
            answer = await self._api.handle(request)
            if answer is not None:
                return answer
            if any(path == request.path for _, path in self._routes):
                return _status(405, "MethodNotAllowed", f"{request.method} is not supported")
            return _status(404, "NotFound", "the server could not find the requested resource")
        return await route(request)

    async def _token_review(self, request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            return _status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json",
            )
        try:
            review = json.loads(await request.read())
        except ValueError:
            return _status(400, "BadRequest", "the body of the request is not JSON")
        if not isinstance(review, dict):
            return _status(400, "BadRequest", "the body of the request is not an object")
        # As the real decoder: missing apiVersion/kind default to the URL's, others are refused.
        version, kind = review.get("apiVersion"), review.get("kind")
        if version not in (None, "", "authentication.k8s.io/v1") or kind not in (
            None,
            "",
            "TokenReview",
        ):
            return _status(
                400,
                "BadRequest",
                f"the API version in the data ({version}) does not match the expected API "
                f"version (authentication.k8s.io/v1), or kind {kind} is not TokenReview",
            )
        spec = review.get("spec") or {}
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            return _status(422, "Invalid", "TokenReview.authentication.k8s.io \"\" is invalid: "
                           "spec.token: Required value")  # fmt: skip
        wanted = tuple(spec.get("audiences") or API_SERVER_AUDIENCES)
        with self._lock:
            entry = self.tokens.get(token)
            lie = self.lying_audiences.get(token)
        status: dict[str, Any]
        if entry is None:
            status = {"user": {}, "error": "[invalid bearer token, square/go-jose: error in "
                      "cryptographic primitive]"}  # fmt: skip
        elif lie is not None:
            status = self._authenticated(entry, lie)
        elif not set(wanted) & set(entry.audiences):
            status = {
                "user": {},
                "error": f"[invalid bearer token, token audiences {list(entry.audiences)} is "
                f"invalid for the target audiences {list(wanted)}]",
            }
        else:
            status = self._authenticated(entry, tuple(a for a in wanted if a in entry.audiences))
        return web.json_response(
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            status=201,
        )

    @staticmethod
    async def _unreachable(_request: web.Request) -> web.StreamResponse:
        raise AssertionError("every request is answered by _dispatch")

    @staticmethod
    def _authenticated(entry: ServiceAccountToken, audiences: tuple[str, ...]) -> dict[str, Any]:
        return {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{entry.namespace}:{entry.service_account}",
                "uid": secrets.token_hex(8),
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{entry.namespace}",
                    "system:authenticated",
                ],
            },
            "audiences": list(audiences),
        }

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as err:
                errors.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="kube-apiserver", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    async def _start(self) -> None:
        self._api.loop = asyncio.get_running_loop()
        await self._serve()

    async def _serve(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self._cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(self._key_pem)
            ctx.load_cert_chain(cert, key)
        app = web.Application(middlewares=[self._dispatch])
        app.router.add_route("*", "/{tail:.*}", self._unreachable)  # _dispatch answers all
        # A short shutdown: go_down must drop open watches at once, as a dead server does.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
