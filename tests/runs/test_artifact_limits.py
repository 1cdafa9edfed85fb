"""A pipeline's limits: artifacts past the file or byte limit are reported on the stage and in its
log, or fail it, in real runs; hostile limits fall back to the defaults and the limits change
the stage's spec hash."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.runs.plan import stage_spec
from db.models.pipelines import Artifact
from tests.runs.helpers import (
    executions,
    log_text,
    stage,
)

# ------------------------------------------------------------------------------- artifacts


ARTIFACTS = "mkdir -p out && for i in $(seq 1 30); do printf %04d $i > out/f$i.txt; done"


async def artifact_rows(session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Artifact).where(Artifact.run_id == run_id)
        )
    return int(count or 0)


async def test_artifacts_past_the_file_limit_are_reported_on_the_stage(
    session_maker, settings, run_limited
) -> None:
    limited = settings.model_copy(update={"artifact_max_files": 20})
    run_id, status = await run_limited(
        [stage("build", ARTIFACTS, artifact_paths=["out/**"])],
        settings=limited,
    )
    assert status == "success"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "success" and len(row.warnings) == 1
    assert row.warnings[0].startswith("more than 20 files matched the artifact paths")
    log = await log_text(session_maker, row.id)
    assert f"forgeline: warning: {row.warnings[0]}" in log.splitlines()
    assert await artifact_rows(session_maker, run_id) == 20


async def test_artifacts_past_the_byte_limit_fail_the_stage_when_the_pipeline_says_so(
    session_maker, settings, run_limited
) -> None:
    limited = settings.model_copy(update={"artifact_max_bytes": 40})
    run_id, status = await run_limited(
        [stage("build", ARTIFACTS, artifact_paths=["out/**"])],
        settings=limited,
        on_artifact_limit="fail",
    )
    assert status == "failed"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "failed" and row.exit_code == 0
    assert row.error is not None and row.error.startswith("artifact limit exceeded: 20 artifact")
    assert "FORGELINE_ARTIFACT_MAX_BYTES" in row.warnings[0]
    assert await artifact_rows(session_maker, run_id) == 10  # 10 files of 4 bytes


# ------------------------------------------------------------------- the pipeline's limits


def _stage_row(**extra: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": "build",
        "stage_type": "build",
        "position": 0,
        "commands": [{"run": "make"}],
        "timeout_seconds": 60,
        **extra,
    }


@pytest.mark.parametrize(
    "limits",
    [
        {"log_max_bytes": -5, "on_log_limit": "explode", "on_artifact_limit": 3},
        {"log_max_bytes": "1000000", "on_log_limit": None, "on_artifact_limit": ["fail"]},
        {"log_max_bytes": True, "on_log_limit": "TRUNCATE", "on_artifact_limit": "Fail"},
        {"log_max_bytes": 1e9},
        "not an object",
    ],
)
def test_hostile_pipeline_limits_fall_back_to_the_defaults(limits: Any) -> None:
    spec = stage_spec(_stage_row(), {"config": {"limits": limits}})
    assert (spec.log_max_bytes, spec.on_log_limit, spec.on_artifact_limit) == (
        None,
        "fail",
        "warn",
    )


def test_pipeline_limits_are_read_and_change_the_spec_hash() -> None:
    plain = stage_spec(_stage_row(), {"config": {}})
    limited = stage_spec(
        _stage_row(),
        {
            "config": {
                "limits": {
                    "log_max_bytes": 1_000_000,
                    "on_log_limit": "truncate",
                    "on_artifact_limit": "fail",
                }
            }
        },
    )
    assert (limited.log_max_bytes, limited.on_log_limit, limited.on_artifact_limit) == (
        1_000_000,
        "truncate",
        "fail",
    )
    assert limited.spec_hash != plain.spec_hash
    # A spec at the defaults hashes as it did before the limits (and later the verification
    # skip, caches, services and matrix legs) existed: reruns of older runs still reuse.
    assert (plain.skip, plain.cache, plain.services, plain.matrix_leg) == (None, None, [], None)
    before = plain.model_dump(
        mode="json",
        exclude={
            "spec_hash",
            "stage_id",
            "position",
            "log_max_bytes",
            "on_log_limit",
            "on_artifact_limit",
            "skip",
            "cache",
            "services",
            "matrix_leg",
        },
    )
    assert (
        plain.spec_hash == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    )
