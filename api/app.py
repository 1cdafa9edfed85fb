"""The FastAPI application factory: lifespan, middleware, error handling, and the /v1 routers.

Domain routers are imported explicitly and listed in DOMAIN_ROUTERS: a missing module is an
ImportError at start. Routers whose paths do not already start with /v1 are mounted under /v1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.accounts import endpoints as accounts_endpoints
from api.accounts import oauth as oauth_endpoints
from api.agent import endpoints as agent_endpoints
from api.audit_logs import endpoints as audit_logs_endpoints
from api.billing import endpoints as billing_endpoints
from api.billing.request_meter import ApiRequestMeter
from api.console.routes import install_console
from api.database import create_api_engine
from api.deployments import endpoints as deployments_endpoints
from api.edge import ApiEdgeMiddleware
from api.errors import ServiceUnavailable, install_error_handlers, install_problem_openapi
from api.health import router as health_router
from api.insights import endpoints as insights_endpoints
from api.integrations import endpoints as integrations_endpoints
from api.integrations import github_app as github_app_endpoints
from api.integrations import pull_requests as pull_requests_endpoints
from api.metrics import endpoint as metrics_endpoint
from api.middleware import install_request_id_log_records
from api.notifications import endpoints as notifications_endpoints
from api.notifications.limits import install_limit_announcements
from api.operations import endpoints as operations_endpoints
from api.pipelines import endpoints as pipelines_endpoints
from api.projects import endpoints as projects_endpoints
from api.route_index import install_route_index
from api.runs import endpoints as runs_endpoints
from api.temporal import TemporalConnection
from core.accounts.key_leases import KeyLeases
from core.accounts.rate_limit import ApiKeyRateLimiter, LastUsedThrottle
from core.accounts.throttle import AuthThrottles
from db.session import create_session_maker
from forgeline.settings import Settings, get_settings
from infra.mail import OutboxMailer

logger = logging.getLogger("forgeline.api")

API_PREFIX = "/v1"

DOMAIN_ROUTERS: tuple[APIRouter, ...] = (
    accounts_endpoints.router,
    oauth_endpoints.router,
    projects_endpoints.router,
    agent_endpoints.router,
    pipelines_endpoints.router,
    runs_endpoints.router,
    deployments_endpoints.router,
    billing_endpoints.router,
    audit_logs_endpoints.router,
    integrations_endpoints.router,
    github_app_endpoints.router,
    pull_requests_endpoints.router,
    notifications_endpoints.router,
    operations_endpoints.router,
    insights_endpoints.router,
)


def include_domain_routers(app: FastAPI, routers: tuple[APIRouter, ...]) -> None:
    for router in routers:
        paths = [getattr(route, "path", "") for route in router.routes]
        already_versioned = bool(paths) and all(p.startswith(API_PREFIX) for p in paths)
        app.include_router(router, prefix="" if already_versioned else API_PREFIX)


def _configure_logging(settings: Settings) -> None:
    install_request_id_log_records()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
    )


def create_app(
    settings: Settings | None = None,
    *,
    session_maker: async_sessionmaker[AsyncSession] | None = None,
    temporal_client: Client | None = None,
) -> FastAPI:
    """Build the app. The engine is created here (no I/O until first use) so the app also works
    under transports that skip the lifespan; the lifespan warms Temporal and disposes the engine.
    Tests may hand in their own session maker and Temporal client."""
    settings = settings or get_settings()
    _configure_logging(settings)
    engine = None
    if session_maker is None:
        engine = create_api_engine(settings)
        session_maker = create_session_maker(engine)
    temporal = TemporalConnection(settings)
    if temporal_client is not None:
        temporal.set_client(temporal_client)
    # api_requests usage: counted in memory by the auth dependency, written by the lifespan.
    meter = ApiRequestMeter(session_maker)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def warm_temporal() -> None:
            # Not fatal: /healthz reports it and TemporalDep retries on demand.
            with contextlib.suppress(ServiceUnavailable):
                await temporal.get()

        warm = asyncio.create_task(warm_temporal())
        flusher = asyncio.create_task(meter.run())
        # Everything built so far (routes, models, SQLAlchemy metadata: a quarter of a million
        # objects) lives as long as the process: frozen, so the collector's full passes, which
        # many requests in flight trigger often, stop walking it while requests wait.
        gc.freeze()
        try:
            yield
        finally:
            warm.cancel()
            # Before the engine goes: the last counted requests are written at clean shutdown.
            await meter.close(flusher)
            await app.state.last_used.drain()
            if engine is not None:
                await engine.dispose()

    app = FastAPI(
        title="Forgeline API",
        version="1.0.0",
        description="Durable orchestration for AI-driven CI/CD. Authenticate with "
        "`Authorization: Bearer <API key or session token>`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_maker = session_maker
    app.state.temporal = temporal
    # API-key rate limits and sign-in throttles in PostgreSQL, shared by every API process.
    app.state.rate_limiter = ApiKeyRateLimiter(session_maker)
    app.state.auth_throttles = AuthThrottles(session_maker)
    app.state.mailer = OutboxMailer(settings.data_dir / "outbox")
    app.state.last_used = LastUsedThrottle(session_maker)
    # Busy API keys' principals and pre-counted rate-limit slots, per process (key_leases.py).
    app.state.key_leases = KeyLeases()
    app.state.api_meter = meter

    install_error_handlers(app)
    install_limit_announcements(app)
    # One layer (api/edge.py): security headers outermost, then the request ID (so even a 413
    # carries one), the body limit, the metrics histogram, and a read retried after a lost
    # database connection, which reruns only the routing and the endpoint.
    app.add_middleware(
        ApiEdgeMiddleware,
        max_bytes=settings.max_request_body_bytes,
        path_limits={"/v1/webhooks/": settings.webhook_max_body_bytes},
        docs_paths={
            p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p
        },
        always_https=settings.public_base_url.startswith("https://"),
    )

    app.include_router(health_router)
    app.include_router(metrics_endpoint.router)
    include_domain_routers(app, DOMAIN_ROUTERS)
    # The web console: HTML pages at / (no /v1 prefix) and its static files at /static.
    install_console(app)
    install_problem_openapi(app)
    # Last: the index is built from the finished route table (and rebuilt if it changes).
    install_route_index(app)
    return app
