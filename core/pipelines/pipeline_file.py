"""Pipeline as code: a `.forgeline.yml` at the root of the commit a run checked out is what that
run executes, validated first (the bounded YAML loader, then the pipeline schema). An invalid
file fails the run with the schema errors, in the run's error and in the log of a
`pipeline-file` stage, before any stage runs. The run records which source it executed.
"""

from __future__ import annotations

import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from core.pipelines.document import DocumentInvalid, PipelineDocument, parse_yaml
from core.pipelines.stored import document_config, stage_columns
from core.runs.plan import reusable_stages, spec_hash, stage_spec
from core.runs.stage_records import stage_execution_id, store_log_chunk
from core.runs.stage_runtime_plan import expand_legs
from forgeline.safe_parsing import MAX_DOCUMENT_BYTES
from workflows.runs_models import ReusableStage, StageSpec

PIPELINE_FILE = ".forgeline.yml"
FILE_STAGE = "pipeline-file"
# The type of the (non-retryable) error an invalid file fails the run's checkout with.
PIPELINE_FILE_ERROR = "PipelineFileInvalid"
SCHEMA_HINT = "the format's JSON Schema: /v1/schemas/pipeline.json"


@dataclass(frozen=True)
class RepositoryPipeline:
    stages: list[StageSpec]
    reusable: dict[str, ReusableStage]


class PipelineFileInvalid(Exception):
    """The commit's pipeline file cannot run: `message` for the run, `lines` for its log."""

    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines


def _read(workspace: Path) -> str | None:
    """The file's text, or None when the commit has none. Never follows a symlink (the checkout
    is hostile: it could point at the worker's own files) and never blocks on a FIFO."""
    path = workspace / PIPELINE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DocumentInvalid(
            [{"path": "/", "message": f"{PIPELINE_FILE} is not a regular file ({exc.strerror})"}]
        ) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise DocumentInvalid([{"path": "/", "message": f"{PIPELINE_FILE} is not a file"}])
        raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        message = f"larger than {MAX_DOCUMENT_BYTES} bytes"
        raise DocumentInvalid([{"path": "/", "message": message}])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentInvalid([{"path": "/", "message": "not UTF-8 text"}]) from None


_RUN = """
SELECT p.retry_policy, p.config, pr.config ->> 'root_directory', r.reuse_from_run_id,
       COALESCE((SELECT array_agg(e.id::text) FROM environments e
                 WHERE e.project_id = r.project_id), '{}'),
       r.pipeline_id
FROM pipeline_runs r
JOIN pipelines p ON p.id = r.pipeline_id
JOIN projects pr ON pr.id = r.project_id
WHERE r.id = $1
"""
_SOURCE = "UPDATE pipeline_runs SET pipeline_source = 'repository' WHERE id = $1"


def _foreign_environments(document: PipelineDocument, known: set[str]) -> list[dict[str, Any]]:
    return [
        {
            "path": f"/stages/{i}/when/deploy_environment_id",
            "message": "no such environment in this project",
        }
        for i, stage in enumerate(document.stages)
        if stage.when.deploy_environment_id and stage.when.deploy_environment_id not in known
    ]


def _specs(document: PipelineDocument, pipeline: dict[str, Any]) -> list[StageSpec]:
    specs = []
    for position, stage in enumerate(document.stages):
        columns = stage_columns(stage, position)
        row = {"id": None, "pipeline_id": pipeline.get("id"), "name": stage.name, **columns}
        spec = stage_spec(row, pipeline)
        # No stored stage row: its executions link to none.
        specs.append(spec.model_copy(update={"stage_id": None}))
    matrices = {s.name: s.matrix for s in document.stages if s.matrix is not None}
    return expand_legs(specs, matrices, spec_hash)


def invalid(exc: DocumentInvalid) -> PipelineFileInvalid:
    found = [f"{e['path']}: {e['message']}" for e in exc.errors]
    message = f"{PIPELINE_FILE} is not a valid pipeline: " + "; ".join(found[:10])
    lines = [
        f"{PIPELINE_FILE} in this commit is not a valid Forgeline pipeline; no stage ran.",
        *(f"  {line}" for line in found[:200]),
        f"See {SCHEMA_HINT}",
    ]
    return PipelineFileInvalid(message[:2000], lines)


async def load_repository_pipeline(
    conn: asyncpg.Connection, run_id: str, workspace: Path, commit_sha: str | None
) -> RepositoryPipeline | None:
    """The stages of the checked-out commit's pipeline file (None: it has none), the run marked
    as executing it. PipelineFileInvalid when the file cannot run."""
    try:
        text = _read(workspace)
        if text is None:
            return None
        document = parse_yaml(text)
    except DocumentInvalid as exc:
        raise invalid(exc) from None
    row = await conn.fetchrow(_RUN, uuid.UUID(run_id))
    if row is None:
        return None
    retry_policy, config, root_directory, reuse_from, environments, pipeline_id = row
    foreign = _foreign_environments(document, set(environments))
    if foreign:
        raise invalid(DocumentInvalid(foreign))
    pipeline = {
        "retry_policy": retry_policy,
        "config": document_config(config, document),
        "root_directory": root_directory,
        "id": str(pipeline_id),
    }
    specs = _specs(document, pipeline)
    reusable = await reusable_stages(conn, reuse_from, commit_sha, specs)
    await conn.execute(_SOURCE, uuid.UUID(run_id))
    return RepositoryPipeline(stages=specs, reusable=reusable)


_FAILED_FILE_STAGE = """
WITH source AS (
    UPDATE pipeline_runs SET pipeline_source = 'repository' WHERE id = $1 RETURNING 1
)
INSERT INTO stage_executions (id, run_id, stage_name, attempt, status, error, failure_class,
                              failure_cause, started_at, finished_at, duration_ms,
                              log_size_bytes, log_line_count)
VALUES ($2, $1, $3, 1, 'failed', $4, 'config', $4, now(), now(), 0, $5, $6)
ON CONFLICT (run_id, stage_name, attempt) DO NOTHING
"""


async def record_invalid_file(
    conn: asyncpg.Connection, run_id: str, problem: PipelineFileInvalid
) -> None:
    """The `pipeline-file` stage, failed, its log the schema errors (idempotent)."""
    execution_id = stage_execution_id(run_id, FILE_STAGE, 1)
    content = "\n".join(problem.lines)
    async with conn.transaction():
        await conn.execute(
            _FAILED_FILE_STAGE,
            uuid.UUID(run_id),
            execution_id,
            FILE_STAGE,
            problem.message,
            len(content.encode()),
            len(problem.lines),
        )
        await store_log_chunk(
            conn,
            execution_id=execution_id,
            seq=0,
            first_line=0,
            line_count=len(problem.lines),
            content=content,
        )
