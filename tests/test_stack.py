"""The embedded stack: data survives restarts; dev secrets are generated once, privately."""

from __future__ import annotations

import asyncio
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from forgeline.embedded.data_dir import development_encryption_key
from forgeline.embedded.postgres import EmbeddedPostgres, free_port
from forgeline.embedded.temporal import EmbeddedTemporal
from forgeline.settings import PLACEHOLDER, Settings
from forgeline.stack import bootstrap_display
from workflows.echo import EchoInput, EchoWorkflow


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fl-stack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_development_key_is_generated_once_and_private(scratch: Path) -> None:
    settings = Settings(data_dir=scratch, encryption_keys=PLACEHOLDER)
    first = development_encryption_key(settings)
    assert first and development_encryption_key(settings) == first
    mode = stat.S_IMODE((scratch / "encryption.key").stat().st_mode)
    assert mode == 0o600
    assert development_encryption_key(Settings(data_dir=scratch, encryption_keys=first)) is None


def test_bootstrap_display_keeps_the_first_runs_password(scratch: Path) -> None:
    (scratch / "bootstrap.json").write_text('{"api_key": "k1", "owner_password": "pw"}')
    shown = bootstrap_display(
        Settings(data_dir=scratch),
        {"api_key": "k1", "owner_password": None, "created": False, "org_slug": "default"},
    )
    assert shown == {"api_key": "k1", "owner_password": "pw", "org_slug": "default"}


async def test_embedded_postgres_keeps_data_across_restarts(scratch: Path) -> None:
    server = EmbeddedPostgres(scratch / "pg", free_port(), server_options={"fsync": "off"})
    await asyncio.to_thread(server.start)
    try:
        conn = await asyncpg.connect(server.migrator_url)
        try:
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()
        await asyncio.to_thread(server.stop)
        assert not await asyncio.to_thread(server.is_running)
        await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(server.app_url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "still here"
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.destroy)


async def test_embedded_temporal_keeps_workflows_across_restarts(scratch: Path) -> None:
    temporal = EmbeddedTemporal(scratch / "temporal", port=free_port(), ui_port=None)
    workflow_id = f"kept-{uuid.uuid4()}"
    temporal.start()
    try:
        await temporal.wait_ready()
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        await client.start_workflow(
            EchoWorkflow.run, EchoInput(message="x"), id=workflow_id, task_queue="nobody"
        )
        temporal.stop()
        temporal.start()
        await temporal.wait_ready()
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        description = await client.get_workflow_handle(workflow_id).describe()
        assert description.id == workflow_id
    finally:
        temporal.stop()
