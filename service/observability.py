"""GET /readyz (is every dependency reachable?) and GET /metrics (Prometheus)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from engine.core.kind import QUEUES
from service import migrations
from service.errors import problem
from service.jobs import repository as jobs_repo
from service.jobs.tables import STATUSES

log = logging.getLogger("onnxsmith.api")
router = APIRouter(tags=["health"])


def _check_database(app: Any) -> str | None:
    current, head = migrations.current_revision(app.state.engine), migrations.head_revision()
    return None if current == head else f"database is at migration {current}, the code needs {head}"


def _check_broker(app: Any) -> str | None:
    app.state.enqueuer.ping()
    return None


def _check_store(app: Any) -> str | None:
    app.state.store.ping()
    return None


def is_operator(request: Request) -> bool:
    """From an operator network, or with the operator key: may see /metrics and what /readyz found wrong."""
    settings = request.app.state.settings
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
        if any(address in ipaddress.ip_network(n, strict=False) for n in settings.operator_networks):
            return True
    except ValueError:  # not an IP (a test client, a unix socket)
        pass
    key: str = settings.operator_key.get_secret_value() if settings.operator_key else ""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return bool(key) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), key.encode())


@router.get(
    "/readyz",
    summary="Readiness: database at migration head, broker and store reachable",
    responses={503: {"description": "Something the service needs is down (named in the body)"}},
)
def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("broker", _check_broker), ("store", _check_store)):
        try:
            failure = check(request.app)
        except Exception as exc:  # any failure to reach it counts as down
            failure = f"{type(exc).__name__}: {str(exc)[:200]}"
        checks[name] = "ok" if failure is None else failure
    down = [name for name, state in checks.items() if state != "ok"]
    if not is_operator(request):  # internal addresses and errors are for operators only
        checks = {name: "ok" if state == "ok" else "unavailable" for name, state in checks.items()}
    if down:
        return problem(
            503,
            "not-ready",
            "Not ready",
            f"not ready: {', '.join(down)} unavailable",
            instance="/readyz",
            extra={"checks": checks},
        )
    return JSONResponse({"status": "ready", "checks": checks})


class _StateCollector:
    """Jobs by kind and status (from the database) and queue depth (from the broker), read at scrape time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self):  # noqa: ANN201 - prometheus_client protocol
        jobs = GaugeMetricFamily("onnxsmith_jobs", "Jobs by kind and status", labels=["kind", "status"])
        try:
            with self.app.state.session_factory() as db:
                counts = {(k, s): n for k, s, n in jobs_repo.count_by_kind_and_status(db)}
            kinds = sorted({k for k, _ in counts})
            for kind in kinds:
                for status in STATUSES:
                    jobs.add_metric([kind, status], counts.get((kind, status), 0))
            yield jobs
        except Exception:
            log.warning("metrics: could not count jobs", exc_info=True)
        depth = GaugeMetricFamily("onnxsmith_queue_depth", "Messages waiting in a broker queue", labels=["queue"])
        try:
            for queue in QUEUES:
                depth.add_metric([queue], self.app.state.enqueuer.queue_depth(queue))
            yield depth
        except Exception:
            log.warning("metrics: could not read queue depth", exc_info=True)


class Metrics:
    """Per application: request counts and latency by route template and status."""

    def __init__(self, app: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "onnxsmith_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "onnxsmith_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.registry.register(_StateCollector(app))


class MetricsMiddleware:
    """Pure ASGI middleware (does not buffer streaming bodies). Routes are templates, e.g. /v1/jobs/{job_id}."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def _send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    if not is_operator(request):  # every tenant's job counts: for operators only
        return problem(
            403,
            "forbidden",
            "Forbidden",
            "metrics are for operators: scrape from ONNXSMITH_OPERATOR_NETWORKS or send ONNXSMITH_OPERATOR_KEY "
            "as a bearer key",
            instance="/metrics",
        )
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
