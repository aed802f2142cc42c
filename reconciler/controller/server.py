"""The controller's HTTP endpoints: the status page, health, readiness, metrics, status and the git webhook."""

from __future__ import annotations

import time
from collections.abc import Callable

from reconciler.common.httpserve import HTTPService, Request, Response, Routes
from reconciler.common.metrics import CONTENT_TYPE
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.controller.webhook import DeliveryGate, webhook_handler
from reconciler.pages.status_page import StatusPage
from reconciler.pages.style import PAGE_HEADERS


def controller_routes(status: StatusBoard, metrics: ControllerMetrics, *, webhook_secret: bytes | None,
                      on_push: Callable[[Request], None], ready: Callable[[], bool],
                      gate: DeliveryGate | None = None) -> Routes:
    """Routes for :class:`HTTPService`. ``ready`` is true once the first sync has happened;
    ``gate`` decides which webhook deliveries act (each once, rate-limited).

    A replica that is not the leader is ready too: it serves /status and stands by, and a
    Deployment rollout must not wait for it to win an election.
    """

    def healthz(_: Request) -> Response:
        return Response.text(200, "ok\n")

    def readyz(_: Request) -> Response:
        return Response.text(200, "ready\n") if ready() else Response.text(503, "starting\n")

    def metrics_page(_: Request) -> Response:
        return Response(200, metrics.registry.render().encode(), CONTENT_TYPE)

    def status_page(_: Request) -> Response:
        return Response.json(200, status.snapshot())

    page_renderer = StatusPage()

    def front_page(_: Request) -> Response:
        page = page_renderer.render(status.snapshot(), status.outcome(), now=time.time())
        return Response(200, page.encode(), "text/html; charset=utf-8", PAGE_HEADERS)

    return {
        ("GET", "/"): front_page,
        ("GET", "/healthz"): healthz,
        ("GET", "/readyz"): readyz,
        ("GET", "/metrics"): metrics_page,
        ("GET", "/status"): status_page,
        ("POST", "/hooks/git"): webhook_handler(webhook_secret, on_push, metrics, gate),
    }


def serve(listen: str, routes: Routes) -> HTTPService:
    return HTTPService(listen, routes).start()
