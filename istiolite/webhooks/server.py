"""The webhook port (15017, HTTPS only): POST /validate and POST /inject, AdmissionReview v1.

A thin adapter: the body goes to the pure handlers (validate.py, inject.py), their review comes
back as JSON. A body that is not an AdmissionReview is a 400 naming what is wrong; a handler
that fails is a 500 the API server treats by the configuration's failurePolicy. Both are logged
and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from istiolite import metrics
from istiolite.http_server import HttpServer, Limits, Request, Response
from istiolite.logs import get_logger
from istiolite.security.ca import MeshCA
from istiolite.webhooks.admission import MAX_REVIEW_BYTES, AdmissionRequest, BadReview, parse_review
from istiolite.webhooks.inject import NamespaceLabels, inject_review
from istiolite.webhooks.serving_tls import ServingContext
from istiolite.webhooks.sidecar_template import InjectionConfig
from istiolite.webhooks.validate import validate_review

log = get_logger("webhooks")

_JSON = "application/json"


def _plural(kind: str) -> str:
    return kind.lower() + ("es" if kind.endswith("s") else "s")


def _validation_metrics(request: AdmissionRequest, review: dict[str, Any]) -> None:
    labels = (request.group, request.version, _plural(request.kind))
    if review["response"]["allowed"]:
        metrics.VALIDATION_PASSED.inc(*labels)
    else:
        metrics.VALIDATION_FAILED.inc(*labels, "invalid")
        log.info(
            "config refused",
            object=request.describe(),
            reason=review["response"]["status"]["message"][:300],
        )


def _injection_metrics(request: AdmissionRequest, review: dict[str, Any]) -> None:
    metrics.INJECTION_REQUESTS.inc()
    if "patch" in review["response"]:
        metrics.INJECTION_SUCCESS.inc()
        log.info("sidecar injected", pod=request.describe())
    else:
        metrics.INJECTION_SKIPPED.inc()


class WebhookServer:
    def __init__(
        self,
        ca: MeshCA,
        *,
        dns_names: list[str],
        injection: InjectionConfig,
        namespace_labels: NamespaceLabels,
    ) -> None:
        self.tls = ServingContext(ca, dns_names)
        self.injection = injection
        self.namespace_labels = namespace_labels
        self._http = HttpServer(
            {},
            {"/validate": self._validate, "/inject": self._inject},
            # The request body is bounded by the AdmissionReview limit (a 413 above it).
            limits=Limits(max_body_bytes=MAX_REVIEW_BYTES),
            ssl_context=self.tls.context,
            name="webhooks",
        )
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        await self._http.start(host, port)
        self.tls.start()
        self.port = self._http.port
        return self.port

    async def stop(self) -> None:
        await self.tls.stop()
        await self._http.stop()

    def _validate(self, request: Request) -> Response:
        return self._serve("validate", request, validate_review, _validation_metrics)

    def _inject(self, request: Request) -> Response:
        def handle(admission: AdmissionRequest) -> dict[str, Any]:
            return inject_review(admission, self.injection, self.namespace_labels)

        return self._serve("inject", request, handle, _injection_metrics)

    def _serve(
        self,
        webhook: str,
        request: Request,
        handle: Callable[[AdmissionRequest], dict[str, Any]],
        count: Callable[[AdmissionRequest, dict[str, Any]], None],
    ) -> Response:
        try:
            admission = parse_review(request.body)
        except BadReview as err:
            metrics.WEBHOOK_HTTP_ERRORS.inc(webhook, "400")
            log.warning("bad admission review", webhook=webhook, peer=request.peer, error=str(err))
            return Response(400, f"{webhook}: {err}\n")
        try:
            review = handle(admission)
        except Exception:
            metrics.WEBHOOK_HTTP_ERRORS.inc(webhook, "500")
            if webhook == "inject":
                metrics.INJECTION_FAILURES.inc()
            log.exception("webhook failed", webhook=webhook, object=admission.describe())
            return Response(500, f"{webhook}: internal error for {admission.describe()}\n")
        count(admission, review)
        return Response(200, orjson.dumps(review), _JSON)
