"""`GET /metrics`: Prometheus exposition of the API's request metrics and the product gauges.

Protected: with FORGELINE_METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>`;
without it, only loopback clients are answered (a Prometheus beside the API, or a proxy that
adds the token). Neither case is tenant data, but route latencies and queue depths are not public.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.metrics.instrumentation import process_metrics
from core.operations.gauges import CachedGauges, GaugeSnapshot
from forgeline.errors import NotFound, Unauthorized
from forgeline.statuses.deployments import DeploymentStatus

router = APIRouter(tags=["operations"])


class SnapshotCollector(Collector):
    """The product gauges of one PostgreSQL snapshot, as metric families."""

    def __init__(self, snapshot: GaugeSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self):  # type: ignore[no-untyped-def]
        runs = GaugeMetricFamily(
            "forgeline_pipeline_runs", "Unfinished pipeline runs, by status", labels=["status"]
        )
        for status, count in sorted(self.snapshot.runs_by_status.items()):
            runs.add_metric([status], count)
        yield runs
        deployments = GaugeMetricFamily(
            "forgeline_deployments", "Deployments, by status", labels=["status"]
        )
        # Every state, zero included, so a dashboard's series exist before the first deployment.
        for status in DeploymentStatus:
            deployments.add_metric([status], self.snapshot.deployments_by_status.get(status, 0))
        yield deployments
        in_use = GaugeMetricFamily(
            "forgeline_build_slots_in_use", "Build slots held by runs, by plan", labels=["plan"]
        )
        waiting = GaugeMetricFamily(
            "forgeline_build_slots_waiting",
            "Runs waiting for a build slot, by plan",
            labels=["plan"],
        )
        limit = GaugeMetricFamily(
            "forgeline_build_slots_limit", "Build slots allowed, by plan", labels=["plan"]
        )
        for plan, use in sorted(self.snapshot.build_slots_by_plan.items()):
            in_use.add_metric([plan], use.in_use)
            waiting.add_metric([plan], use.waiting)
            limit.add_metric([plan], use.limit)
        yield from (in_use, waiting, limit)


def _authorized(request: Request) -> bool:
    token = request.app.state.settings.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        return hmac.compare_digest(sent.encode(), expected.encode())
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gauges(request: Request) -> CachedGauges:
    cached: CachedGauges | None = getattr(request.app.state, "metric_gauges", None)
    if cached is None:
        cached = CachedGauges(request.app.state.session_maker)
        request.app.state.metric_gauges = cached
    return cached


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if not _authorized(request):
        # A token was configured and not sent: say so; a remote client without one sees nothing.
        if request.app.state.settings.metrics_token is not None:
            raise Unauthorized("metrics need the operator token")
        raise NotFound("not found")
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(await _gauges(request).get()))
    body = process_metrics() + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
