"""The one Temporal client factory: API, worker, CLI and tests all connect through it."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

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
