"""HTTP request metrics and their exposition, correct with one or several uvicorn workers.

With several workers (`forgeline.api_server` sets PROMETHEUS_MULTIPROC_DIR before they start),
prometheus-client writes each process's samples to files in that directory and a scrape, served by
whichever worker, sums them. Only counters and histograms are kept per process; the product gauges
are read from PostgreSQL by the scraping process, so no multiprocess gauge mode is needed and a
restarted worker's samples stay counted, as a counter's must.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"

REQUEST_SECONDS = Histogram(
    "forgeline_http_request_duration_seconds",
    "API request latency, by method, route template (never the raw path) and status code",
    ("method", "route", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# Methods outside this set are counted as `other`, so a client cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's full template (`/v1/runs/{run_id}`): bounded label cardinality.

    FastAPI records the route of an included router with its prefix in its scope entry (the
    route object itself holds the path without the prefix); other routes are in `scope["route"]`.
    """
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    for holder in (effective, scope.get("route")):
        path = getattr(holder, "path_format", None) or getattr(holder, "path", None)
        if isinstance(path, str) and path:
            return path
    return UNMATCHED_ROUTE


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Count one request's duration under its method, route template and status."""
    method = str(scope.get("method", "GET")).upper()
    REQUEST_SECONDS.labels(
        method if method in _METHODS else "other", route_template(scope), str(status)
    ).observe(seconds)


def process_metrics() -> bytes:
    """This process's samples, or every worker's when running in multiprocess mode."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
