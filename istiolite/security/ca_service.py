"""`istio.v1.auth.IstioCertificateService/CreateCertificate` (the Istio CA API) on the secure
port, as istiod serves it (security/pkg/server/ca/server.go): authenticate the caller, sign the
CSR's key for the caller's identity (never the CSR's SAN), answer the chain leaf first, root last.
"""

from __future__ import annotations

from datetime import timedelta

import grpc

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.security.authn import AuthenticationFailed, Authenticator
from istiolite.security.ca import MeshCA

try:
    from istiolite._generated.istio.v1.auth import ca_pb2
except ImportError as err:  # a checkout whose protos were never compiled
    raise ImportError(
        "istiolite._generated is missing: run `make venv` (or `make protos`), which compiles "
        "protos/ with grpcio-tools"
    ) from err

log = get_logger("ca-service")

SERVICE_NAME = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"].full_name
METHOD = "CreateCertificate"
IstioCertificateRequest = ca_pb2.IstioCertificateRequest
IstioCertificateResponse = ca_pb2.IstioCertificateResponse


class IstioCertificateService:
    def __init__(self, ca: MeshCA, authenticator: Authenticator) -> None:
        self.ca = ca
        self.authenticator = authenticator

    def register(self, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            self.CreateCertificate,
            request_deserializer=IstioCertificateRequest.FromString,
            response_serializer=IstioCertificateResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD: handler}),)
        )

    async def CreateCertificate(
        self,
        request: ca_pb2.IstioCertificateRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> ca_pb2.IstioCertificateResponse:
        metrics.CSR_COUNT.inc()
        try:
            identity = await self.authenticator.authenticate(context)
        except AuthenticationFailed as err:
            metrics.CA_AUTHN_FAILURES.inc()
            log.info("CSR refused: caller not authenticated", peer=context.peer(), reason=str(err))
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"request authenticate failure: {err}"
            )
        seconds = request.validity_duration
        if seconds < 0:
            metrics.CSR_SIGN_ERRORS.inc("invalid_ttl")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"validity_duration {seconds} is negative",
            )
        # Capped before it becomes a timedelta (an int64 of seconds can overflow one).
        ttl = timedelta(seconds=min(seconds, int(self.ca.max_ttl.total_seconds())))
        try:
            chain = await self.ca.sign_csr(request.csr.encode(errors="replace"), identity, ttl)
        except ValueError as err:
            metrics.CSR_SIGN_ERRORS.inc("csr")
            log.info("CSR refused", identity=str(identity), reason=str(err))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"CSR refused: {err}")
        except Exception:
            metrics.CSR_SIGN_ERRORS.inc("ca")
            log.exception("CSR signing failed", identity=str(identity))
            await context.abort(grpc.StatusCode.INTERNAL, "failed to sign the CSR")
        metrics.CERTS_ISSUED.inc()
        log.debug("certificate issued", identity=str(identity), ttl_seconds=ttl.total_seconds())
        return IstioCertificateResponse(cert_chain=[pem.decode() for pem in chain])
