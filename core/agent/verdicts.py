"""A verification's verdict stored where users read it: on the pipeline (`verified`, the green
run, the failing stage with its diagnosis and evidence) and on the version that was run."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Pipeline, PipelineRun
from workflows.verification_models import Verification


async def record_verification(
    session: AsyncSession, pipeline_id: uuid.UUID, raw: dict[str, Any]
) -> dict[str, Any]:
    """Write the verdict on the version its last run ran, and on the pipeline while that is
    still its current version (a concurrent generation may have moved it on: its own verdict
    speaks for its version). Idempotent: the same values again. The stored form."""
    verdict = Verification.model_validate(raw)
    stored = verdict.as_output()
    pipeline = await session.get(Pipeline, pipeline_id, with_for_update=True)
    if pipeline is None:
        return stored
    run = await session.get(PipelineRun, verdict.run_id) if verdict.run_id else None
    version = run.pipeline_version if run and run.pipeline_version else pipeline.version
    stored["pipeline_version"] = version
    if version == pipeline.version:
        pipeline.verified = verdict.verified
        pipeline.verified_run_id = verdict.run_id if verdict.verified else None
        pipeline.verification = stored
    await session.execute(
        update(PipelineVersion)
        .where(PipelineVersion.pipeline_id == pipeline_id, PipelineVersion.version == version)
        .values(verification=stored)
    )
    await session.flush()
    return stored
