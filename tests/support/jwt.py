"""JWTs for tests, built by hand (RFC 7515/7519 compact form) and signed with `cryptography`
(RS256, ES256), their JWK Sets, and a small JWKS server a test owns."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_kids = itertools.count(1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int, size: int | None = None) -> str:
    size = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(size, "big"))


class SigningKey:
    """A private key that signs tokens, and its public JWK."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.kid = f"key-{next(_kids)}"
        self._key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if algorithm == "RS256":
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            self._key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(algorithm)

    def jwk(self) -> dict[str, str]:
        if isinstance(self._key, rsa.RSAPrivateKey):
            numbers = self._key.public_key().public_numbers()
            return {
                "kty": "RSA",
                "kid": self.kid,
                "alg": "RS256",
                "n": _uint(numbers.n),
                "e": _uint(numbers.e),
            }
        point = self._key.public_key().public_numbers()
        return {
            "kty": "EC",
            "kid": self.kid,
            "alg": "ES256",
            "crv": "P-256",
            "x": _uint(point.x, 32),
            "y": _uint(point.y, 32),
        }

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        header = {"alg": self.algorithm, "typ": "JWT", "kid": kid or self.kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        ).encode()
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS: raw r || s
        return signing_input.decode() + "." + b64url(signature)


def jwks(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})


def claims(issuer: str, subject: str = "alice", *, lifetime: float = 600, **extra: Any) -> dict:
    now = int(time.time())
    return {"iss": issuer, "sub": subject, "iat": now, "exp": now + int(lifetime), **extra}


class JwksServer:
    """Serves `body` at every path on host:port (plain HTTP); counts the requests."""

    def __init__(self, host: str, port: int, body: str) -> None:
        self.body = body
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests += 1
                data = server.body.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}/jwks"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
