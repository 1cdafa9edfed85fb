"""A run's artifacts end to end, on a local and an S3 object store: the declared files stored under
the run's prefix, paths that leave the workspace ignored."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models.pipelines import Artifact
from infra.storage import LocalObjectStore, ObjectStore
from tests.runs.helpers import (
    run_pipeline,
    stage,
)


@pytest.fixture(params=["local-store", "s3-store"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local-store":
        return LocalObjectStore(tmp_path / "objects")
    from tests.runs.test_storage import make_s3_store

    endpoint = request.getfixturevalue("moto_endpoint")
    return make_s3_store(endpoint, f"artifacts-{uuid.uuid4().hex[:12]}")


async def test_artifact_round_trip(ctx, artifact_store: ObjectStore) -> None:
    run, result = await run_pipeline(
        ctx,
        [
            stage(
                "build",
                ["mkdir -p dist/sub", "echo app > dist/app.js", "echo x > dist/sub/y.txt"],
                artifact_paths=["dist/**", "../../etc/passwd", "/etc/passwd", "missing/*"],
            )
        ],
        store=artifact_store,
    )
    assert result.status == "success"
    async with ctx["session_maker"]() as session:
        arts = (await session.scalars(select(Artifact).where(Artifact.run_id == run.id))).all()
    names = sorted(a.name for a in arts)
    assert names == ["dist/app.js", "dist/sub/y.txt"]
    for art in arts:
        assert art.object_key.startswith(f"runs/{run.id}/artifacts/build/1/")
        data = await asyncio.to_thread(artifact_store.get_bytes, art.object_key)
        assert data == (b"app\n" if art.name == "dist/app.js" else b"x\n")
        assert art.size_bytes == len(data)
