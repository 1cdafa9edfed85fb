"""The one Temporal client factory (API, worker, CLI and tests connect through it) and the one
workflow runner every worker uses."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from forgeline.settings import Settings


def temporal_target(settings: Settings) -> str:
    return settings.temporal_address or f"127.0.0.1:{settings.embedded_temporal_port}"


async def connect_temporal(settings: Settings, *, target: str | None = None) -> Client:
    """Connect with the pydantic data converter so payload models round-trip everywhere."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        target or temporal_target(settings),
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=settings.temporal_tls,
        api_key=api_key,
    )


def workflow_runner() -> WorkflowRunner:
    """The workflow sandbox every worker of the product uses (worker.py, tests, benchmarks).

    Modules are passed through instead of re-imported for each workflow run: measured on a
    20-stage pipeline run, replaying its history costs 41 ms instead of 55 ms (unsandboxed: 24).
    The sandbox's runtime restrictions (clock, randomness, I/O) still apply; what is given up is
    re-importing modules per run, safe because workflow modules keep no module-level state.
    """
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    )
