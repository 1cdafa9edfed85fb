"""HTTP health probing of a released deployment: status, latency, custom path, N passes in a row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from workflows.deployment_models import HealthCheckPolicy, HealthVerdict


@dataclass(frozen=True)
class Probe:
    url: str
    passed: bool
    http_status: int | None
    latency_ms: int | None
    error: str | None
    checked_at: datetime


def check_url(base_url: str, path: str) -> str:
    """Join the release URL and the environment's health path (`/healthz`, `status`, ...)."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


async def probe_http(
    client: httpx.AsyncClient,
    url: str,
    policy: HealthCheckPolicy,
    *,
    via: str | None = None,
) -> Probe:
    """GET `url`; with `via` (a proxy's base URL) the request goes to the proxy and names the
    host of `url` in its Host header, so it takes the route the app's visitors take."""
    started = time.perf_counter()
    checked_at = datetime.now(UTC)
    target, headers = url, {}
    if via is not None:
        parsed = httpx.URL(url)
        target = str(httpx.URL(via).copy_with(raw_path=parsed.raw_path))
        headers["Host"] = parsed.netloc.decode("ascii")
    try:
        response = await client.get(target, headers=headers, timeout=policy.request_timeout_seconds)
    except httpx.HTTPError as exc:
        return Probe(url, False, None, None, f"{type(exc).__name__}: {exc}"[:500], checked_at)
    latency_ms = int((time.perf_counter() - started) * 1000)
    passed = response.status_code <= policy.expected_status_max
    error = None if passed else f"HTTP {response.status_code}"
    if passed and latency_ms > policy.max_latency_ms:
        passed, error = False, f"latency {latency_ms} ms over {policy.max_latency_ms} ms"
    return Probe(url, passed, response.status_code, latency_ms, error, checked_at)


ProbeFn = Callable[[], Awaitable[Probe]]
RecordFn = Callable[[Probe], Awaitable[None]]
AliveFn = Callable[[], Awaitable[str | None]]


async def verify(
    probe: ProbeFn,
    record: RecordFn,
    policy: HealthCheckPolicy,
    *,
    heartbeat: Callable[[str], None] = lambda _detail: None,
    dead_reason: AliveFn | None = None,
) -> HealthVerdict:
    """Probe until `required_passes` consecutive passes (healthy) or until `failure_threshold`
    consecutive failures, a dead target, or the window closes (unhealthy)."""
    deadline = time.monotonic() + policy.window_seconds
    checks = passes = failures = consecutive_failures = 0
    last: Probe | None = None
    reason: str | None = None
    while True:
        last = await probe()
        checks += 1
        await record(last)
        if last.passed:
            passes += 1
            consecutive_failures = 0
        else:
            passes = 0
            failures += 1
            consecutive_failures += 1
        heartbeat(f"check {checks}: passes={passes} failures={failures}")
        if passes >= policy.required_passes:
            break
        if consecutive_failures >= policy.failure_threshold:
            reason = f"{consecutive_failures} consecutive failed checks ({last.error})"
            break
        if dead_reason is not None and not last.passed:
            dead = await dead_reason()
            if dead:
                reason = dead
                break
        if time.monotonic() + policy.interval_seconds > deadline:
            reason = (
                f"no {policy.required_passes} consecutive passes within {policy.window_seconds}s"
            )
            break
        await asyncio.sleep(policy.interval_seconds)
    return HealthVerdict(
        healthy=reason is None,
        checks=checks,
        consecutive_passes=passes,
        failures=failures,
        last_status=last.http_status,
        last_latency_ms=last.latency_ms,
        reason=reason,
        checked_at=last.checked_at,
    )
