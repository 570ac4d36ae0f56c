"""A small Kubernetes API server for tests: HTTPS with its own CA, bearer-token client
authentication, real API paths and objects, strict about what it accepts as a real one is.

Serves TokenReview (`POST /apis/authentication.k8s.io/v1/tokenreviews`) from a registry of
service-account tokens; more resources are added with `add_route` (the Kubernetes source's
list/watch will be). Runs its own event loop in a thread, so sync tests, async tests and
istiolite subprocesses can all use it. `write_kubeconfig` writes what `kubectl` and
`kubernetes_asyncio` load.
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


def _status(code: int, reason: str, message: str) -> web.Response:
    """A metav1.Status failure, as the API server answers errors."""
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


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
                RecordedRequest(request.method, request.path, dict(request.headers), body)
            )
        if request.headers.get("Authorization") != f"Bearer {self.client_token}":
            return _status(401, "Unauthorized", "Unauthorized")
        route = self._routes.get((request.method, request.path))
        if route is None:
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
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self._cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(self._key_pem)
            ctx.load_cert_chain(cert, key)
        app = web.Application(middlewares=[self._dispatch])
        app.router.add_route("*", "/{tail:.*}", self._unreachable)  # _dispatch answers all
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
