"""The FastAPI application: create_app(settings) builds everything it needs from Settings."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from service import docs, migrations, observability, openapi
from service.artifacts.router import router as artifacts_router
from service.datasets.router import router as datasets_router
from service.db import make_engine, make_session_factory
from service.errors import install_handlers
from service.health import router as health_router
from service.jobs import links
from service.jobs.queue import Enqueuer
from service.jobs.router import kinds_router
from service.jobs.router import router as jobs_router
from service.model_files.router import router as models_router
from service.settings import Settings, get_settings
from service.storage import open_store
from service.tenants import service as tenants
from service.upload_sessions.router import router as uploads_router

log = logging.getLogger("onnxsmith.api")

DESCRIPTION = """
onnxsmith takes a trained ONNX model and datasets, tells you whether the model over- or under-fits and
what to do about it, and makes it smaller and faster while measuring what that costs.

Authenticate with **Authorize** and an API key (`onnxsmith keys create --tenant NAME`).
Errors are `application/problem+json` (RFC 9457).
"""


# API connections are checked before use only after this long idle (not on every request: that was one database
# round trip in three on GET /v1/jobs/{id}; bench/api_load.py)
IDLE_PING_S = 5.0


class DatabaseNotAtHead(RuntimeError):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            ping_after_idle_s=IDLE_PING_S,
        )
        # at most as many handler threads as pooled connections: a thread never waits for a connection
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        current, head = migrations.current_revision(engine), migrations.head_revision()
        if current != head:
            engine.dispose()
            raise DatabaseNotAtHead(
                f"the database is at migration {current or 'none'}, the code needs {head}: "
                "run `onnxsmith db upgrade` first"
            )
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.store = open_store(settings)
        app.state.enqueuer = Enqueuer.for_settings(settings)
        app.state.link_key = links.secret_key(settings)
        app.state.key_cache = tenants.KeyCache(settings.api_key_cache_s)
        # What is alive after startup (imports, routes, schemas) lives as long as the process: out of the garbage
        # collector's full passes, which otherwise walk it all (~30 ms here) in the middle of requests.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="onnxsmith",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},  # no call to validator.swagger.io
        docs_url=None,  # served by service.docs, with the assets from this service instead of a CDN
        redoc_url=None,
    )
    docs.install(app)
    openapi.install(app)
    install_handlers(app)
    app.state.metrics = observability.Metrics(app)
    app.add_middleware(observability.MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(health_router)
    app.include_router(observability.router)
    app.include_router(models_router)
    app.include_router(uploads_router)
    app.include_router(datasets_router)
    app.include_router(jobs_router)
    app.include_router(kinds_router)
    app.include_router(artifacts_router)
    return app
