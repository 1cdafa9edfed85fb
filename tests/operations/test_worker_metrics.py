"""The worker serves the Temporal SDK's runtime metrics on FORGELINE_WORKER_METRICS_ADDRESS."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import worker
from activities.deps import Registration
from core.operations.gauges import CachedGauges
from db.models.pipelines import BuildSlots
from db.session import session_scope
from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal
from workflows.echo import EchoInput, EchoWorkflow, echo_activity

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
SAMPLE_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
METRIC_NAME = re.compile(r"\b(?:forgeline|temporal)_[a-z0-9_]+")


async def scrape_when_up(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(300):
            try:
                answer = await client.get(url)
                if answer.status_code == 200:
                    return answer.text
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing served on {url}")


async def worker_scrape(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, task_queue: str
) -> str:
    """Run the worker with its metrics port, drive one workflow through it, scrape the port."""
    port = free_port()
    worker_settings = settings.model_copy(update={"worker_metrics_address": f"127.0.0.1:{port}"})
    registration = Registration(
        task_queue=task_queue, workflows=[EchoWorkflow], activities=[echo_activity]
    )
    monkeypatch.setattr(worker, "load_registrations", lambda deps, queues: [registration])
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(worker_settings, [task_queue], stop=stop))
    try:
        client = await connect_temporal(settings)
        result = await client.execute_workflow(
            EchoWorkflow.run,
            EchoInput(message="hi"),
            id=f"echo-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        assert result.message == "hi"
        body = await scrape_when_up(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=60)
    return body


async def test_the_worker_exports_sdk_metrics_on_its_own_port(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, task_queue: str
) -> None:
    body = await worker_scrape(monkeypatch, settings, task_queue)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    completed = [
        s
        for s in families["temporal_workflow_completed"].samples
        if s.name.endswith("_total") or s.name == "temporal_workflow_completed"
    ]
    assert any(s.labels.get("task_queue") == task_queue and s.value >= 1 for s in completed)
    assert "temporal_worker_task_slots_available" in families


async def test_every_metric_the_dashboard_queries_is_scraped(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    task_queue: str,
    api_client: httpx.AsyncClient,
    app: Any,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    worker_body = await worker_scrape(monkeypatch, settings, task_queue)
    async with session_scope(session_maker) as session:
        # An organization that has used builds: the build-slot series exist from then on.
        session.add(BuildSlots(organization_key=str(uuid.uuid4()), slot_limit=2))
    app.state.metric_gauges = CachedGauges(session_maker, ttl_seconds=0)
    await api_client.get("/healthz")
    api_body = (await api_client.get("/metrics")).text
    # Names as exposed (and stored by Prometheus); the parser would add `_total` to counters.
    scraped = {
        SAMPLE_NAME.match(line).group(0)  # type: ignore[union-attr]
        for body in (worker_body, api_body)
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC_NAME.findall(target["expr"])
    }
    assert queried, "the dashboard queries no metric"
    assert queried <= scraped, sorted(queried - scraped)
    documented = OPERATIONS_DOC.read_text()
    for name in queried:
        family = re.sub(r"_(bucket|count|sum|total)$", "", name)
        assert f"`{family}`" in documented, f"{family} is not listed in docs/operations.md"
